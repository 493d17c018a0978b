"""Shared pieces of the benchmark suite.

- machine facts for every result (nproc, CPU model, kernel, tool versions);
- /proc readers (CPU seconds, RSS, peak RSS) and a sampler thread that
  records the receipts count and each process's CPU and RSS over time;
- the workload: a population of guardians with one device each, written
  straight into the registry in the layout of docs/redis.md, and
  message.new events preloaded into the stream;
- the stack: redis-server, varsel-sandbox (usually in --bench mode) and
  varseld, started through the integration harness on 127.0.0.1 with free
  ports and stopped by PID;
- one "varsel round": preload, start varseld, wait until every delivery has
  a receipt, read CPU and peak RSS, stop;
- statistics and the JSON result file.

Progress goes to stderr, the summary a bench prints goes to stdout.
"""

import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
sys.path.insert(0, str(REPO / "tests" / "integration"))
import harness as h  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
TENANT = h.TENANT
APP = h.APP


class BenchError(RuntimeError):
    """A benchmark could not produce a valid figure."""


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# The machine

def _cmd_first_line(args):
    try:
        p = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=20)
        out = p.stdout.decode(errors="replace").strip().splitlines()
        return out[0] if out else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine_info():
    """Where a figure came from: enough to tell two machines apart."""
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    load = None
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "mem_total_mb": mem_kb // 1024 if mem_kb else None,
        "loadavg_at_start": load,
        "os": _cmd_first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "redis": _cmd_first_line(["redis-server", "--version"]),
        "h2load": _cmd_first_line(["h2load", "--version"]),
        "node": _cmd_first_line(["node", "--version"]),
        "valgrind": _cmd_first_line(["valgrind", "--version"]),
        "varsel_commit": _cmd_first_line(["git", "-C", str(REPO), "describe", "--always",
                                          "--dirty"]),
    }


# --------------------------------------------------------------------------
# /proc

def proc_cpu_s(pid):
    """User + system CPU seconds of |pid| so far (None once it is gone)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces: fields start after the last ')'
    f = data[data.rindex(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK


def proc_cpu_split(pid):
    """(user s, system s) of |pid| so far (None once it is gone)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = data[data.rindex(")") + 2:].split()
    return int(f[11]) / CLK_TCK, int(f[12]) / CLK_TCK


def proc_runq_wait_s(pid):
    """Seconds |pid| has spent runnable but waiting for a CPU (schedstat)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def proc_mem_kb(pid):
    """{'VmRSS': kB, 'VmHWM': kB} of |pid| ({} once it is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


class Sampler(threading.Thread):
    """Every |interval| s: XLEN of a stream and CPU/RSS of some processes.

    samples: list of {"t": wall s, "n": stream length, "cpu": {name: s},
    "rss": {name: kB}}. Runs until stop(); at most |limit_s| seconds.
    """

    def __init__(self, redis_port, pids, key=h.RECEIPTS, interval=0.1, limit_s=3600):
        super().__init__(daemon=True)
        self.port, self.pids, self.key = redis_port, dict(pids), key
        self.interval, self.limit_s = interval, limit_s
        self.samples = []
        self._halt = threading.Event()
        self.error = None

    def run(self):
        try:
            r = h.Redis("127.0.0.1", self.port, timeout=30)
        except OSError as e:
            self.error = str(e)
            return
        t_end = time.monotonic() + self.limit_s
        try:
            while not self._halt.is_set() and time.monotonic() < t_end:
                t = time.time()
                try:
                    n = r.xlen(self.key) if self.key else None
                except (OSError, h.RedisError, ConnectionError):
                    n = None
                cpu, rss = {}, {}
                for name, pid in self.pids.items():
                    c = proc_cpu_s(pid)
                    if c is not None:
                        cpu[name] = c
                        rss[name] = proc_mem_kb(pid).get("VmRSS")
                self.samples.append({"t": t, "n": n, "cpu": cpu, "rss": rss})
                self._halt.wait(self.interval)
        finally:
            r.close()

    def stop(self):
        self._halt.set()
        self.join(timeout=10)
        return self.samples


def cpu_percent_series(samples, name, t0, window=0.25):
    """[(t - t0, % of one core)] for process |name|, over |window| s steps."""
    out, last = [], None
    for s in samples:
        c = s["cpu"].get(name)
        if c is None:
            continue
        if last is None:
            last = (s["t"], c)
            continue
        dt = s["t"] - last[0]
        if dt >= window:
            out.append((round(s["t"] - t0, 3), round(100.0 * (c - last[1]) / dt, 1)))
            last = (s["t"], c)
    return out


def rss_series(samples, name, t0):
    """[(t - t0, RSS MiB)] for process |name|."""
    return [(round(s["t"] - t0, 3), round(s["rss"][name] / 1024.0, 1))
            for s in samples if s["rss"].get(name)]


def count_rate_series(samples, t0, window=0.5):
    """[(t - t0, items/s)] from the sampled stream length."""
    out, last = [], None
    for s in samples:
        if s["n"] is None:
            continue
        if last is None:
            last = (s["t"], s["n"])
            continue
        dt = s["t"] - last[0]
        if dt >= window:
            out.append((round(s["t"] - t0, 3), round((s["n"] - last[1]) / dt, 1)))
            last = (s["t"], s["n"])
    return out


def rate_series_from_times(times_ms, t0_ms, bin_ms=250):
    """[(bin centre s from t0, items/s)] from event times in ms."""
    if not times_ms:
        return []
    lo = int(t0_ms)
    hi = max(times_ms)
    nbins = max(1, (hi - lo) // bin_ms + 1)
    counts = [0] * int(nbins)
    for t in times_ms:
        i = (t - lo) // bin_ms
        if 0 <= i < nbins:
            counts[int(i)] += 1
    return [(round((i + 0.5) * bin_ms / 1000.0, 3), round(c * 1000.0 / bin_ms, 1))
            for i, c in enumerate(counts)]


# --------------------------------------------------------------------------
# Statistics

def percentile(sorted_vals, p):
    """Nearest-rank percentile of an already sorted list (None if empty)."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def spread(values):
    """median, min, max, mean, stdev and relative spread of a few figures."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    med = statistics.median(vals)
    out = {"n": len(vals), "median": round(med, 4), "min": round(min(vals), 4),
           "max": round(max(vals), 4), "mean": round(statistics.fmean(vals), 4),
           "values": [round(v, 4) for v in vals]}
    out["stdev"] = round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0
    out["spread_pct"] = round(100.0 * (max(vals) - min(vals)) / med, 1) if med else None
    return out


def fmt_spread(s, unit="", digits=0, scale=1.0):
    """'12,345/s (min 11,000 – max 13,000, ±5.1 %)' style text."""
    if not s:
        return "n/a"
    f = f"{{:,.{digits}f}}"
    med, lo, hi = (f.format(s[k] * scale) for k in ("median", "min", "max"))
    if s["n"] == 1:
        return f"{med}{unit}"
    return f"{med}{unit} (min {lo}, max {hi}; n={s['n']})"


# --------------------------------------------------------------------------
# Results

def timestamp():
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def result_path(name, ts, ext="json"):
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS / f"{name}-{ts}.{ext}"


def save_result(name, ts, data):
    path = result_path(name, ts)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------
# Fast pipelining (the harness client encodes per argument in Python; this
# builds whole command buffers, which matters for 100,000+ commands)

def enc(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def pipeline_raw(r, cmds, chunk=2000):
    """Send encoded commands in chunks; return the replies; raise on error."""
    replies = []
    for i in range(0, len(cmds), chunk):
        part = cmds[i:i + chunk]
        r.sock.sendall(b"".join(part))
        for _ in part:
            rep = r._read()
            if isinstance(rep, h.RedisError):
                raise rep
            replies.append(rep)
    return replies


# Receipts are read server-side by a Lua script that walks the stream in
# pages and returns one string with one line per receipt, so a million
# receipts cost one round trip and a str.split instead of 13 million RESP
# items parsed in Python.
_DUMP_LUA = """
local out, start = {}, '-'
while true do
  local page = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 5000)
  if #page == 0 then break end
  for _, e in ipairs(page) do
    local f, m = e[2], {}
    for i = 1, #f, 2 do m[f[i]] = f[i + 1] end
    local row = {e[1]}
    for j = 1, #ARGV do row[#row + 1] = m[ARGV[j]] or '' end
    out[#out + 1] = table.concat(row, ',')
  end
  start = '(' .. page[#page][1]
end
return table.concat(out, '\\n')
"""


def dump_stream(r, key, fields):
    """[(entry id, field values...)] of every entry of |key|.

    Only comma-free fields may be asked for (ids, statuses, numbers, users).
    """
    raw = r.call("EVAL", _DUMP_LUA, 1, key, *fields)
    if not raw:
        return []
    return [tuple(line.split(",")) for line in raw.split("\n")]


def id_ms(entry_id):
    return int(entry_id.split("-", 1)[0])


# --------------------------------------------------------------------------
# Workload: population and events

SENDERS = ["Lærer Hansen", "Kontaktlærer Nilsen", "Rektor Berg", "SFO Bakken"]
SCHOOLS = ["Bakken skole", "Bjølsen skole", "Fjell ungdomsskole"]
SUBJECTS = ["Foreldremøte", "Tur til Frognerseteren", "Husk gymtøy", "Skolefoto neste uke"]
LONG_TEXT = ("Hei alle sammen! Her kommer informasjon om turen til Frognerseteren neste "
             "torsdag. Vi møtes ved skolen klokka 08.15 og tar T-banen opp. Husk varme klær, "
             "gode sko, matpakke og drikke. Elevene bør ha med sitteunderlag og ekstra votter. "
             "Vi er tilbake på skolen rundt klokka 14.00. ")


LONG_SCHOOL = ("Bakken skole, avdeling for tilrettelagt opplæring og skolefritidsordning, "
               "Nordre Aker bydel, Oslo kommune; ")


def long_school(nbytes=800):
    """A school name of about |nbytes| bytes (stretches the title)."""
    s = ""
    while len(s.encode()) < nbytes:
        s += LONG_SCHOOL
    return s.encode()[:nbytes].decode("utf-8", "ignore").strip(" ;,")


def long_subject(nbytes=2900):
    """A Norwegian subject of about |nbytes| UTF-8 bytes (æøå take two)."""
    s = ""
    while len(s.encode()) < nbytes:
        s += LONG_TEXT
    b = s.encode()[:nbytes]
    return b.decode("utf-8", "ignore").strip()


def fcm_token():
    """A printable token shaped like an FCM registration token."""
    return secrets.token_urlsafe(16) + ":APA91b" + secrets.token_urlsafe(105)


class Population:
    """|n| guardians, each with one device ("phone") in the registry.

    A share |android_share| of them are Android (FCM) devices, spread evenly.
    Every device belongs to app demo, locale nb, environment production.
    """

    def __init__(self, n, android_share=0.0, prefix="g"):
        self.n = n
        self.users = [f"{prefix}{i:07d}" for i in range(n)]
        self.platform = []
        acc = 0.0
        for _ in range(n):
            acc += android_share
            if acc >= 1.0 - 1e-9:
                acc -= 1.0
                self.platform.append("android")
            else:
                self.platform.append("ios")
        self.tokens = [fcm_token() if p == "android" else secrets.token_hex(32)
                       for p in self.platform]

    @property
    def n_android(self):
        return sum(1 for p in self.platform if p == "android")

    def seed(self, r, updated_at=None):
        """Write every device and token owner (docs/redis.md layout)."""
        at = updated_at or h.now_ms()
        cmds = []
        for u, p, tok in zip(self.users, self.platform, self.tokens):
            dev = json.dumps({"platform": p, "token": tok, "app": APP, "locale": "nb",
                              "environment": "production", "updated_at": at},
                             separators=(",", ":"))
            owner = json.dumps({"tenant": TENANT, "user": u, "device": "phone"},
                               separators=(",", ":"))
            cmds.append(enc("HSET", h.devices_key(TENANT, u), "phone", dev))
            cmds.append(enc("SET", h.token_key(APP, tok), owner))
        pipeline_raw(r, cmds)


def message_event(i, recipients, payload="short", ttl_s=None):
    """One message.new event (a dict) numbered |i|."""
    ev = {"v": 1, "id": f"bench-{i}", "type": "message.new", "tenant": TENANT,
          "occurred_at": h.rfc3339(), "recipients": recipients,
          "thread": f"thread-{i % 997}", "sender_name": SENDERS[i % len(SENDERS)],
          "school_name": SCHOOLS[i % len(SCHOOLS)]}
    ev["subject"] = long_subject() if payload == "long" else SUBJECTS[i % len(SUBJECTS)]
    if payload == "long":
        ev["school_name"] = long_school()
    if ttl_s is not None:
        ev["ttl_s"] = ttl_s
    return ev


class Workload:
    """|events| message.new events × |recipients| guardians × 1 device.

    Recipients are taken in order from the population and wrap around, so
    a population smaller than events × recipients is reused (a delivery is
    still one per (event, user, device)).
    """

    def __init__(self, events, recipients, android_share=0.0, payload="short",
                 population=None):
        self.events, self.recipients = events, recipients
        self.payload = payload
        self.pop = population or Population(min(events * recipients, 2_000_000),
                                            android_share)
        self.total = events * recipients
        self._raw = None

    def raw_events(self):
        if self._raw is None:
            n, out = self.pop.n, []
            long_subj = long_subject() if self.payload == "long" else None
            school = long_school() if self.payload == "long" else None
            for e in range(self.events):
                base = e * self.recipients
                rc = [self.pop.users[(base + k) % n] for k in range(self.recipients)]
                ev = message_event(e, rc, "short")
                if long_subj:
                    # body cut at 2048 bytes by the templates + an 800-byte
                    # title: about 3 KB of aps JSON
                    ev["subject"], ev["school_name"] = long_subj, school
                out.append(json.dumps(ev, ensure_ascii=False, separators=(",", ":")))
            self._raw = out
        return self._raw

    def expected_by_platform(self):
        n = self.pop.n
        counts = {"ios": 0, "android": 0}
        for e in range(self.events):
            base = e * self.recipients
            for k in range(self.recipients):
                counts[self.pop.platform[(base + k) % n]] += 1
        return counts

    def load(self, r):
        """Seed the registry, then preload every event into the stream."""
        self.pop.seed(r)
        cmds = [enc("XADD", h.STREAM, "*", "event", raw) for raw in self.raw_events()]
        return pipeline_raw(r, cmds, chunk=200)

    def describe(self):
        return {"events": self.events, "recipients_per_event": self.recipients,
                "devices_per_recipient": 1, "notifications": self.total,
                "population": self.pop.n, "android_devices": self.pop.n_android,
                "payload": self.payload}


# --------------------------------------------------------------------------
# Processes: sandbox in bench mode, the stack, extra commands

class BenchSandbox:
    """varsel-sandbox for benchmarks (standalone: the harness's Sandbox is
    for tests and changes with them; this one offers what Daemon reads).

    bench=True: --bench (no provider-token checks, 1000 streams from the
    start, no record unless record=True). fcm=True also serves FCM and the
    OAuth token endpoint on one port (a throwaway service account is made).
    """

    def __init__(self, binary, dir, bench=True, record=False, fcm=False, extra=None,
                 key_id=h.KEY_ID, team_id=h.TEAM_ID):
        self.binary = str(binary)
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bench, self.record, self.fcm = bench, record, fcm
        self.extra = list(extra or [])
        self.key_id, self.team_id = key_id, team_id
        self.proc = None
        self.ports = {}
        self.log = self.dir / "sandbox.log"
        self.record_path = self.dir / "record.jsonl"
        self.port_file = self.dir / "ports.json"
        self.service_account = self.dir / "service-account.json"
        self.fcm_port = None

    ca = property(lambda self: self.dir / "ca.pem")
    p8 = property(lambda self: self.dir / f"{self.key_id}.p8")
    pub = property(lambda self: self.dir / f"{self.key_id}.pub.pem")
    apns_url = property(lambda self: f"https://127.0.0.1:{self.ports['apns']}")
    apns_sandbox_url = property(lambda self: f"https://127.0.0.1:{self.ports['apns_sandbox']}")
    fcm_url = property(lambda self: f"https://127.0.0.1:{self.fcm_port}")
    fcm_token_url = property(lambda self: f"https://127.0.0.1:{self.fcm_port}/token")

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def _tool(self, args):
        p = subprocess.run([self.binary] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode(errors="replace")
        if p.returncode != 0:
            raise BenchError(f"varsel-sandbox {' '.join(map(str, args))} exited "
                             f"{p.returncode}: {out[-800:]}")
        return out

    def supports_fcm(self):
        out = subprocess.run([self.binary, "--help"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=20).stdout.decode(errors="replace")
        return "--fcm-listen" in out and "gen-service-account" in out

    def jwt(self):
        """A provider token from the sandbox's own signer (as varseld makes)."""
        return self._tool(["sign-apns-jwt", "--key", self.p8, "--key-id", self.key_id,
                           "--team", self.team_id]).strip()

    def start(self, timeout=20.0):
        if not (self.dir / "server.pem").exists():
            self._tool(["gen-certs", self.dir])
        if not self.p8.exists():
            self._tool(["gen-apns-key", "--out-dir", self.dir, "--key-id", self.key_id])
        if self.port_file.exists():
            self.port_file.unlink()
        args = [self.binary, "--cert", str(self.dir / "server.pem"),
                "--key", str(self.dir / "server.key"),
                "--apns-listen", "127.0.0.1:0", "--apns-sandbox-listen", "127.0.0.1:0",
                "--apns-key", f"{self.key_id}:{self.team_id}:{self.pub}",
                "--port-file", str(self.port_file), "--log-level", "warn"]
        if self.bench:
            args.append("--bench")
        if self.record or not self.bench:
            args += ["--record", str(self.record_path)]
        if self.fcm:
            if not self.supports_fcm():
                raise BenchError("this varsel-sandbox has no --fcm-listen: build the FCM "
                                 "sandbox first, or use --android-share 0")
            self.fcm_port = h.free_port()
            if not self.service_account.exists():
                self._tool(["gen-service-account", "--out", self.service_account,
                            "--project", "varsel-bench",
                            "--token-uri", f"https://127.0.0.1:{self.fcm_port}/token"])
            args += ["--fcm-listen", f"127.0.0.1:{self.fcm_port}",
                     "--fcm-service-account", str(self.service_account)]
        args += self.extra
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=subprocess.STDOUT)
        logf.close()
        h._register(self.proc, "varsel-sandbox (bench)")

        def ready():
            if self.proc.poll() is not None:
                raise BenchError(f"varsel-sandbox exited {self.proc.returncode} at start: "
                                 f"{h.tail(self.log, 15)}")
            try:
                d = json.loads(self.port_file.read_text())
            except (OSError, ValueError):
                return None
            return d if d.get("apns") and d.get("apns_sandbox") else None

        self.ports = h.wait_for(ready, timeout, what="the sandbox's port file")
        if self.fcm and self.ports.get("fcm"):
            self.fcm_port = self.ports["fcm"]
        return self

    def stop(self, timeout=10.0):
        if self.proc is None:
            return None
        return h.stop_process(self.proc, timeout=timeout)[0]

    def logs(self):
        return [("sandbox", self.log)]

    def records(self):
        """Answered requests from the record (complete lines, no summary)."""
        out = []
        try:
            data = self.record_path.read_bytes()
        except OSError:
            return out
        for line in data.split(b"\n")[:-1]:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "summary" not in rec:
                out.append(rec)
        return out

    def accepted(self):
        return [r for r in self.records() if r.get("status") == 200]


_ADMIN_KEY = {}


def varseld_has_admin(binary):
    """Whether this varseld knows [admin] listen (so benches can turn it off)."""
    b = str(binary)
    if b not in _ADMIN_KEY:
        p = subprocess.run([b, "--config-keys"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
        out = p.stdout.decode(errors="replace")
        _ADMIN_KEY[b] = any(line.split("\t")[:2] == ["admin", "listen"]
                            for line in out.splitlines())
    return _ADMIN_KEY[b]


def parse_sets(sets):
    """['section.key=value', ...] → {section: {key: value}} ("app.demo.x" ok)."""
    out = {}
    for s in sets or []:
        if "=" not in s or "." not in s.split("=", 1)[0]:
            raise BenchError(f"--set wants SECTION.KEY=VALUE, got {s!r}")
        k, v = s.split("=", 1)
        sec, key = k.rsplit(".", 1)
        if sec.startswith("app."):
            sec = "app " + sec[4:]
        out.setdefault(sec, {})[key] = v
    return out


class Stack:
    """redis-server + varsel-sandbox (+ varseld rounds) in one temp dir."""

    def __init__(self, build, bench=True, record=False, fcm=False, sandbox_extra=None,
                 keep=False):
        self.build = Path(build).resolve()
        for b in ("varseld", "varsel-sandbox"):
            if not (self.build / b).exists():
                raise BenchError(f"{self.build / b} is not built (make -j2)")
        self.tmp = Path(tempfile.mkdtemp(prefix="varsel-bench-"))
        self.keep = keep
        self.redis = h.RedisServer(self.tmp / "redis")
        self.sandbox = BenchSandbox(self.build / "varsel-sandbox", self.tmp / "sandbox",
                                    bench=bench, record=record, fcm=fcm,
                                    extra=sandbox_extra)
        self.fcm = fcm
        self.client = None
        self.rounds = 0

    def start(self):
        self.redis.start()
        self.sandbox.start()
        self.client = self.redis.client(timeout=300)
        return self

    def reset(self):
        """Empty Redis between rounds (events, registry, receipts, status)."""
        self.client.call("FLUSHALL")

    def daemon(self, connections=2, overrides=None, binary=None, log_level="warn",
               name=None):
        self.rounds += 1
        ov = {"redis": {"claim_idle_ms": None, "block_ms": None},
              f"app {APP}": {"apns_max_connections": str(connections)}}
        if varseld_has_admin(self.build / "varseld"):
            ov["admin"] = {"listen": "off"}
        if self.fcm:
            sb = self.sandbox
            ov[f"app {APP}"].update({
                "fcm_service_account_file": str(sb.service_account),
                "fcm_url": f"https://127.0.0.1:{sb.fcm_port}",
                "fcm_token_url": f"https://127.0.0.1:{sb.fcm_port}/token",
                "fcm_max_connections": str(connections)})
        for sec, kv in (overrides or {}).items():
            ov.setdefault(sec, {}).update(kv)
        return h.Daemon(binary or (self.build / "varseld"), self.tmp, self.redis.url,
                        sandbox=self.sandbox, consumer="bench-1",
                        name=name or f"varseld-{self.rounds}", overrides=ov,
                        log_level=log_level)

    def stop(self):
        if self.client:
            self.client.close()
        for p in (self.sandbox, self.redis):
            try:
                p.stop()
            except Exception as e:  # noqa: BLE001 - keep stopping
                log(f"stopping {type(p).__name__}: {e}")
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            log(f"kept {self.tmp}")


def run_tool(args, timeout, env=None, cwd=None):
    """Run a command (registered with the harness so it is stopped on exit).

    Returns (exit code, stdout text, rusage) with rusage from wait4: CPU
    seconds and peak RSS of the command itself.
    """
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=cwd)
    h._register(proc, os.path.basename(str(args[0])))
    chunks = []

    def reader():
        for chunk in iter(lambda: proc.stdout.read(65536), b""):
            chunks.append(chunk)
    th = threading.Thread(target=reader, daemon=True)
    th.start()
    deadline = time.monotonic() + timeout
    ru = None
    while True:
        pid, status, ru_ = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            ru = ru_
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            h.stop_process(proc, timeout=5)
            th.join(5)
            raise BenchError(f"{args[0]} did not finish within {timeout:.0f}s")
        time.sleep(0.01)
    th.join(10)
    h._unregister(proc)
    rus = {"cpu_user_s": round(ru.ru_utime, 3), "cpu_sys_s": round(ru.ru_stime, 3),
           "cpu_s": round(ru.ru_utime + ru.ru_stime, 3), "max_rss_kb": ru.ru_maxrss}
    return proc.returncode, b"".join(chunks).decode(errors="replace"), rus


# --------------------------------------------------------------------------
# One varsel round

def run_varsel(stack, workload, connections=2, overrides=None, binary=None,
               timeout=600, sample_interval=0.1, receipt_fields=("status", "at"),
               preloaded=False, label=None, wrapped=False):
    """Preload |workload|, start varseld, wait for every receipt, stop.

    Measures from varseld's start (wall clock) to the last receipt's `at`:
    the end-to-end rate (stream → provider → receipt, start-up included),
    plus the steady rate between the 10th and 90th percentile receipt, CPU
    seconds of varseld (from /proc, at the moment the last receipt shows)
    and of redis-server and the sandbox over the same span, and varseld's
    peak RSS (VmHWM). wrapped=True: |binary| is a wrapper that forks varseld
    (perf record): CPU and RSS are read from its child.
    """
    r = stack.client
    if not preloaded:
        stack.reset()
        t_load = time.monotonic()
        workload.load(r)
        load_s = time.monotonic() - t_load
    else:
        load_s = None
    total = workload.total
    d = stack.daemon(connections=connections, overrides=overrides, binary=binary)
    other = {"redis": stack.redis.proc.pid, "sandbox": stack.sandbox.pid}
    cpu0 = {k: proc_cpu_s(p) for k, p in other.items()}
    wait0 = {k: proc_runq_wait_s(p) for k, p in other.items()}
    t0 = time.time()
    d.start(wait_ready=False)
    vpid = d.proc.pid
    if wrapped:
        vpid = h.wait_for(lambda: _child_of(d.proc.pid), 10, interval=0.005,
                          what="the wrapped varseld")
    pids = dict(other, varseld=vpid)
    sampler = Sampler(stack.redis.port, pids, interval=sample_interval,
                      limit_s=timeout + 30)
    sampler.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            n = r.xlen(h.RECEIPTS)
            if n >= total:
                break
            d.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"only {n} of {total} receipts after {timeout}s "
                                 f"({label or 'varsel'}); log: {d.log}")
            time.sleep(0.02)
        t_seen = time.time()
        split = proc_cpu_split(vpid) or (None, None)
        cpu_varseld = sum(split) if split[0] is not None else None
        mem = proc_mem_kb(vpid)
        cpu1 = {k: proc_cpu_s(p) for k, p in other.items()}
        wait1 = {k: proc_runq_wait_s(p) for k, p in other.items()}
        wait_v = proc_runq_wait_s(vpid)
    finally:
        samples = sampler.stop()
    rc = d.stop(timeout=60)
    rows = dump_stream(r, h.RECEIPTS, list(receipt_fields))
    fi = {f: i + 1 for i, f in enumerate(receipt_fields)}
    statuses = {}
    for row in rows:
        st = row[fi["status"]] if "status" in fi else "?"
        statuses[st] = statuses.get(st, 0) + 1
    at = sorted(int(row[fi["at"]]) for row in rows if row[fi["at"]])
    t0_ms = t0 * 1000.0
    wall_s = (at[-1] - t0_ms) / 1000.0 if at else t_seen - t0
    i10, i90 = int(len(at) * 0.1), max(int(len(at) * 0.9) - 1, 0)
    steady = ((i90 - i10) / ((at[i90] - at[i10]) / 1000.0)
              if at and at[i90] > at[i10] else None)
    res = {
        "label": label,
        "notifications": total, "receipts": len(rows), "statuses": statuses,
        "connections": connections,
        "wall_s": round(wall_s, 3),
        "rate_per_s": round(total / wall_s, 1) if wall_s > 0 else None,
        "steady_rate_per_s": round(steady, 1) if steady else None,
        "first_receipt_s": round((at[0] - t0_ms) / 1000.0, 3) if at else None,
        "varseld_cpu_s": round(cpu_varseld, 3) if cpu_varseld is not None else None,
        "varseld_cpu_user_s": split[0], "varseld_cpu_sys_s": split[1],
        "varseld_cpu_us_per_notification": (round(cpu_varseld * 1e6 / total, 2)
                                            if cpu_varseld else None),
        "varseld_peak_rss_mb": round(mem.get("VmHWM", 0) / 1024.0, 1),
        # time spent runnable but without a CPU: high means the machine was
        # short of cores (other processes), not that varseld had no work
        "varseld_runq_wait_s": round(wait_v, 3) if wait_v is not None else None,
        "redis_runq_wait_s": _delta(wait1.get("redis"), wait0.get("redis")),
        "sandbox_runq_wait_s": _delta(wait1.get("sandbox"), wait0.get("sandbox")),
        "redis_cpu_s": _delta(cpu1.get("redis"), cpu0.get("redis")),
        "sandbox_cpu_s": _delta(cpu1.get("sandbox"), cpu0.get("sandbox")),
        "varseld_exit": rc,
        "load_s": round(load_s, 3) if load_s is not None else None,
        "timeline": {
            "receipts_per_s": rate_series_from_times(at, t0_ms, bin_ms=250),
            "varseld_cpu_pct": cpu_percent_series(samples, "varseld", t0),
            "redis_cpu_pct": cpu_percent_series(samples, "redis", t0),
            "sandbox_cpu_pct": cpu_percent_series(samples, "sandbox", t0),
            "varseld_rss_mb": rss_series(samples, "varseld", t0),
        },
    }
    res["_rows"] = rows  # for the caller; dropped before saving
    bad = total - statuses.get("sent", 0)
    if bad:
        log(f"warning: {bad} of {total} deliveries not 'sent': {statuses}")
    return res


def abba(rounds, a, b):
    """(round index, who) for |rounds| rounds in ABBA order (a b, b a, a b,
    ...), so that drift on a shared machine hits both sides alike."""
    for i in range(rounds):
        for who in ((a, b) if i % 2 == 0 else (b, a)):
            yield i, who


def varsel_round(stack, workload, connections, sets, i, rounds, bench):
    """One run_varsel round of a side-by-side bench, logged; rows dropped."""
    log(f"{bench} round {i + 1}/{rounds}: varsel, {workload.total:,} notifications")
    v = run_varsel(stack, workload, connections=connections, overrides=parse_sets(sets),
                   label=f"varsel {i + 1}")
    v.pop("_rows")
    log(f"  varsel {v['rate_per_s']:,.0f}/s end to end, "
        f"{v['steady_rate_per_s'] or 0:,.0f}/s steady")
    return v


def _child_of(pid):
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(kids[0]) if kids else None


def _delta(a, b):
    return round(a - b, 3) if a is not None and b is not None else None


def strip_private(obj):
    """Drop keys starting with '_' (raw rows) before a result is saved."""
    if isinstance(obj, dict):
        return {k: strip_private(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, list):
        return [strip_private(v) for v in obj]
    return obj


# --------------------------------------------------------------------------
# The request varseld really sends (for h2load and node-apn)

def capture_request(build, payload="short", tmp=None):
    """Deliver one event through a recording sandbox; return its request.

    {"path_prefix", "headers": [(name, value)...] as varseld sends them
    (authorization is a fresh token from the same key), "body": bytes,
    "record": the sandbox's record line}. The body is re-serialized from
    the record and checked against the recorded byte count.
    """
    st = Stack(build, bench=False, record=True)
    try:
        st.start()
        r = st.client
        wl = Workload(1, 1, payload=payload)
        wl.load(r)
        d = st.daemon(connections=1)
        d.start(wait_ready=False)
        rec = h.wait_for(lambda: st.sandbox.accepted(), 30, what="one accepted request")[0]
        d.stop()
        body = json.dumps(rec["payload"], ensure_ascii=False, separators=(",", ":")).encode()
        if len(body) != rec["payload_bytes"]:
            raise BenchError(f"re-serialized body is {len(body)} bytes, the record says "
                             f"{rec['payload_bytes']}")
        jwt = st.sandbox.jwt()
        hdrs = [("authorization", f"bearer {jwt}"), ("apns-topic", rec["topic"]),
                ("apns-push-type", rec["push_type"]),
                ("apns-priority", str(rec["priority"])),
                ("apns-expiration", str(rec["expiration"])),
                ("apns-id", rec["apns_id"])]
        if rec.get("collapse_id"):
            hdrs.append(("apns-collapse-id", rec["collapse_id"]))
        hdrs.append(("content-type", "application/json"))
        return {"headers": hdrs, "body": body, "record": rec,
                "key_id": st.sandbox.key_id, "team_id": st.sandbox.team_id}
    finally:
        st.stop()
