"""throughput: a preloaded backlog, end to end.

EVENTS message.new events × RECIPIENTS guardians × 1 device are written to
the stream (and the devices to the registry) before varseld starts; the
clock runs from varseld's start to the last receipt. Reported per round and
as median/min/max: notifications/s end to end and in steady state, CPU
seconds of varseld (and µs per notification), of redis-server and of the
sandbox, varseld's peak RSS. --android-share sends that share of the
devices through FCM (needs varsel-sandbox --fcm-listen).
"""

import re
import shutil
from pathlib import Path

from . import common as c
from . import svg

NAME = "throughput"
HELP = "preloaded backlog → receipts: notifications/s, CPU s, peak RSS"
QUICK = ["--events", "400", "--rounds", "1"]


def add_args(p):
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--recipients", type=int, default=50)
    p.add_argument("--android-share", type=float, default=0.0,
                   help="share of devices on Android/FCM, 0..1 (default 0: iOS only)")
    p.add_argument("--connections", type=int, default=2,
                   help="apns_max_connections (and fcm_max_connections)")
    p.add_argument("--payload", choices=("short", "long"), default="short",
                   help="short subject, or a ~3 KB body")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--perf", action="store_true",
                   help="run varseld under `perf record` (cpu-clock samples, 1999 Hz) and "
                        "report its top functions under the real load")
    p.add_argument("--recording-sandbox", action="store_true",
                   help="use the sandbox in normal mode (JWT checks, record file) "
                        "instead of --bench")


def perf_wrapper(tmp, binary, data):
    w = Path(tmp) / "varseld-perf"
    w.write_text(f"#!/bin/sh\nexec perf record -q -F 1999 -g -o {data} {binary} \"$@\"\n")
    w.chmod(0o755)
    return w


def perf_top(data, n=15):
    """[(percent, object, symbol)] of self samples, from perf report."""
    rc, out, _ = c.run_tool(["perf", "report", "-i", str(data), "--no-children", "--stdio",
                             "--sort", "dso,sym", "-g", "none", "--percent-limit", "0.5"],
                            timeout=300)
    rows = []
    for line in out.splitlines():
        m = re.match(r"^\s+([\d.]+)%\s+(\S+)\s+\[.\]\s+(.+?)\s*$", line)
        if m:
            rows.append({"pct": float(m.group(1)), "object": m.group(2),
                         "symbol": m.group(3)})
    return rows[:n]


def run(args, ts):
    wl = c.Workload(args.events, args.recipients, android_share=args.android_share,
                    payload=args.payload)
    fcm = args.android_share > 0
    st = c.Stack(args.build, bench=not args.recording_sandbox, fcm=fcm,
                 keep=args.keep).start()
    rounds = []
    if args.perf and not shutil.which("perf"):
        raise c.BenchError("perf is not installed (apt-get install linux-perf)")
    try:
        for i in range(args.rounds):
            c.log(f"throughput round {i + 1}/{args.rounds}: {wl.total:,} notifications")
            binary = None
            if args.perf:
                data = st.tmp / f"perf-{i + 1}.data"
                binary = perf_wrapper(st.tmp, (Path(args.build) / "varseld").resolve(), data)
            res = c.run_varsel(st, wl, connections=args.connections,
                               overrides=c.parse_sets(args.set), binary=binary,
                               wrapped=args.perf,
                               receipt_fields=("status", "at", "platform"),
                               label=f"round {i + 1}")
            plat = {}
            for row in res.pop("_rows"):
                if row[1] == "sent":
                    plat[row[3]] = plat.get(row[3], 0) + 1
            res["sent_by_platform"] = plat
            if args.perf:
                res["perf_top"] = perf_top(data)
            rounds.append(res)
            c.log(f"  {res['rate_per_s']:,.0f}/s end to end, {res['steady_rate_per_s'] or 0:,.0f}/s "
                  f"steady, varseld {res['varseld_cpu_s']} CPU s, peak RSS "
                  f"{res['varseld_peak_rss_mb']} MB")
    finally:
        st.stop()

    agg = {k: c.spread([r[k] for r in rounds]) for k in
           ("rate_per_s", "steady_rate_per_s", "wall_s", "varseld_cpu_s", "varseld_cpu_user_s",
            "varseld_cpu_sys_s", "varseld_runq_wait_s", "redis_runq_wait_s",
            "varseld_cpu_us_per_notification", "varseld_peak_rss_mb", "redis_cpu_s",
            "sandbox_cpu_s", "first_receipt_s")}
    result = {"workload": wl.describe(), "connections": args.connections,
              "sandbox_mode": "normal" if args.recording_sandbox else "bench",
              "expected_by_platform": wl.expected_by_platform(),
              "rounds": rounds, "summary": agg}
    chart = c.result_path(NAME, ts, "svg")
    r0 = rounds[0]["timeline"]
    svg.line_chart(
        chart, f"varsel throughput: {wl.total:,} notifications "
               f"({args.events:,} events × {args.recipients} recipients)",
        [{"ylabel": "receipts / s", "series": [(f"round {i + 1}", r["timeline"]["receipts_per_s"])
                                               for i, r in enumerate(rounds)]},
         {"ylabel": "CPU % of one core (round 1)",
          "series": [("varseld", r0["varseld_cpu_pct"]), ("redis-server", r0["redis_cpu_pct"]),
                     ("sandbox", r0["sandbox_cpu_pct"])]},
         {"ylabel": "varseld RSS MiB (round 1)",
          "series": [("varseld RSS", r0["varseld_rss_mb"])]}],
        xlabel="seconds since varseld started",
        subtitle=f"{args.connections} connection(s), payload {args.payload}, android share "
                 f"{args.android_share}, sandbox {result['sandbox_mode']} mode")
    result["chart"] = str(chart)
    lines = [
        f"throughput: {wl.total:,} notifications ({args.events:,} events × {args.recipients} "
        f"recipients × 1 device; android {wl.pop.n_android:,}/{wl.pop.n:,} devices), "
        f"{args.connections} connection(s), {args.rounds} round(s)",
        f"  end to end (varseld start → last receipt): "
        f"{c.fmt_spread(agg['rate_per_s'], '/s')}",
        f"  steady (10th → 90th percentile receipt):    "
        f"{c.fmt_spread(agg['steady_rate_per_s'], '/s')}",
        f"  wall time: {c.fmt_spread(agg['wall_s'], ' s', 2)}; first receipt after "
        f"{c.fmt_spread(agg['first_receipt_s'], ' s', 3)}",
        f"  varseld CPU: {c.fmt_spread(agg['varseld_cpu_s'], ' s', 2)} = "
        f"{c.fmt_spread(agg['varseld_cpu_us_per_notification'], ' µs/notification', 1)}",
        f"    of which user {c.fmt_spread(agg['varseld_cpu_user_s'], ' s', 2)}, system "
        f"{c.fmt_spread(agg['varseld_cpu_sys_s'], ' s', 2)}",
        f"  redis-server CPU {c.fmt_spread(agg['redis_cpu_s'], ' s', 2)}, sandbox CPU "
        f"{c.fmt_spread(agg['sandbox_cpu_s'], ' s', 2)}",
        f"  waiting for a CPU while runnable: varseld "
        f"{c.fmt_spread(agg['varseld_runq_wait_s'], ' s', 2)}, redis-server "
        f"{c.fmt_spread(agg['redis_runq_wait_s'], ' s', 2)}",
        f"  varseld peak RSS (VmHWM): {c.fmt_spread(agg['varseld_peak_rss_mb'], ' MB', 1)}",
        f"  sent by platform: {rounds[-1]['sent_by_platform']} "
        f"(expected {result['expected_by_platform']})",
    ]
    if args.perf:
        lines.append("  perf (varseld, self samples, last round; perf slows varseld a little):")
        for r_ in rounds[-1]["perf_top"]:
            lines.append(f"    {r_['pct']:5.2f}%  {r_['symbol']}  [{r_['object']}]")
    return result, lines
