"""soak: a million notifications through one varseld (not part of `all`).

EVENTS × RECIPIENTS message.new deliveries (default 10,000 × 100) over a
population of 100,000 guardians reused across events, preloaded. varseld's
RSS is sampled every 0.5 s; reported at start (1 % of the receipts), at 10 %,
50 % and 100 % of the receipts, and its peak, with the rate over time. A
leak shows as RSS growing with the count instead of staying flat once the
in-flight window is full.
"""

from . import common as c
from . import svg

NAME = "soak"
HELP = "1,000,000 notifications: RSS at start, middle, end (long)"


def add_args(p):
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--recipients", type=int, default=100)
    p.add_argument("--population", type=int, default=100_000)
    p.add_argument("--connections", type=int, default=2)
    p.add_argument("--timeout", type=int, default=1800)


def run(args, ts):
    pop = c.Population(args.population)
    wl = c.Workload(args.events, args.recipients, population=pop)
    st = c.Stack(args.build, bench=True, keep=args.keep).start()
    ov = c.parse_sets(args.set)
    ov.setdefault("redis", {}).setdefault("receipts_maxlen", str(2 * wl.total))
    try:
        c.log(f"soak: {wl.total:,} notifications ({args.events:,} × {args.recipients})")
        st.reset()
        wl.load(st.client)
        res = c.run_varsel(st, wl, connections=args.connections, overrides=ov,
                           preloaded=True, timeout=args.timeout, sample_interval=0.5,
                           label="soak")
        res.pop("_rows")
    finally:
        st.stop()
    rss = res["timeline"]["varseld_rss_mb"]
    rec = res["timeline"]["receipts_per_s"]
    # receipts count over time from the per-bin rates (250 ms bins)
    cum, acc = [], 0.0
    for t, r in rec:
        acc += r * 0.25
        cum.append((t, acc))

    def t_at_fraction(f):
        for t, n in cum:
            if n >= f * wl.total:
                return t
        return cum[-1][0] if cum else None

    def rss_at_t(t):
        """RSS of the first sample taken at or after |t| (else the last)."""
        if t is None or not rss:
            return None
        return next((mb for ts_, mb in rss if ts_ >= t), rss[-1][1])
    marks = {k: rss_at_t(t_at_fraction(f)) for k, f in
             (("start", 0.01), ("p10", 0.10), ("middle", 0.5), ("end", 1.0))}
    result = {"workload": wl.describe(), "connections": args.connections, "run": res,
              "rss_mb": marks, "peak_rss_mb": res["varseld_peak_rss_mb"],
              "rate_per_s": res["rate_per_s"], "wall_s": res["wall_s"]}
    chart = c.result_path(NAME, ts, "svg")
    svg.line_chart(chart, f"soak: {wl.total:,} notifications",
                   [{"ylabel": "receipts / s", "series": [("receipts/s", rec)]},
                    {"ylabel": "varseld RSS MiB", "series": [("RSS", rss)]},
                    {"ylabel": "CPU %", "series": [("varseld", res["timeline"]["varseld_cpu_pct"]),
                                                   ("redis-server", res["timeline"]["redis_cpu_pct"]),
                                                   ("sandbox", res["timeline"]["sandbox_cpu_pct"])]}],
                   xlabel="seconds since varseld started",
                   subtitle=f"{args.events:,} events × {args.recipients} recipients over "
                            f"{args.population:,} guardians, {args.connections} connection(s)")
    result["chart"] = str(chart)
    lines = [
        f"soak: {wl.total:,} notifications in {res['wall_s']:.1f} s = {res['rate_per_s']:,.0f}/s "
        f"(steady {res['steady_rate_per_s'] or 0:,.0f}/s); statuses {res['statuses']}",
        f"  varseld RSS: start {marks['start']} MB, 10 % {marks['p10']} MB, middle "
        f"{marks['middle']} MB, end {marks['end']} MB; peak {res['varseld_peak_rss_mb']} MB",
        f"  varseld CPU {res['varseld_cpu_s']:.1f} s ({res['varseld_cpu_us_per_notification']} "
        f"µs/notification), redis {res['redis_cpu_s']} s, sandbox {res['sandbox_cpu_s']} s",
    ]
    return result, lines
