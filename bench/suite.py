#!/usr/bin/env python3
"""varsel benchmark suite (issue #7). Usually run through bench/run.sh.

    python3 bench/suite.py NAME [options]     one bench
    python3 bench/suite.py all [options]      every bench but soak, then one
                                              side-by-side table
    python3 bench/suite.py list

Each bench writes bench/results/NAME-YYYYmmdd-HHMMSS.json (and .svg where a
chart makes sense) and prints a summary on stdout; progress goes to stderr.
Everything runs on 127.0.0.1 with free ports and is stopped by PID.
"""

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vbench import common as c  # noqa: E402
from vbench import (ceiling, cost, fanout, latency, peer, processes, scaling, soak,  # noqa: E402
                    throughput)

BENCHES = [throughput, ceiling, peer, fanout, latency, cost, scaling, processes, soak]
BY_NAME = {b.NAME: b for b in BENCHES}
IN_ALL = ["throughput", "ceiling", "peer", "fanout", "latency", "cost", "scaling"]


def common_args(p):
    p.add_argument("--build", default=str(c.REPO / "build"),
                   help="directory with varseld and varsel-sandbox (default build/)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="extra varseld config, e.g. --set delivery.inflight_window=4000 "
                        "or --set app.demo.apns_max_connections=4 (repeatable)")
    p.add_argument("--keep", action="store_true", help="keep the temp dirs (logs)")


def run_one(bench, args, ts):
    t = time.monotonic()
    load0 = c.machine_info()["loadavg_at_start"]
    result, lines = bench.run(args, ts)
    machine = c.machine_info()
    doc = {"bench": bench.NAME, "timestamp": ts, "machine": machine,
           "args": {k: v for k, v in vars(args).items() if k not in ("func",)},
           "duration_s": round(time.monotonic() - t, 1), "result": c.strip_private(result)}
    machine["loadavg_at_start"] = load0
    machine["loadavg_at_end"] = c.machine_info()["loadavg_at_start"]
    path = c.save_result(bench.NAME, ts, doc)
    print("\n".join(lines))
    print(f"  load average (1/5/15 min) at start {' '.join(load0 or [])}, at end "
          f"{' '.join(machine['loadavg_at_end'] or [])}")
    print(f"  → {path}" + (f"  (chart {result['chart']})" if result.get("chart") else ""))
    sys.stdout.flush()
    return doc, path


def run_all(args):
    ts = c.timestamp()
    done, failed = {}, {}
    for name in IN_ALL:
        bench = BY_NAME[name]
        p = argparse.ArgumentParser()
        common_args(p)
        bench.add_args(p)
        argv = ["--build", args.build] + sum((["--set", s] for s in args.set), [])
        if args.keep:
            argv.append("--keep")
        if args.quick and hasattr(bench, "QUICK"):
            argv += bench.QUICK
        bargs = p.parse_args(argv)
        print(f"\n=== {name} ===", flush=True)
        try:
            doc, path = run_one(bench, bargs, ts)
            done[name] = (doc, path)
        except Exception as e:  # noqa: BLE001 - report and go on with the others
            traceback.print_exc()
            failed[name] = f"{type(e).__name__}: {e}"
            print(f"{name}: FAILED: {failed[name]}", flush=True)
    lines = side_by_side({k: v[0]["result"] for k, v in done.items()})
    print("\n=== side by side ===")
    print("\n".join(lines))
    doc = {"bench": "all", "timestamp": ts, "machine": c.machine_info(),
           "results": {k: str(v[1]) for k, v in done.items()}, "failed": failed,
           "side_by_side": lines}
    path = c.save_result("all", ts, doc)
    print(f"  → {path}")
    return 1 if failed else 0


def side_by_side(res):
    """One table of the headline figures and ratios of one `all` run."""
    out = []
    m = c.machine_info()
    out.append(f"machine: {m['nproc']} × {m['cpu_model']}, kernel {m['kernel']}")

    def med(s):
        return s["median"] if s else None
    t = res.get("throughput")
    if t:
        s = t["summary"]
        out.append(f"throughput   {med(s['rate_per_s']):>10,.0f} notifications/s end to end "
                   f"({t['workload']['notifications']:,}), {med(s['varseld_cpu_us_per_notification']):.1f} "
                   f"µs CPU/notification, peak RSS {med(s['varseld_peak_rss_mb']):.0f} MB")
    ce = res.get("ceiling")
    if ce:
        s = ce["summary"]
        out.append(f"ceiling      varsel / h2load = {c.fmt_spread(s['ratio_end_to_end'], '', 3)} "
                   f"end to end; {c.fmt_spread(s['ratio_steady'], '', 3)} steady; h2load "
                   f"{med(s['h2load_rate_per_s']):,.0f} req/s")
    pe = res.get("peer")
    if pe:
        s = pe["summary"]
        out.append(f"peer         varsel / node-apn = {c.fmt_spread(s['ratio_end_to_end'], '', 2)} "
                   f"(varsel stream→receipt vs node-apn send→answer); node-apn "
                   f"{med(s['node_rate_per_s']):,.0f}/s; CPU µs/notification varseld "
                   f"{med(s['varseld_cpu_us_per_notification']):.1f} vs node "
                   f"{med(s['node_cpu_us_per_notification']):.1f}")
    f = res.get("fanout")
    if f:
        out.append(f"fanout       {f['recipients']:,} recipients settled in {f['settled_s']:.2f} s "
                   f"({f['rate_per_s']:,.0f}/s), peak RSS {f['varseld_peak_rss_mb']:.0f} MB")
    la = res.get("latency")
    if la:
        a, b = la["publish_to_accepted_ms"], la["publish_to_settled_ms"]
        out.append(f"latency      at {la['achieved_events_per_s']:,.0f} events/s: publish→accepted "
                   f"p50 {a['p50']} ms p99 {a['p99']} ms; publish→settled p50 {b['p50']} ms "
                   f"p99 {b['p99']} ms")
    co = res.get("cost")
    if co:
        out.append(f"cost         {co['varseld_instr_per_notification']:,.0f} instructions/notification "
                   f"(varseld) vs {co['h2load_instr_per_request']:,.0f}/request (h2load) = "
                   f"{co['ratio']:.1f}×")
    sc = res.get("scaling")
    if sc:
        for row in sc["table"]:
            out.append(f"scaling      {row['variant']:<28} {row['rate_per_s']:>9,.0f}/s  "
                       f"{row['cpu_us_per_notification']:.1f} µs CPU/notification")
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    # the harness runs varseld under memcheck when this is set (long tier);
    # a benchmark must measure the plain binary
    os.environ.pop("VARSEL_VALGRIND", None)
    if not argv or argv[0] in ("-h", "--help", "list"):
        print(__doc__)
        print("benches:")
        for b in BENCHES:
            tag = "" if b.NAME in IN_ALL else "   (not in all)"
            print(f"  {b.NAME:<11} {b.HELP}{tag}")
        print("\n`bench/run.sh NAME --help` lists a bench's options.")
        return 0
    name, rest = argv[0], argv[1:]
    if name == "all":
        p = argparse.ArgumentParser(prog="bench/run.sh all")
        common_args(p)
        p.add_argument("--quick", action="store_true",
                       help="smaller sizes (a smoke test of the suite, not figures)")
        args = p.parse_args(rest)
        try:
            c.parse_sets(args.set)
        except c.BenchError as e:
            print(f"all: {e}", file=sys.stderr)
            return 2
        return run_all(args)
    if name not in BY_NAME:
        print(f"unknown bench {name!r}; try: list", file=sys.stderr)
        return 2
    bench = BY_NAME[name]
    p = argparse.ArgumentParser(prog=f"bench/run.sh {name}", description=bench.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(p)
    bench.add_args(p)
    args = p.parse_args(rest)
    try:
        c.parse_sets(args.set)  # fail before starting anything
        run_one(bench, args, c.timestamp())
    except c.BenchError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
