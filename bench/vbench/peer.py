"""peer: varsel against @parse/node-apn (npm, version pinned in bench/peer).

node-apn sends the same number of notifications as varseld, with the body
and apns-* headers varseld sends (captured from a recording sandbox), to
the same device tokens, on the same number of HTTP/2 connections, with at
most inflight_window requests in flight, signing its provider token with
the sandbox's key, trusting the sandbox CA through NODE_EXTRA_CA_CERTS.
Both go to the same varsel-sandbox in --bench mode; rounds alternate.

Not the same work: varsel's figure is end to end (stream → registry →
template → provider → receipt and status in Redis, start-up included);
node-apn reads no Redis, renders nothing and writes nothing. The ratio
says how much of a bare provider client's rate varsel keeps while doing
all of that.
"""

import json
import os
import subprocess
import tempfile
from pathlib import Path

from . import common as c
from . import svg
from .ceiling import window_of

NAME = "peer"
HELP = "varsel vs @parse/node-apn (same notifications, same sandbox)"
QUICK = ["--events", "400", "--rounds", "2"]
PEER = c.BENCH / "peer"


def add_args(p):
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--recipients", type=int, default=50)
    p.add_argument("--connections", type=int, default=2)
    p.add_argument("--payload", choices=("short", "long"), default="short")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window", type=int, default=0,
                   help="node-apn requests in flight (default: varseld's inflight_window)")


def ensure_node_apn():
    mod = PEER / "node_modules" / "@parse" / "node-apn" / "package.json"
    if not mod.exists():
        c.log("installing bench/peer (npm ci)")
        p = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEER,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=600)
        if p.returncode != 0:
            raise c.BenchError("npm ci in bench/peer failed:\n"
                               + p.stdout.decode(errors="replace")[-1500:])
    return json.loads(mod.read_text())["version"]


def run_node(st, req, wl, conns, window, tmp):
    toks = Path(tmp) / "tokens.txt"
    if not toks.exists():
        t = wl.pop.tokens
        with open(toks, "w") as f:
            for e in range(wl.events):
                base = e * wl.recipients
                for k in range(wl.recipients):
                    f.write(t[(base + k) % len(t)] + "\n")
    hd = dict(req["headers"])
    cfg = {"host": "127.0.0.1", "port": st.sandbox.ports["apns"],
           "keyFile": str(st.sandbox.p8), "keyId": st.sandbox.key_id,
           "teamId": st.sandbox.team_id, "topic": hd["apns-topic"],
           "tokensFile": str(toks), "count": wl.total, "connections": conns,
           "window": window, "payload": json.loads(req["body"]),
           "priority": int(hd["apns-priority"]), "expiration": int(hd["apns-expiration"]),
           "pushType": hd["apns-push-type"], "collapseId": hd.get("apns-collapse-id"),
           "timeoutS": 600}
    cfg_path = Path(tmp) / "node-config.json"
    cfg_path.write_text(json.dumps(cfg, ensure_ascii=False))
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=str(st.sandbox.ca), NODE_ENV="production")
    env.pop("DEBUG", None)
    sb0 = c.proc_cpu_s(st.sandbox.pid)
    rc, out, ru = c.run_tool(["node", str(PEER / "send.js"), str(cfg_path)], timeout=660,
                             env=env, cwd=str(PEER))
    sb1 = c.proc_cpu_s(st.sandbox.pid)
    line = next((l for l in reversed(out.splitlines()) if l.startswith("{")), None)
    if rc != 0 or line is None:
        raise c.BenchError(f"node send.js exited {rc}:\n{out[-1500:]}")
    res = json.loads(line)
    if res["sent"] != wl.total:
        raise c.BenchError(f"node-apn sent {res['sent']} of {wl.total}, failed "
                           f"{res['failed']}: {res['first_error']}")
    bins = res.pop("answers_per_bin")
    res["timeline"] = [(round((i + 0.5) * 0.25, 3), n * 4.0) for i, n in enumerate(bins)]
    res["process_cpu_s"] = ru["cpu_s"]          # node start-up and key loading included
    res["process_max_rss_kb"] = ru["max_rss_kb"]
    res["cpu_us_per_notification"] = round(res["cpu_s"] * 1e6 / wl.total, 2)
    res["sandbox_cpu_s"] = round(sb1 - sb0, 3)
    return res


def run(args, ts):
    version = ensure_node_apn()
    wl = c.Workload(args.events, args.recipients, payload=args.payload)
    conns = args.connections
    window = args.window or window_of(args.set)
    c.log("capturing one request of varseld from a recording sandbox")
    req = c.capture_request(args.build, payload=args.payload)
    st = c.Stack(args.build, bench=True, keep=args.keep).start()
    tmp = tempfile.mkdtemp(prefix="peer-", dir=st.tmp)
    vs, ns = [], []
    try:
        for i, who in c.abba(args.rounds, "varsel", "node"):
            if who == "varsel":
                vs.append(c.varsel_round(st, wl, conns, args.set, i, args.rounds, NAME))
            else:
                c.log(f"peer round {i + 1}/{args.rounds}: node-apn {version}, "
                      f"{conns} client(s), window {window}")
                n = run_node(st, req, wl, conns, window, tmp)
                ns.append(n)
                c.log(f"  node-apn {n['rate_per_s']:,.0f}/s, {n['cpu_s']:.2f} CPU s")
    finally:
        st.stop()

    summary = {
        "varsel_rate_per_s": c.spread([v["rate_per_s"] for v in vs]),
        "varsel_steady_rate_per_s": c.spread([v["steady_rate_per_s"] for v in vs]),
        "node_rate_per_s": c.spread([n["rate_per_s"] for n in ns]),
        "ratio_end_to_end": c.spread([v["rate_per_s"] / n["rate_per_s"] for v, n in zip(vs, ns)]),
        "ratio_steady": c.spread([v["steady_rate_per_s"] / n["rate_per_s"]
                                  for v, n in zip(vs, ns) if v["steady_rate_per_s"]]),
        "varseld_cpu_us_per_notification": c.spread(
            [v["varseld_cpu_us_per_notification"] for v in vs]),
        "node_cpu_us_per_notification": c.spread([n["cpu_us_per_notification"] for n in ns]),
        "varseld_peak_rss_mb": c.spread([v["varseld_peak_rss_mb"] for v in vs]),
        "node_peak_rss_mb": c.spread([n["max_rss_kb"] / 1024.0 for n in ns]),
    }
    result = {"workload": wl.describe(), "connections": conns, "node_window": window,
              "node_apn_version": version, "varsel_rounds": vs, "node_rounds": ns,
              "summary": summary,
              "fairness": "varsel: stream → receipt in Redis, start-up included; node-apn: "
                          "first send → last answer, no Redis, no templates, no receipts"}
    chart = c.result_path(NAME, ts, "svg")
    series = [(f"varsel round {i + 1}", v["timeline"]["receipts_per_s"]) for i, v in enumerate(vs)]
    series += [(f"node-apn round {i + 1}", n["timeline"]) for i, n in enumerate(ns)]
    svg.line_chart(chart, f"varsel (stream → receipt) vs node-apn {version} (send → answer)",
                   [{"ylabel": "notifications / s", "series": series}],
                   xlabel="seconds since start",
                   subtitle=f"{wl.total:,} notifications, {conns} connection(s), same sandbox "
                            f"(--bench), alternating rounds")
    result["chart"] = str(chart)
    s = summary
    lines = [
        f"peer: {wl.total:,} notifications, {conns} connection(s), @parse/node-apn {version} "
        f"(window {window}), {args.rounds} alternating round(s) each",
        f"  varsel (stream → receipt, start-up included): {c.fmt_spread(s['varsel_rate_per_s'], '/s')}",
        f"  varsel steady:                                {c.fmt_spread(s['varsel_steady_rate_per_s'], '/s')}",
        f"  node-apn (first send → last answer):          {c.fmt_spread(s['node_rate_per_s'], '/s')}",
        f"  varsel / node-apn: {c.fmt_spread(s['ratio_end_to_end'], '', 2)} end to end, "
        f"{c.fmt_spread(s['ratio_steady'], '', 2)} steady",
        f"  CPU µs/notification: varseld {c.fmt_spread(s['varseld_cpu_us_per_notification'], '', 1)}"
        f" vs node {c.fmt_spread(s['node_cpu_us_per_notification'], '', 1)}",
        f"  peak RSS: varseld {c.fmt_spread(s['varseld_peak_rss_mb'], ' MB', 1)} vs node "
        f"{c.fmt_spread(s['node_peak_rss_mb'], ' MB', 1)}",
        "  (not the same work: node-apn reads no Redis, renders no template, writes no receipt)",
    ]
    return result, lines
