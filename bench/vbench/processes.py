"""processes: one varseld against several on one consumer group.

The same preloaded backlog (default 2,000 events x 50 recipients) is
delivered by 1 process and by N processes (default 2) sharing the group,
in alternating rounds (1, N, N, 1, ...) so drift on a shared machine hits
both. Reported per round: notifications/s end to end (first start to the
last receipt), summed varseld CPU seconds and the largest peak RSS; and the
ratio N/1 per pair of rounds (the share of work per process is checked by
tests/integration/test_scaleout.py). On a 2-core machine shared with
redis-server and the sandbox this says how much a second process per box
adds; docs/deployment.md turns it into sizing rules.
"""

import time

from . import common as c

NAME = "processes"
HELP = "1 vs N varseld processes on one group: rate ratio"
QUICK = ["--events", "200", "--rounds", "2"]


def add_args(p):
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--recipients", type=int, default=50)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4,
                   help="rounds in all, alternating 1 and N processes (ABBA)")


def one_round(st, wl, n_procs, timeout=600):
    r = st.client
    st.reset()
    wl.load(r)
    total = wl.total
    ds = []
    for i in range(n_procs):
        d = st.daemon(name=f"varseld-{st.rounds + 1}-p{i + 1}")
        d.consumer = f"bench-{i + 1}"
        ds.append(d)
    t0 = time.time()
    for d in ds:
        d.start(wait_ready=False)
    pids = [d.proc.pid for d in ds]
    deadline = time.monotonic() + timeout
    while r.xlen(c.h.RECEIPTS) < total:
        for d in ds:
            d.check_alive()
        if time.monotonic() > deadline:
            raise c.BenchError(f"only {r.xlen(c.h.RECEIPTS)} of {total} receipts after "
                               f"{timeout}s with {n_procs} processes")
        time.sleep(0.02)
    cpu = sum(c.proc_cpu_s(p) or 0.0 for p in pids)
    rss = max(c.proc_mem_kb(p).get("VmHWM", 0) for p in pids) / 1024.0
    for d in ds:
        d.stop(timeout=60)
    rows = c.dump_stream(r, c.h.RECEIPTS, ["at"])
    at = max(int(row[1]) for row in rows if row[1])
    wall = (at - t0 * 1000.0) / 1000.0
    return {"processes": n_procs, "notifications": total, "wall_s": round(wall, 3),
            "rate_per_s": round(total / wall, 1), "varseld_cpu_s": round(cpu, 3),
            "varseld_cpu_us_per_notification": round(cpu * 1e6 / total, 2),
            "max_peak_rss_mb": round(rss, 1)}


def run(args, ts):
    wl = c.Workload(args.events, args.recipients)
    st = c.Stack(args.build, bench=True, keep=args.keep).start()
    # --rounds counts single runs; abba pairs them: 1 N, N 1, ...
    order = [n for _, n in c.abba((args.rounds + 1) // 2, 1, args.processes)][:args.rounds]
    rounds = []
    try:
        for i, n in enumerate(order):
            c.log(f"processes round {i + 1}/{len(order)}: {n} process(es), "
                  f"{wl.total:,} notifications")
            rounds.append(one_round(st, wl, n))
    finally:
        st.stop()
    ones = [x["rate_per_s"] for x in rounds if x["processes"] == 1]
    many = [x["rate_per_s"] for x in rounds if x["processes"] == args.processes]
    pairs = [m / o for o, m in zip(ones, many)]
    summary = {
        "processes": args.processes,
        "rate_1": c.spread(ones), f"rate_{args.processes}": c.spread(many),
        "ratio": c.spread(pairs),
    }
    lines = [f"processes: {wl.total:,} notifications, 1 vs {args.processes} varseld on one "
             f"group, {len(order)} rounds alternating"]
    for x in rounds:
        lines.append(f"  {x['processes']} process(es): {x['rate_per_s']:>9,.0f}/s  "
                     f"{x['varseld_cpu_us_per_notification']:>6.1f} µs CPU/notification  "
                     f"peak RSS {x['max_peak_rss_mb']:.0f} MB")
    if pairs:
        lines.append(f"  ratio {args.processes}/1: median {summary['ratio']['median']:.2f} "
                     f"(min {summary['ratio']['min']:.2f}, max {summary['ratio']['max']:.2f})")
    return {"workload": wl.describe(), "rounds": rounds, "summary": summary}, lines
