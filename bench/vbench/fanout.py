"""fanout: one message.new to RECIPIENTS guardians (one device each).

The event (about 1.3 MB of JSON for 100,000 recipients) and the registry
are preloaded; the clock runs from varseld's start to the last receipt.
Reported: time to all settled, rate, time to the first receipt, varseld's
CPU and peak RSS (the in-flight window bounds memory, not the event size).
"""

from . import common as c
from . import svg

NAME = "fanout"
HELP = "one event to 100,000 recipients: time to all settled, peak RSS"
QUICK = ["--recipients", "20000"]


def add_args(p):
    p.add_argument("--recipients", type=int, default=100_000)
    p.add_argument("--connections", type=int, default=2)
    p.add_argument("--android-share", type=float, default=0.0)
    p.add_argument("--rounds", type=int, default=2)


def run(args, ts):
    wl = c.Workload(1, args.recipients, android_share=args.android_share)
    st = c.Stack(args.build, bench=True, fcm=args.android_share > 0, keep=args.keep).start()
    rounds = []
    try:
        for i in range(args.rounds):
            c.log(f"fanout round {i + 1}/{args.rounds}: 1 event × {args.recipients:,} recipients")
            res = c.run_varsel(st, wl, connections=args.connections,
                               overrides=c.parse_sets(args.set), label=f"fanout {i + 1}")
            res.pop("_rows")
            rounds.append(res)
            c.log(f"  settled in {res['wall_s']:.2f} s, peak RSS {res['varseld_peak_rss_mb']} MB")
    finally:
        st.stop()
    best = sorted(rounds, key=lambda r: r["wall_s"])[len(rounds) // 2]
    agg = {k: c.spread([r[k] for r in rounds]) for k in
           ("wall_s", "rate_per_s", "first_receipt_s", "varseld_cpu_s", "varseld_peak_rss_mb")}
    result = {"recipients": args.recipients, "connections": args.connections,
              "event_bytes": len(wl.raw_events()[0].encode()),
              "settled_s": agg["wall_s"]["median"], "rate_per_s": agg["rate_per_s"]["median"],
              "varseld_peak_rss_mb": agg["varseld_peak_rss_mb"]["median"],
              "summary": agg, "rounds": rounds}
    chart = c.result_path(NAME, ts, "svg")
    svg.line_chart(chart, f"fan-out: 1 event to {args.recipients:,} recipients",
                   [{"ylabel": "receipts / s", "series": [(f"round {i + 1}", r["timeline"]["receipts_per_s"])
                                                          for i, r in enumerate(rounds)]},
                    {"ylabel": "varseld RSS MiB", "series": [(f"round {i + 1}", r["timeline"]["varseld_rss_mb"])
                                                              for i, r in enumerate(rounds)]},
                    {"ylabel": "CPU % (median round)",
                     "series": [("varseld", best["timeline"]["varseld_cpu_pct"]),
                                ("redis-server", best["timeline"]["redis_cpu_pct"]),
                                ("sandbox", best["timeline"]["sandbox_cpu_pct"])]}],
                   xlabel="seconds since varseld started",
                   subtitle=f"event {result['event_bytes']:,} bytes of JSON, "
                            f"{args.connections} connection(s)")
    result["chart"] = str(chart)
    lines = [
        f"fanout: 1 message.new × {args.recipients:,} recipients × 1 device "
        f"({result['event_bytes']:,} bytes of JSON), {args.rounds} round(s)",
        f"  all settled after {c.fmt_spread(agg['wall_s'], ' s', 2)} "
        f"= {c.fmt_spread(agg['rate_per_s'], '/s')}",
        f"  first receipt after {c.fmt_spread(agg['first_receipt_s'], ' s', 3)}",
        f"  varseld CPU {c.fmt_spread(agg['varseld_cpu_s'], ' s', 2)}, peak RSS "
        f"{c.fmt_spread(agg['varseld_peak_rss_mb'], ' MB', 1)}",
    ]
    return result, lines
