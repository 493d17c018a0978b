"""scaling: how varseld's cost grows with the shape of the work.

The same number of notifications (default 50,000) in variants of one
factor at a time, around a base of 50 recipients per event, 2 connections
and a short body:

- recipients per event: 1, 10, 100, 1000;
- connections (apns_max_connections): 1, 2, 4;
- payload: short subject vs a ~3 KB body.

Variants are interleaved (every variant once, then again) so drift on a
shared machine spreads over all of them. Reported per variant: end-to-end
and steady notifications/s, varseld CPU µs per notification, peak RSS.
"""

from . import common as c
from . import svg

NAME = "scaling"
HELP = "rate and CPU/notification vs recipients per event, connections, payload"
QUICK = ["--notifications", "10000", "--rounds", "1"]


def add_args(p):
    p.add_argument("--notifications", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--recipients-list", default="1,10,100,1000")
    p.add_argument("--connections-list", default="1,2,4")


def variants(args):
    out = []
    for r in (int(x) for x in args.recipients_list.split(",")):
        out.append({"group": "recipients per event", "variant": f"{r} recipients/event",
                    "short": f"{r} rcpt/event",
                    "recipients": r, "connections": 2, "payload": "short"})
    for k in (int(x) for x in args.connections_list.split(",")):
        out.append({"group": "connections", "variant": f"{k} connection(s)",
                    "short": f"{k} conn",
                    "recipients": 50, "connections": k, "payload": "short"})
    for pl in ("short", "long"):
        out.append({"group": "payload", "variant": f"payload {pl}",
                    "short": f"{pl} body",
                    "recipients": 50, "connections": 2, "payload": pl})
    return out


def run(args, ts):
    vs = variants(args)
    pop = c.Population(args.notifications)
    wls = {}
    for v in vs:
        key = (v["recipients"], v["payload"])
        if key not in wls:
            wls[key] = c.Workload(max(1, args.notifications // v["recipients"]), v["recipients"],
                                  payload=v["payload"], population=pop)
        v["workload"] = wls[key]
    st = c.Stack(args.build, bench=True, keep=args.keep).start()
    results = {v["variant"]: [] for v in vs}
    try:
        for i in range(args.rounds):
            for v in vs:
                c.log(f"scaling round {i + 1}/{args.rounds}: {v['variant']}")
                res = c.run_varsel(st, v["workload"], connections=v["connections"],
                                   overrides=c.parse_sets(args.set), label=v["variant"])
                res.pop("_rows")
                res.pop("timeline")
                results[v["variant"]].append(res)
                c.log(f"  {res['rate_per_s']:,.0f}/s, {res['varseld_cpu_us_per_notification']} µs/n")
    finally:
        st.stop()
    table = []
    for v in vs:
        rs = results[v["variant"]]
        row = {"group": v["group"], "variant": v["variant"], "short": v["short"],
               "recipients": v["recipients"],
               "connections": v["connections"], "payload": v["payload"],
               "notifications": v["workload"].total,
               "rate": c.spread([r["rate_per_s"] for r in rs]),
               "steady": c.spread([r["steady_rate_per_s"] for r in rs]),
               "cpu_us": c.spread([r["varseld_cpu_us_per_notification"] for r in rs]),
               "rss_mb": c.spread([r["varseld_peak_rss_mb"] for r in rs]),
               "redis_cpu_s": c.spread([r["redis_cpu_s"] for r in rs])}
        row["rate_per_s"] = row["rate"]["median"]
        row["cpu_us_per_notification"] = row["cpu_us"]["median"]
        table.append(row)
    result = {"notifications": args.notifications, "rounds": args.rounds, "table": table,
              "runs": results}
    chart = c.result_path(NAME, ts, "svg")
    groups = sorted({row["group"] for row in table}, key=[r["group"] for r in table].index)

    def bars(key):
        return [(row[key]["median"], row[key]["min"], row[key]["max"]) if row[key]
                else (None, None, None) for row in table]
    svg.bar_panels(chart, "varseld: rate and CPU per notification by variant",
                   [row["short"] for row in table],
                   [{"ylabel": "notifications/s (end to end)", "values": bars("rate")},
                    {"ylabel": "steady notifications/s", "values": bars("steady")},
                    {"ylabel": "varseld CPU µs/notification", "values": bars("cpu_us")},
                    {"ylabel": "varseld peak RSS MB", "values": bars("rss_mb")}],
                   colors=[groups.index(row["group"]) for row in table],
                   subtitle=f"{args.notifications:,} notifications per run, median of "
                            f"{args.rounds} interleaved round(s), whiskers min–max; base 50 "
                            "recipients/event, 2 connections, short body",
                   width=1000, panel_h=150)
    result["chart"] = str(chart)
    lines = [f"scaling: {args.notifications:,} notifications per run, {args.rounds} interleaved "
             f"round(s); base 50 recipients/event, 2 connections, short body",
             f"  {'variant':<24} {'end to end/s':>13} {'steady/s':>10} {'CPU µs/n':>9} "
             f"{'peak RSS MB':>11} {'redis CPU s':>11}"]
    for row in table:
        lines.append(f"  {row['variant']:<24} {row['rate']['median']:>13,.0f} "
                     f"{(row['steady']['median'] if row['steady'] else 0):>10,.0f} "
                     f"{row['cpu_us']['median']:>9.1f} {row['rss_mb']['median']:>11.1f} "
                     f"{row['redis_cpu_s']['median']:>11.2f}")
    return result, lines
