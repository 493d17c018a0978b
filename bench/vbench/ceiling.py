"""ceiling: varsel against h2load, the HTTP/2 client ceiling.

One real request of varseld is captured from a recording sandbox (body,
apns-* headers, content-type; authorization is a token from the same kind
of key, so the header has the same size). h2load (Debian's nghttp2-client)
then sends that request to a varsel-sandbox in --bench mode, on the same
number of connections, with as many streams per connection as varseld can
have open (min(1000, inflight_window / connections)), one thread, to the
same device tokens (one :path per delivery, as varseld does). varsel rounds
use the same sandbox. Rounds alternate (ABBA order) so drift on a shared
machine hits both; the ratio is taken per pair of rounds.

varsel's figure is end to end: stream → template → provider → receipt in
Redis, varseld's start-up included; its steady rate leaves out start-up
and the tail. h2load does only the HTTP/2 part.
"""

import re
import tempfile
from pathlib import Path

from . import common as c
from . import svg

NAME = "ceiling"
HELP = "varsel vs h2load (same requests, same sandbox, alternating rounds)"
QUICK = ["--events", "400", "--rounds", "2"]


def add_args(p):
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--recipients", type=int, default=50)
    p.add_argument("--connections", type=int, default=2)
    p.add_argument("--payload", choices=("short", "long"), default="short")
    p.add_argument("--rounds", type=int, default=3, help="rounds of each (default 3)")
    p.add_argument("--streams", type=int, default=0,
                   help="h2load -m (default: min(1000, inflight_window / connections))")


def window_of(sets):
    ov = c.parse_sets(sets)
    return int(ov.get("delivery", {}).get("inflight_window", 2000))


def h2load_args(req, n, conns, streams, uris_file, body_file):
    args = ["h2load", "-n", str(n), "-c", str(conns), "-m", str(streams), "-t", "1",
            "-i", str(uris_file), "-d", str(body_file)]
    for k, v in req["headers"]:
        args += ["-H", f"{k}: {v}"]
    return args


def parse_h2load(out):
    """Figures from h2load's report."""
    res = {}
    m = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", out)
    if m:
        secs = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
        res["seconds"] = secs
        res["rate_per_s"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if m:
        for k, v in zip(("total", "started", "done", "succeeded", "failed", "errored",
                         "timeout"), m.groups()):
            res[k] = int(v)
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if m:
        res["status_2xx"], res["status_4xx"], res["status_5xx"] = (
            int(m.group(1)), int(m.group(3)), int(m.group(4)))
    m = re.search(r"traffic: \S+ \((\d+)\) total, \S+ \((\d+)\) headers \(space savings "
                  r"([\d.]+)%\), \S+ \((\d+)\) data", out)
    if m:  # what h2load received (responses)
        res["rx_bytes_total"], res["rx_bytes_headers"] = int(m.group(1)), int(m.group(2))
        res["rx_hpack_savings_pct"] = float(m.group(3))
    return res


def run_h2load(st, req, wl, conns, streams, tmp):
    """One h2load round against the stack's sandbox; CPU from wait4."""
    port = st.sandbox.ports["apns"]
    uris = Path(tmp) / "uris.txt"
    if not uris.exists():
        toks = wl.pop.tokens
        with open(uris, "w") as f:
            for e in range(wl.events):
                base = e * wl.recipients
                for k in range(wl.recipients):
                    f.write(f"https://127.0.0.1:{port}/3/device/{toks[(base + k) % len(toks)]}\n")
    body = Path(tmp) / "body.json"
    body.write_bytes(req["body"])
    sb0 = c.proc_cpu_s(st.sandbox.pid)
    rc, out, ru = c.run_tool(h2load_args(req, wl.total, conns, streams, uris, body),
                             timeout=600)
    sb1 = c.proc_cpu_s(st.sandbox.pid)
    res = parse_h2load(out)
    if rc != 0 or res.get("succeeded") != wl.total:
        raise c.BenchError(f"h2load exit {rc}, {res.get('succeeded')} of {wl.total} "
                           f"succeeded:\n{out[-1500:]}")
    res.update({"cpu_s": ru["cpu_s"], "max_rss_kb": ru["max_rss_kb"],
                "cpu_us_per_request": round(ru["cpu_s"] * 1e6 / wl.total, 2),
                "sandbox_cpu_s": round(sb1 - sb0, 3)})
    return res


def run(args, ts):
    wl = c.Workload(args.events, args.recipients, payload=args.payload)
    conns = args.connections
    streams = args.streams or max(1, min(1000, window_of(args.set) // conns))
    c.log("capturing one request of varseld from a recording sandbox")
    req = c.capture_request(args.build, payload=args.payload)
    st = c.Stack(args.build, bench=True, keep=args.keep).start()
    tmp = tempfile.mkdtemp(prefix="ceiling-", dir=st.tmp)
    vs, hs = [], []
    try:
        for i, who in c.abba(args.rounds, "varsel", "h2load"):
            if who == "varsel":
                vs.append(c.varsel_round(st, wl, conns, args.set, i, args.rounds, NAME))
            else:
                c.log(f"ceiling round {i + 1}/{args.rounds}: h2load -c {conns} -m {streams} "
                      f"-n {wl.total}")
                hres = run_h2load(st, req, wl, conns, streams, tmp)
                hs.append(hres)
                c.log(f"  h2load {hres['rate_per_s']:,.0f} req/s")
    finally:
        st.stop()

    ratio_e2e = [v["rate_per_s"] / hh["rate_per_s"] for v, hh in zip(vs, hs)]
    ratio_steady = [v["steady_rate_per_s"] / hh["rate_per_s"] for v, hh in zip(vs, hs)
                    if v["steady_rate_per_s"]]
    cpu_ratio = [v["varseld_cpu_us_per_notification"] / hh["cpu_us_per_request"]
                 for v, hh in zip(vs, hs) if hh["cpu_us_per_request"]]
    summary = {
        "varsel_rate_per_s": c.spread([v["rate_per_s"] for v in vs]),
        "varsel_steady_rate_per_s": c.spread([v["steady_rate_per_s"] for v in vs]),
        "h2load_rate_per_s": c.spread([hh["rate_per_s"] for hh in hs]),
        "ratio_end_to_end": c.spread(ratio_e2e),
        "ratio_steady": c.spread(ratio_steady),
        "varseld_cpu_us_per_notification": c.spread(
            [v["varseld_cpu_us_per_notification"] for v in vs]),
        "h2load_cpu_us_per_request": c.spread([hh["cpu_us_per_request"] for hh in hs]),
        "cpu_per_item_ratio": c.spread(cpu_ratio),
        "sandbox_cpu_s_varsel": c.spread([v["sandbox_cpu_s"] for v in vs]),
        "sandbox_cpu_s_h2load": c.spread([hh["sandbox_cpu_s"] for hh in hs]),
    }
    result = {"workload": wl.describe(), "connections": conns, "streams_per_connection": streams,
              "request": {"headers": [[k, v if k != "authorization" else "bearer <ES256 JWT, "
                                       f"{len(v) - 7} chars>"] for k, v in req["headers"]],
                          "body_bytes": len(req["body"]),
                          "path": "/3/device/<64 hex>, one per delivery"},
              "varsel_rounds": vs, "h2load_rounds": hs, "summary": summary}
    chart = c.result_path(NAME, ts, "svg")
    series = [(f"varsel round {i + 1}", v["timeline"]["receipts_per_s"]) for i, v in enumerate(vs)]
    series.append(("h2load (median rate)", summary["h2load_rate_per_s"]["median"]))
    svg.line_chart(chart, "varsel vs h2load on the same sandbox",
                   [{"ylabel": "notifications / s", "series": series},
                    {"ylabel": "varseld CPU % (of one core)",
                     "series": [(f"varsel round {i + 1}", v["timeline"]["varseld_cpu_pct"])
                                for i, v in enumerate(vs)]}],
                   xlabel="seconds since varseld started",
                   subtitle=f"{wl.total:,} requests, {conns} connection(s) × {streams} streams, "
                            f"body {len(req['body'])} B; h2load -t 1")
    result["chart"] = str(chart)
    s = summary
    lines = [
        f"ceiling: {wl.total:,} requests, {conns} connection(s) × {streams} streams, body "
        f"{len(req['body'])} bytes, {args.rounds} alternating round(s) each",
        f"  varsel end to end: {c.fmt_spread(s['varsel_rate_per_s'], '/s')}",
        f"  varsel steady:     {c.fmt_spread(s['varsel_steady_rate_per_s'], '/s')}",
        f"  h2load:            {c.fmt_spread(s['h2load_rate_per_s'], ' req/s')}",
        f"  varsel / h2load:   {c.fmt_spread(s['ratio_end_to_end'], '', 3)} end to end, "
        f"{c.fmt_spread(s['ratio_steady'], '', 3)} steady",
        f"  CPU per item: varseld {c.fmt_spread(s['varseld_cpu_us_per_notification'], ' µs', 1)}"
        f" vs h2load {c.fmt_spread(s['h2load_cpu_us_per_request'], ' µs', 1)}",
        f"  sandbox CPU s per round: with varsel {c.fmt_spread(s['sandbox_cpu_s_varsel'], '', 2)}, "
        f"with h2load {c.fmt_spread(s['sandbox_cpu_s_h2load'], '', 2)}",
    ]
    return result, lines
