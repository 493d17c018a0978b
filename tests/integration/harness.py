"""Integration-test harness for varsel (Python 3 standard library only).

What it gives a test:
  - Redis: a small RESP2 client (one socket, synchronous) with helpers for
    the streams and hashes varseld writes.
  - RedisServer, Sentinel, Sandbox, Daemon: real processes (redis-server,
    redis-sentinel, varsel-sandbox, varseld) started on 127.0.0.1 with free
    ports in the test's temporary directory and stopped by PID (SIGTERM,
    then SIGKILL).
  - Ctx: one per test; owns the temp dir and every process started through
    it, stops them all in reverse order when the test ends (also on failure
    or timeout), and remembers their logs for the failure report.
  - Event builders for the v1 contract and readers for varseld's outputs
    (receipts, status hashes, dead letters, device registry).

Every process started here is also registered in a module-level table that
an atexit hook and SIGTERM/SIGINT handlers empty, so an interrupted run
leaves no server behind.
"""

import atexit
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

STREAM = "varsel:events"
GROUP = "varsel"
PREFIX = "varsel:"
RECEIPTS = PREFIX + "receipts"
DEAD = PREFIX + "dead"
TENANT = "oslo"
APP = "demo"
TOPIC = "no.example.skole"
TEAM_ID = "TEAM123456"
KEY_ID = "KEY1234567"
FCM_PROJECT = "varsel-demo"

FINAL_STATUSES = ("sent", "invalid_token", "failed", "expired")
SANITIZER_RE = re.compile(
    r"ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer)|runtime error: "
    r"|SUMMARY: (Address|Leak|Undefined)")


class TestFailure(AssertionError):
    """A check in a test did not hold."""


def check(cond, msg="check failed"):
    """Fail the test with |msg| unless |cond| holds."""
    if not cond:
        raise TestFailure(msg)


def check_eq(expected, actual, what="value"):
    if expected != actual:
        raise TestFailure(f"{what}: expected {expected!r}, got {actual!r}")


def long_test(fn):
    """Mark a test as part of the long tier (run.py --long)."""
    fn.long = True
    return fn


def timeout(seconds):
    """Give a test its own timeout instead of run.py's default."""
    def mark(fn):
        fn.timeout = seconds
        return fn
    return mark


def wait_for(pred, timeout=20.0, interval=0.05, what="condition"):
    """Poll |pred| until it returns a true value; return that value.

    Raises TestFailure naming |what| after |timeout| seconds. |what| may be
    a callable returning a description (evaluated only on failure), handy
    to show the last observed state.
    """
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            desc = what() if callable(what) else what
            raise TestFailure(f"timed out after {timeout:.0f}s waiting for {desc}")
        time.sleep(interval)


def now_ms():
    return int(time.time() * 1000)


def rfc3339(offset_s=0.0):
    """The current time plus |offset_s| as RFC 3339 UTC with milliseconds."""
    t = datetime.now(timezone.utc) + timedelta(seconds=offset_s)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def new_token():
    """A random 64-hex-digit APNs device token."""
    return secrets.token_hex(32)


def new_fcm_token():
    """A random FCM registration token of the usual shape:
    22 base64url characters, ':APA91b', 134 more (163 in all)."""
    import base64

    def b64(n):
        return base64.urlsafe_b64encode(secrets.token_bytes(n)).rstrip(b"=").decode()[:n * 4 // 3]
    return f"{b64(17)[:22]}:APA91b{b64(101)[:134]}"


def short(token):
    return token[:8] + "…" if token and len(token) > 8 else token


# --------------------------------------------------------------------------
# Process bookkeeping

_live = {}  # pid -> (Popen, description)


def _register(proc, desc):
    _live[proc.pid] = (proc, desc)


def _unregister(proc):
    _live.pop(proc.pid, None)


def stop_process(proc, timeout=10.0, sig=signal.SIGTERM):
    """Send |sig| to |proc| (by PID), wait up to |timeout| s, then SIGKILL.

    Returns (returncode, killed) where killed says SIGKILL was needed.
    """
    killed = False
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            killed = True
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
    _unregister(proc)
    return proc.returncode, killed


def stop_all_processes():
    """Stop every process still registered, newest first."""
    for pid in sorted(_live, reverse=True):
        proc, _ = _live.get(pid, (None, None))
        if proc is not None:
            try:
                stop_process(proc, timeout=5)
            except Exception:  # noqa: BLE001 - best effort at exit
                pass


def _on_signal(signum, frame):
    stop_all_processes()
    sys.exit(128 + signum)


atexit.register(stop_all_processes)
for _s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    try:
        signal.signal(_s, _on_signal)
    except (ValueError, OSError):  # not the main thread
        pass


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, n=40):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            lines = f.read().decode("utf-8", "replace").splitlines()
        return lines[-n:]
    except OSError:
        return []


# --------------------------------------------------------------------------
# RESP2 client

class RedisError(Exception):
    """An error reply from Redis (-ERR ...)."""


class Redis:
    """A minimal synchronous RESP2 client.

    Commands are lists of str/bytes/int. Replies: simple strings and bulk
    strings come back as str (UTF-8, invalid bytes replaced) or bytes when
    decode=False, integers as int, arrays as lists, nil as None; an error
    reply raises RedisError.
    """

    def __init__(self, host="127.0.0.1", port=6379, timeout=10.0, decode=True):
        self.host, self.port, self.decode = host, port, decode
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rf = self.sock.makefile("rb")

    def close(self):
        try:
            self.rf.close()
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, bytes):
                b = a
            elif isinstance(a, str):
                b = a.encode()
            elif isinstance(a, (int, float)):
                b = str(a).encode()
            else:
                raise TypeError(f"cannot send {type(a).__name__} to Redis")
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def _read(self):
        line = self.rf.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed by Redis")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode() if self.decode else rest
        if kind == b"-":
            return RedisError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.rf.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("short read from Redis")
            data = data[:-2]
            return data.decode("utf-8", "replace") if self.decode else data
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            items = [self._read() for _ in range(n)]
            for it in items:
                if isinstance(it, RedisError):
                    return it
            return items
        raise ConnectionError(f"bad RESP reply type {kind!r}")

    def call(self, *args):
        """Send one command and return its reply (RedisError raised)."""
        self.sock.sendall(self._encode(args))
        r = self._read()
        if isinstance(r, RedisError):
            raise r
        return r

    def pipeline(self, commands):
        """Send several commands at once; return their replies in order.

        Error replies are returned as RedisError objects, not raised.
        """
        if not commands:
            return []
        self.sock.sendall(b"".join(self._encode(c) for c in commands))
        return [self._read() for _ in commands]

    # ---- helpers
    def ping(self):
        return self.call("PING")

    def xadd(self, stream, fields, id="*"):
        args = ["XADD", stream, id]
        for k, v in fields.items():
            args += [k, v]
        return self.call(*args)

    @staticmethod
    def _entries(reply):
        out = []
        for eid, flat in reply or []:
            d = {}
            for i in range(0, len(flat or []), 2):
                d[flat[i]] = flat[i + 1]
            out.append((eid, d))
        return out

    def xrange(self, stream, start="-", end="+", count=None):
        """Entries as a list of (id, {field: value})."""
        args = ["XRANGE", stream, start, end]
        if count is not None:
            args += ["COUNT", count]
        return self._entries(self.call(*args))

    def xlen(self, stream):
        return self.call("XLEN", stream)

    def xpending(self, stream=STREAM, group=GROUP):
        """Summary form: {'count', 'min', 'max', 'consumers': {name: n}}.

        A missing stream or group counts as nothing pending.
        """
        try:
            r = self.call("XPENDING", stream, group)
        except RedisError as e:
            if "NOGROUP" in str(e):
                return {"count": 0, "min": None, "max": None, "consumers": {}}
            raise
        consumers = {c: int(n) for c, n in (r[3] or [])}
        return {"count": r[0], "min": r[1], "max": r[2], "consumers": consumers}

    def xpending_ids(self, stream=STREAM, group=GROUP, count=100000):
        try:
            r = self.call("XPENDING", stream, group, "-", "+", count)
        except RedisError as e:
            if "NOGROUP" in str(e):
                return []
            raise
        return [row[0] for row in r]

    def xinfo_groups(self, stream=STREAM):
        """[{name, consumers, pending, last-delivered-id, ...}], [] if none."""
        try:
            r = self.call("XINFO", "GROUPS", stream)
        except RedisError:
            return []
        return [dict(zip(g[0::2], g[1::2])) for g in r]

    def xinfo_consumers(self, stream=STREAM, group=GROUP):
        try:
            r = self.call("XINFO", "CONSUMERS", stream, group)
        except RedisError:
            return []
        return [dict(zip(c[0::2], c[1::2])) for c in r]

    def hgetall(self, key):
        flat = self.call("HGETALL", key) or []
        return dict(zip(flat[0::2], flat[1::2]))

    def hget(self, key, field):
        return self.call("HGET", key, field)

    def get(self, key):
        return self.call("GET", key)

    def exists(self, key):
        return self.call("EXISTS", key)

    def scan_keys(self, pattern):
        cursor, keys = "0", []
        while True:
            cursor, batch = self.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            keys += batch
            if cursor == "0":
                return sorted(set(keys))


# --------------------------------------------------------------------------
# Keys and readers for what varseld writes

def status_key(tenant, event_id):
    return f"{PREFIX}{{{tenant}}}:status:{event_id}"


def devices_key(tenant, user):
    return f"{PREFIX}{{{tenant}}}:devices:{user}"


def token_key(app, token):
    return f"{PREFIX}token:{app}:{token}"


def receipts(r):
    """Receipt entries as dicts (with '_id' = the stream entry id)."""
    out = []
    for eid, d in r.xrange(RECEIPTS):
        d = dict(d)
        d["_id"] = eid
        out.append(d)
    return out


def dead_letters(r):
    out = []
    for eid, d in r.xrange(DEAD):
        d = dict(d)
        d["_id"] = eid
        out.append(d)
    return out


def devices(r, tenant, user):
    """{device: parsed JSON} from the user's registry hash."""
    out = {}
    for dev, raw in r.hgetall(devices_key(tenant, user)).items():
        try:
            out[dev] = json.loads(raw)
        except ValueError:
            out[dev] = {"_raw": raw}
    return out


def token_owner(r, app, token):
    raw = r.get(token_key(app, token))
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"_raw": raw}


def status_of(r, tenant, event_id):
    return r.hgetall(status_key(tenant, event_id))


# --------------------------------------------------------------------------
# Events (v1 contract)

_seq = [0]


def new_event_id(kind="ev"):
    _seq[0] += 1
    return f"{kind}-{_seq[0]}-{uuid.uuid4().hex[:12]}"


def event(type_, tenant=TENANT, id=None, occurred_at=None, v=1, **fields):
    ev = {"v": v, "id": id or new_event_id(type_.split(".")[0]), "type": type_,
          "tenant": tenant, "occurred_at": occurred_at or rfc3339()}
    ev.update({k: val for k, val in fields.items() if val is not None})
    return ev


def device_register(user, device, token, locale="nb", environment="production",
                    app=APP, platform="ios", **kw):
    return event("device.register", user=user, device=device, platform=platform,
                 token=token, app=app, locale=locale, environment=environment, **kw)


def device_unregister(user, device, **kw):
    return event("device.unregister", user=user, device=device, **kw)


def message_new(recipients, thread, sender_name, school_name, subject=None, **kw):
    return event("message.new", recipients=recipients, thread=thread,
                 sender_name=sender_name, school_name=school_name,
                 subject=subject, **kw)


def absence_reported(recipients, student, student_name, reported_by,
                     date="2026-11-30", kind="day", **kw):
    return event("absence.reported", recipients=recipients, student=student,
                 student_name=student_name, date=date, kind=kind,
                 reported_by=reported_by, **kw)


def absence_alert(recipients, student, student_name, date="2026-11-30", **kw):
    return event("absence.alert", recipients=recipients, student=student,
                 student_name=student_name, date=date, **kw)


def publish(r, ev, stream=STREAM):
    """XADD |stream| * event <json>; |ev| may be a dict or a raw string."""
    raw = ev if isinstance(ev, (str, bytes)) else json.dumps(ev, ensure_ascii=False)
    return r.xadd(stream, {"event": raw})


def publish_many(r, evs, stream=STREAM):
    cmds = []
    for ev in evs:
        raw = ev if isinstance(ev, (str, bytes)) else json.dumps(ev, ensure_ascii=False)
        cmds.append(["XADD", stream, "*", "event", raw])
    out = []
    for i in range(0, len(cmds), 500):
        for rep in r.pipeline(cmds[i:i + 500]):
            if isinstance(rep, RedisError):
                raise rep
            out.append(rep)
    return out


# --------------------------------------------------------------------------
# Processes

class RedisServer:
    """redis-server on 127.0.0.1:<free port> with its files in |dir|."""

    def __init__(self, dir, appendonly=False, extra=None, binary="redis-server"):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.extra = list(extra or [])
        self.binary = binary
        self.port = None
        self.proc = None
        self.log = self.dir / "redis.log"

    def start(self, port=None, timeout=10.0):
        for attempt in range(5):
            self.port = port or free_port()
            args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                    "--dir", str(self.dir), "--save", "",
                    "--appendonly", "yes" if self.appendonly else "no",
                    "--daemonize", "no", "--logfile", str(self.log),
                    "--protected-mode", "no"] + self.extra
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL,
                                         stderr=open(self.dir / "redis.stderr", "ab"))
            _register(self.proc, f"redis-server :{self.port}")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with self.client(timeout=1) as c:
                        if c.ping() == "PONG":
                            return self
                except (OSError, RedisError):
                    time.sleep(0.05)
            stop_process(self.proc, timeout=2)
            if port is not None:
                break
            # the port may have been taken in between: try another one
        raise TestFailure(f"redis-server did not start; log: {tail(self.log, 10)}")

    def client(self, timeout=10.0, decode=True):
        return Redis("127.0.0.1", self.port, timeout=timeout, decode=decode)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self, timeout=10.0):
        if self.proc is not None:
            return stop_process(self.proc, timeout=timeout)[0]
        return None

    def kill9(self):
        if self.proc is not None:
            return stop_process(self.proc, sig=signal.SIGKILL)[0]
        return None

    def logs(self):
        return [("redis", self.log)]


class Sentinel:
    """redis-sentinel on 127.0.0.1:<free port> watching one master, with
    its (rewritten) config and log in |dir|. Quick timings for tests: the
    master counts as down after |down_after_ms| without an answer."""

    def __init__(self, dir, master_port, name="mymaster", quorum=2, down_after_ms=1000,
                 failover_timeout_ms=4000, binary="redis-sentinel"):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.master_port = master_port
        self.name = name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.binary = binary
        self.port = None
        self.proc = None
        self.log = self.dir / "sentinel.log"
        self.conf = self.dir / "sentinel.conf"

    def start(self, timeout=10.0):
        check(shutil.which(self.binary) is not None,
              f"{self.binary} is not installed (Debian: apt-get install redis-sentinel)")
        for _ in range(5):
            self.port = free_port()
            # Sentinel rewrites its config file: a fresh one per start.
            self.conf.write_text("\n".join([
                f"port {self.port}", "bind 127.0.0.1", "daemonize no", "protected-mode no",
                f"dir {self.dir}", f"logfile {self.log}",
                f"sentinel monitor {self.name} 127.0.0.1 {self.master_port} {self.quorum}",
                f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}",
                f"sentinel failover-timeout {self.name} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {self.name} 2", ""]))
            self.proc = subprocess.Popen([self.binary, str(self.conf)], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL,
                                         stderr=open(self.dir / "sentinel.stderr", "ab"))
            _register(self.proc, f"redis-sentinel :{self.port}")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with self.client(timeout=1) as c:
                        if c.ping() == "PONG":
                            return self
                except (OSError, RedisError):
                    time.sleep(0.05)
            stop_process(self.proc, timeout=2)
        raise TestFailure(f"redis-sentinel did not start; log: {tail(self.log, 10)}")

    def client(self, timeout=10.0):
        return Redis("127.0.0.1", self.port, timeout=timeout)

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def master_addr(self):
        """(host, port) this Sentinel gives for the master, or None."""
        try:
            with self.client(timeout=2) as c:
                r = c.call("SENTINEL", "get-master-addr-by-name", self.name)
        except (OSError, RedisError, ConnectionError):
            return None
        return (r[0], int(r[1])) if r else None

    def known(self):
        """(other Sentinels, replicas not down) this one knows of."""
        with self.client(timeout=2) as c:
            others = c.call("SENTINEL", "SENTINELS", self.name)
            reps = c.call("SENTINEL", "REPLICAS", self.name)
        up = 0
        for rep in reps:
            d = dict(zip(rep[0::2], rep[1::2]))
            if "s_down" not in d.get("flags", "") and "disconnected" not in d.get("flags", ""):
                up += 1
        return len(others), up

    def stop(self, timeout=10.0):
        if self.proc is not None:
            return stop_process(self.proc, timeout=timeout)[0]
        return None

    def kill9(self):
        if self.proc is not None:
            return stop_process(self.proc, sig=signal.SIGKILL)[0]
        return None

    def logs(self):
        return [("sentinel", self.log)]


class Sandbox:
    """varsel-sandbox: the fake APNs (production + sandbox listeners) and,
    with fcm=True, the fake FCM HTTP v1 + OAuth token endpoint on one more
    listener (a service account is generated for it)."""

    def __init__(self, binary, dir, key_id=KEY_ID, team_id=TEAM_ID, extra=None,
                 fcm=False, fcm_project=FCM_PROJECT, oauth_expires_in=None):
        self.binary = str(binary)
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key_id, self.team_id = key_id, team_id
        self.extra = list(extra or [])
        self.fcm = fcm
        self.fcm_project = fcm_project
        self.oauth_expires_in = oauth_expires_in
        self.fcm_unregistered_path = self.dir / "fcm-unregistered.txt"
        self.fcm_sender_mismatch_path = self.dir / "fcm-sender-mismatch.txt"
        self.fcm_invalid_path = self.dir / "fcm-invalid-tokens.txt"
        self.proc = None
        self.ports = {}
        self.log = self.dir / "sandbox.log"
        self.record_path = self.dir / "record.jsonl"
        self.port_file = self.dir / "ports.json"
        self.unregistered_path = self.dir / "unregistered.txt"
        self.bad_path = self.dir / "bad.txt"
        self.returncode = None

    # files
    @property
    def ca(self):
        return self.dir / "ca.pem"

    @property
    def p8(self):
        return self.dir / f"{self.key_id}.p8"

    @property
    def pub(self):
        return self.dir / f"{self.key_id}.pub.pem"

    @property
    def service_account(self):
        """The generated Google service-account JSON (give it to varseld or
        firebase-admin); its public half is service_account + '.pub.pem'."""
        return self.dir / "service-account.json"

    def _run_tool(self, args):
        p = subprocess.run([self.binary] + args, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=60)
        if p.returncode != 0:
            raise TestFailure(f"{' '.join(map(str, [self.binary] + args))} exited "
                              f"{p.returncode}: {p.stdout.decode(errors='replace')[-800:]}")
        return p.stdout.decode(errors="replace")

    def gen_certs(self):
        if not (self.dir / "server.pem").exists():
            self._run_tool(["gen-certs", str(self.dir)])
        for f in ("ca.pem", "server.pem", "server.key"):
            check((self.dir / f).exists(), f"gen-certs wrote no {f}")

    def gen_apns_key(self):
        if not self.p8.exists():
            self._run_tool(["gen-apns-key", "--out-dir", str(self.dir),
                            "--key-id", self.key_id])
        check(self.p8.exists() and self.pub.exists(),
              f"gen-apns-key wrote no {self.p8.name} / {self.pub.name}")

    @staticmethod
    def _write_atomic(path, text):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    def set_unregistered(self, entries, wait=True):
        """Tokens answered 410 Unregistered: [token] or [(token, ts_ms)]."""
        lines = []
        for e in entries:
            lines.append(e if isinstance(e, str) else f"{e[0]} {e[1]}")
        self._write_atomic(self.unregistered_path, "".join(l + "\n" for l in lines))
        if wait and self.proc is not None:
            time.sleep(1.3)  # the sandbox re-checks its token files once a second

    def set_bad_tokens(self, tokens, wait=True):
        """Tokens answered 400 BadDeviceToken."""
        self._write_atomic(self.bad_path, "".join(t + "\n" for t in tokens))
        if wait and self.proc is not None:
            time.sleep(1.3)

    def gen_service_account(self):
        if not self.service_account.exists():
            self._run_tool(["gen-service-account", "--out", str(self.service_account),
                            "--project", self.fcm_project])
        pub = Path(str(self.service_account) + ".pub.pem")
        check(self.service_account.exists() and pub.exists(),
              f"gen-service-account wrote no {self.service_account.name} / {pub.name}")

    def _set_fcm_file(self, path, tokens, wait):
        self._write_atomic(path, "".join(t + "\n" for t in tokens))
        if wait and self.proc is not None:
            time.sleep(1.3)  # the sandbox re-checks its token files once a second

    def set_fcm_unregistered(self, tokens, wait=True):
        """FCM tokens answered 404 NOT_FOUND / UNREGISTERED."""
        self._set_fcm_file(self.fcm_unregistered_path, tokens, wait)

    def set_fcm_sender_mismatch(self, tokens, wait=True):
        """FCM tokens answered 403 PERMISSION_DENIED / SENDER_ID_MISMATCH."""
        self._set_fcm_file(self.fcm_sender_mismatch_path, tokens, wait)

    def set_fcm_invalid_tokens(self, tokens, wait=True):
        """FCM tokens answered 400 INVALID_ARGUMENT ("not a valid FCM
        registration token") although well-formed."""
        self._set_fcm_file(self.fcm_invalid_path, tokens, wait)

    def start(self, timeout=20.0):
        self.gen_certs()
        self.gen_apns_key()
        for p in (self.unregistered_path, self.bad_path):
            if not p.exists():
                p.write_text("")
        if self.port_file.exists():
            self.port_file.unlink()
        fcm_args = []
        if self.fcm:
            self.gen_service_account()
            for p in (self.fcm_unregistered_path, self.fcm_sender_mismatch_path,
                      self.fcm_invalid_path):
                if not p.exists():
                    p.write_text("")
            fcm_args = ["--fcm-listen", "127.0.0.1:0",
                        "--fcm-service-account", str(self.service_account),
                        "--fcm-unregistered", str(self.fcm_unregistered_path),
                        "--fcm-sender-mismatch", str(self.fcm_sender_mismatch_path),
                        "--fcm-invalid-tokens", str(self.fcm_invalid_path)]
            if self.oauth_expires_in is not None:
                fcm_args += ["--oauth-expires-in", str(self.oauth_expires_in)]
        args = [self.binary, "--cert", str(self.dir / "server.pem"),
                "--key", str(self.dir / "server.key"),
                "--apns-listen", "127.0.0.1:0",
                "--apns-sandbox-listen", "127.0.0.1:0",
                "--apns-key", f"{self.key_id}:{self.team_id}:{self.pub}",
                "--record", str(self.record_path),
                "--port-file", str(self.port_file),
                "--apns-unregistered", str(self.unregistered_path),
                "--apns-bad-tokens", str(self.bad_path)] + fcm_args + self.extra
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=subprocess.STDOUT)
        logf.close()
        _register(self.proc, "varsel-sandbox")

        def ready():
            if self.proc.poll() is not None:
                raise TestFailure(f"varsel-sandbox exited {self.proc.returncode} at "
                                  f"start: {tail(self.log, 15)}")
            try:
                d = json.loads(self.port_file.read_text())
            except (OSError, ValueError):
                return None
            ok = d.get("apns") and d.get("apns_sandbox") and (d.get("fcm") or not self.fcm)
            return d if ok else None

        self.ports = wait_for(ready, timeout, what="the sandbox's port file")
        return self

    @property
    def apns_url(self):
        return f"https://127.0.0.1:{self.ports['apns']}"

    @property
    def apns_sandbox_url(self):
        return f"https://127.0.0.1:{self.ports['apns_sandbox']}"

    @property
    def fcm_port(self):
        return self.ports["fcm"]

    @property
    def fcm_url(self):
        """FCM base URL; POST {fcm_url}/v1/projects/{fcm_project}/messages:send."""
        return f"https://127.0.0.1:{self.ports['fcm']}"

    @property
    def token_url(self):
        """The OAuth token endpoint (served on the FCM listener)."""
        return f"https://127.0.0.1:{self.ports['fcm']}/token"

    def stop(self, timeout=10.0):
        if self.proc is None:
            return None
        self.returncode, _ = stop_process(self.proc, timeout=timeout)
        return self.returncode

    def logs(self):
        return [("sandbox", self.log)]

    # the record
    def all_records(self):
        """Every complete JSON line of the record file (summary included)."""
        try:
            data = self.record_path.read_bytes()
        except OSError:
            return []
        out = []
        for line in data.split(b"\n")[:-1]:  # a last line without \n is partial
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def records(self):
        """Answered requests (the summary line left out)."""
        return [r for r in self.all_records() if "summary" not in r]

    def accepted(self, provider=None):
        """Answered 200; |provider| ("apns", "fcm", "oauth") filters."""
        return [r for r in self.records() if r.get("status") == 200
                and (provider is None or r.get("provider") == provider)]

    def fcm_records(self):
        return [r for r in self.records() if r.get("provider") == "fcm"]

    def oauth_records(self):
        return [r for r in self.records() if r.get("provider") == "oauth"]

    def summary(self):
        for r in reversed(self.all_records()):
            if "summary" in r:
                return r["summary"]
        return None

    def record_lines(self):
        """Cheap count of complete lines (for tight polling loops)."""
        try:
            with open(self.record_path, "rb") as f:
                return f.read().count(b"\n")
        except OSError:
            return 0


class Daemon:
    """varseld with a generated config, stderr+stdout in daemon-N.log."""

    def __init__(self, binary, dir, redis_url, sandbox=None, consumer="it-1",
                 name="varseld", overrides=None, extra_sections=None,
                 templates_dir=None, log_level="debug"):
        self.binary = str(binary)
        self.dir = Path(dir)
        self.redis_url = redis_url
        self.sandbox = sandbox
        self.consumer = consumer
        self.name = name
        self.overrides = overrides or {}
        self.extra_sections = extra_sections or {}
        self.templates_dir = templates_dir or str(REPO / "config" / "templates")
        self.log_level = log_level
        self.config_path = self.dir / f"{name}.ini"
        self.admin_port = free_port()
        self.log = self.dir / f"{name}.log"
        self.proc = None
        self.returncode = None
        self.starts = 0
        self._started_at = time.monotonic()

    def config_sections(self):
        secs = {
            "daemon": {"log_level": self.log_level,
                       "templates_dir": self.templates_dir},
            "redis": {"url": self.redis_url, "stream": STREAM, "group": GROUP,
                      "consumer": self.consumer, "claim_idle_ms": "1000",
                      "prefix": PREFIX, "block_ms": "200"},
            # Each daemon gets its own admin port, so tests (and several
            # daemons in one test) never contend for the default 9470.
            "admin": {"listen": f"127.0.0.1:{self.admin_port}"},
        }
        if self.sandbox is not None:
            secs["tls"] = {"ca_file": str(self.sandbox.ca)}
            secs[f"app {APP}"] = {
                "apns_topic": TOPIC, "apns_team_id": self.sandbox.team_id,
                "apns_key_id": self.sandbox.key_id,
                "apns_key_file": str(self.sandbox.p8),
                "apns_url": self.sandbox.apns_url,
                "apns_sandbox_url": self.sandbox.apns_sandbox_url}
        for sec, kv in self.extra_sections.items():
            secs.setdefault(sec, {}).update(kv)
        for sec, kv in self.overrides.items():
            for k, v in kv.items():
                if v is None:
                    secs.get(sec, {}).pop(k, None)
                else:
                    secs.setdefault(sec, {})[k] = v
        return secs

    def write_config(self, path=None, sections=None):
        path = Path(path or self.config_path)
        path.write_text(render_ini(sections or self.config_sections()))
        return path

    def start(self, wait_ready=True, timeout=30.0):
        self.write_config()
        self.starts += 1
        self._started_at = time.monotonic()
        logf = open(self.log, "ab")
        logf.write(f"----- start #{self.starts} of {self.name} "
                   f"(consumer {self.consumer}) -----\n".encode())
        logf.flush()
        cmd = [self.binary, "--config", str(self.config_path)]
        if os.environ.get("VARSEL_VALGRIND"):
            # Long tier: varseld under memcheck; errors and definite leaks
            # are reported in valgrind-PID.log and fail the test.
            cmd = ["valgrind", "--quiet", "--error-exitcode=99", "--leak-check=full",
                   "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite",
                   f"--log-file={self.dir}/valgrind-{self.name}-%p.log"] + cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=subprocess.STDOUT, cwd=str(self.dir))
        logf.close()
        self.returncode = None
        _register(self.proc, f"{self.name} ({self.consumer})")
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=30.0):
        """Wait until the consumer group exists and this consumer has read.

        That is the contract-level sign that varseld reads the stream:
        events published after it cannot be missed whatever start id the
        group was created with.
        """
        r = Redis("127.0.0.1", int(self.redis_url.split(":")[2].split("/")[0]))
        started = self._started_at
        try:
            def ready():
                # On a restart the consumer already exists: require that it
                # was seen (idle reset) after this start.
                self.check_alive()
                since_ms = (time.monotonic() - started) * 1000
                return any(c.get("name") == self.consumer and c.get("idle", 1e12) < since_ms
                           for c in r.xinfo_consumers())
            wait_for(ready, timeout, what=f"{self.name} to join group {GROUP} as "
                     f"consumer {self.consumer}")
        finally:
            r.close()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise TestFailure(f"{self.name} exited with {self.proc.returncode}; log "
                              f"tail:\n    " + "\n    ".join(tail(self.log, 25)))

    def stop(self, timeout=30.0):
        """SIGTERM, wait; returns the exit code (SIGKILL after |timeout|)."""
        if self.proc is None:
            return None
        self.returncode, killed = stop_process(self.proc, timeout=timeout)
        if killed:
            raise TestFailure(f"{self.name} did not exit within {timeout:.0f}s of SIGTERM")
        return self.returncode

    def kill9(self):
        if self.proc is None:
            return None
        self.returncode, _ = stop_process(self.proc, sig=signal.SIGKILL)
        return self.returncode

    def metric(self, name, labels=""):
        """The sum of the samples of |name| on /metrics whose labels contain
        |labels| (e.g. 'result="ok"'); 0.0 when there is none."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics",
                                    timeout=5) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if (line.startswith(name + "{") or line.startswith(name + " ")) and labels in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def log_lines(self):
        return self.log_text().splitlines()

    def wait_log(self, regex, timeout=20.0):
        rx = re.compile(regex)

        def found():
            for line in self.log_lines():
                if rx.search(line):
                    return line
            self.check_alive()
            return None
        return wait_for(found, timeout, what=f"log line /{regex}/ from {self.name}")

    def logs(self):
        return [(self.name, self.log)]

    def run_check_config(self, path):
        """`varseld --config PATH --check-config` → (exit code, output)."""
        p = subprocess.run([self.binary, "--config", str(path), "--check-config"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        return p.returncode, p.stdout.decode(errors="replace")


def render_ini(sections):
    out = []
    for sec, kv in sections.items():
        out.append(f"[{sec}]")
        for k, v in kv.items():
            out.append(f"{k} = {v}")
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------
# Per-test context

class Ctx:
    """One test's world: temp dir, binaries, processes, clean-up."""

    def __init__(self, name, build, root_tmp):
        self.name = name
        self.build = Path(build)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root_tmp))
        self.procs = []       # objects with .stop() / .logs(), in start order
        self.clients = []
        self.notes = []       # lines printed with the test result
        self._consumers = 0

    @property
    def varseld(self):
        return self.build / "varseld"

    @property
    def sandbox_bin(self):
        return self.build / "varsel-sandbox"

    def note(self, msg):
        self.notes.append(msg)

    def redis_server(self, subdir="redis", **kw):
        """redis-server with its files in tmp/|subdir| (one per server)."""
        rs = RedisServer(self.tmp / subdir, **kw)
        self.procs.append(rs)
        return rs.start()

    def sentinel(self, master, subdir=None, **kw):
        """redis-sentinel watching |master| (a RedisServer); see Sentinel."""
        n = sum(1 for p in self.procs if isinstance(p, Sentinel)) + 1
        s = Sentinel(self.tmp / (subdir or f"sentinel-{n}"), master.port, **kw)
        self.procs.append(s)
        return s.start()

    def client(self, rs, **kw):
        c = rs.client(**kw)
        self.clients.append(c)
        return c

    def sandbox(self, start=True, **kw):
        check(self.sandbox_bin.exists(), f"{self.sandbox_bin} is not built")
        sb = Sandbox(self.sandbox_bin, self.tmp / "sandbox", **kw)
        self.procs.append(sb)
        return sb.start() if start else sb

    def daemon(self, rs, sb=None, start=True, consumer=None, **kw):
        check(self.varseld.exists(), f"{self.varseld} is not built")
        self._consumers += 1
        n = self._consumers
        d = Daemon(self.varseld, self.tmp, rs.url, sb,
                   consumer=consumer or f"it-{n}",
                   name="varseld" if n == 1 else f"varseld-{n}", **kw)
        self.procs.append(d)
        return d.start() if start else d

    def stack(self, **daemon_kw):
        """redis-server + sandbox + varseld, and a Redis client."""
        rs = self.redis_server()
        sb = self.sandbox()
        d = self.daemon(rs, sb, **daemon_kw)
        return rs, sb, d, self.client(rs)

    def logs(self):
        out = []
        for p in self.procs:
            out += p.logs()
        return out

    def sanitizer_reports(self):
        """Lines of sanitizer reports found in the daemons' and sandbox's logs."""
        found = []
        for label, path in self.logs():
            if label in ("redis", "sentinel"):
                continue
            for line in tail(path, 100000):
                if SANITIZER_RE.search(line):
                    found.append(f"{label}: {line.strip()}")
        # valgrind (VARSEL_VALGRIND=1): any report line is a finding.
        for vg in sorted(self.tmp.glob("valgrind-*.log")):
            for line in tail(vg, 200):
                if line.startswith("==") and line.strip("=0123456789 \n"):
                    found.append(f"{vg.name}: {line.strip()}")
        return found

    def cleanup(self):
        """Stop everything (reverse start order). Returns problems found."""
        problems = []
        for c in self.clients:
            c.close()
        for p in reversed(self.procs):
            try:
                if isinstance(p, Daemon) and p.alive():
                    rc = p.stop()
                    if rc != 0:
                        problems.append(f"{p.name} exited {rc} on SIGTERM at clean-up")
                else:
                    p.stop()
            except Exception as e:  # noqa: BLE001 - keep stopping the others
                problems.append(f"stopping {type(p).__name__}: {e}")
        return problems

    def remove_tmp(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------
# A tiny APNs client for checking the sandbox without varseld: the JWT is
# signed with the openssl command line, the request sent with nghttp.

def b64url(data):
    import base64
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _der_ecdsa_to_raw(der):
    """DER ECDSA-Sig-Value (SEQUENCE of two INTEGERs) → 64-byte R||S."""
    def read_len(b, i):
        n = b[i]
        i += 1
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(b[i:i + k], "big")
            i += k
        return n, i
    check(der[0] == 0x30, "ECDSA signature is not a DER SEQUENCE")
    _, i = read_len(der, 1)
    ints = []
    for _ in range(2):
        check(der[i] == 0x02, "ECDSA signature: expected INTEGER")
        n, i = read_len(der, i + 1)
        ints.append(int.from_bytes(der[i:i + n], "big"))
        i += n
    return ints[0].to_bytes(32, "big") + ints[1].to_bytes(32, "big")


def es256_jwt(p8_path, key_id, team_id, iat=None):
    """An APNs provider token signed with the .p8 key at |p8_path|."""
    head = b64url(json.dumps({"alg": "ES256", "kid": key_id}, separators=(",", ":")))
    claims = b64url(json.dumps({"iss": team_id, "iat": int(iat or time.time())},
                               separators=(",", ":")))
    signing_input = f"{head}.{claims}".encode()
    p = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(p8_path)],
                       input=signing_input, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    check(p.returncode == 0, f"openssl dgst -sign failed: {p.stderr.decode()[-300:]}")
    return f"{head}.{claims}.{b64url(_der_ecdsa_to_raw(p.stdout))}"


def apns_push(base_url, token, payload, jwt, topic=TOPIC, push_type="alert",
              priority=10, apns_id=None, collapse_id=None, tmpdir=None):
    """POST one notification with nghttp. Returns (status, headers, body).

    headers maps lowercased response header names to values; body is the
    response body as text ('' when none).
    """
    tmpdir = Path(tmpdir or tempfile.gettempdir())
    body_file = tmpdir / f"push-{uuid.uuid4().hex}.json"
    body_file.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    args = ["nghttp", "-v", "--no-push", "-d", str(body_file),
            "-H", f"authorization: bearer {jwt}", "-H", f"apns-topic: {topic}",
            "-H", f"apns-push-type: {push_type}", "-H", f"apns-priority: {priority}"]
    if apns_id:
        args += ["-H", f"apns-id: {apns_id}"]
    if collapse_id:
        args += ["-H", f"apns-collapse-id: {collapse_id}"]
    args.append(f"{base_url}/3/device/{token}")
    try:
        p = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
    finally:
        body_file.unlink(missing_ok=True)
    out = p.stdout.decode(errors="replace")
    headers, status, body_lines = {}, None, []
    # ", sensitive": a never-indexed header (the sandbox's apns-id)
    hdr_re = re.compile(r"recv \(stream_id=\d+(?:, sensitive)?\) (:?[a-z0-9-]+): (.*)$")
    for line in out.splitlines():
        m = hdr_re.search(line)
        if m:
            headers[m.group(1)] = m.group(2)
            continue
        if line.startswith("{"):
            # nghttp prints the body with no newline before its next log line
            try:
                obj, end = json.JSONDecoder().raw_decode(line)
                body_lines.append(line[:end])
            except ValueError:
                body_lines.append(line)
    if ":status" in headers:
        status = int(headers[":status"])
    check(status is not None, f"nghttp got no response (exit {p.returncode}): {out[-600:]}")
    return status, headers, "\n".join(body_lines)
