"""latency: a steady paced load, publish → provider-accepted → settled.

A Python publisher XADDs RATE events/s (each to RECIPIENTS guardians, one
device each) for DURATION seconds, in pipelined bursts every 5 ms, to a
varseld that is already running and has joined its group. The sandbox runs
in normal mode (provider tokens checked, every answer recorded), so:

- publish → accepted: the sandbox record's `at` (when the 200 was sent)
  minus the event's stream id time (when Redis took the XADD);
- publish → settled: the receipt's `latency_ms` (stream id time → receipt);
- accepted → settled: receipt `at` minus record `at` (the Redis write).

All clocks are this machine's wall clock (Redis, sandbox and varseld on
one host). Percentiles are nearest-rank over every delivery.
"""

import time

from . import common as c
from . import svg
from .common import h

NAME = "latency"
HELP = "2,000 events/s for 30 s: publish → accepted / settled p50, p99"
QUICK = ["--duration", "8"]


def add_args(p):
    p.add_argument("--rate", type=int, default=2000, help="events per second")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of publishing")
    p.add_argument("--recipients", type=int, default=1)
    p.add_argument("--connections", type=int, default=2)
    p.add_argument("--tick-ms", type=float, default=5.0)


def pct(vals):
    vals = sorted(vals)
    if not vals:
        return {}
    return {"n": len(vals), "p50": c.percentile(vals, 50), "p90": c.percentile(vals, 90),
            "p99": c.percentile(vals, 99), "p99_9": c.percentile(vals, 99.9),
            "max": vals[-1], "mean": round(sum(vals) / len(vals), 1)}


def publish_paced(r, raws, rate, duration, tick_s):
    """XADD |raws| at |rate|/s for at most |duration| s; returns ids, times."""
    n_max = min(len(raws), int(rate * duration))
    ids, sent = [], 0
    t_start = time.monotonic()
    wall0 = time.time()
    lag_max = 0.0
    while sent < n_max:
        now = time.monotonic()
        el = now - t_start
        if el > duration + 5:
            break  # bounded even if Redis stalls
        due = min(n_max, int(el * rate) + 1)
        if due > sent:
            cmds = [c.enc("XADD", h.STREAM, "*", "event", raws[k]) for k in range(sent, due)]
            ids += c.pipeline_raw(r, cmds, chunk=1000)
            lag_max = max(lag_max, (due - sent) / rate)
            sent = due
        nxt = t_start + (sent / rate)
        time.sleep(max(0.0, min(tick_s, nxt - time.monotonic())))
    el = time.monotonic() - t_start
    return ids, wall0, el, lag_max


def run(args, ts):
    n_events = int(args.rate * args.duration)
    # one guardian more than the events need: the warm-up event's, whose
    # user index maps past the last event and is left out of the figures
    wl = c.Workload(n_events, args.recipients,
                    population=c.Population(n_events * args.recipients + 1))
    raws = wl.raw_events()
    st = c.Stack(args.build, bench=False, record=True, keep=args.keep).start()
    try:
        r = st.client
        wl.pop.seed(r)
        d = st.daemon(connections=args.connections, overrides=c.parse_sets(args.set))
        d.start(wait_ready=True)
        # warm-up: one event so the connections exist and the token is accepted
        h.publish(r, c.message_event(10**9, [wl.pop.users[-1]]))
        h.wait_for(lambda: r.xlen(h.RECEIPTS) >= 1, 30, what="the warm-up receipt")
        warm_records = len(st.sandbox.records())
        pids = {"varseld": d.proc.pid, "redis": st.redis.proc.pid, "sandbox": st.sandbox.pid}
        sampler = c.Sampler(st.redis.port, pids, interval=0.1, limit_s=args.duration + 120)
        sampler.start()
        c.log(f"latency: publishing {n_events:,} events at {args.rate:,}/s for "
              f"{args.duration:g} s ({wl.total:,} notifications)")
        try:
            ids, wall0, pub_s, lag_max = publish_paced(r, raws, args.rate, args.duration,
                                                       args.tick_ms / 1000.0)
            total = len(ids) * args.recipients + 1
            h.wait_for(lambda: r.xlen(h.RECEIPTS) >= total, 120, interval=0.05,
                       what=lambda: f"{total} receipts (have {r.xlen(h.RECEIPTS)})")
        finally:
            samples = sampler.stop()
        cpu = c.proc_cpu_s(d.proc.pid)
        mem = c.proc_mem_kb(d.proc.pid)
        d.stop(timeout=60)
        rows = c.dump_stream(r, h.RECEIPTS, ["status", "at", "latency_ms", "user"])
        st.sandbox.stop()
        records = st.sandbox.accepted()[warm_records:]
    finally:
        st.stop()

    ev_ms = [c.id_ms(i) for i in ids]
    n_ev = len(ids)
    user_index = {u: k for k, u in enumerate(wl.pop.users)}
    tok_index = {t: k for k, t in enumerate(wl.pop.tokens)}

    def event_of_user(k):
        # users are handed out in order; event e has users e*R .. e*R+R-1
        return k // args.recipients

    acc_at = {}
    pub_acc = []
    for rec in records:
        k = tok_index.get(rec.get("token"))
        if k is None:
            continue
        e = event_of_user(k)
        if e < n_ev:
            pub_acc.append(rec["at"] - ev_ms[e])
            acc_at[k] = rec["at"]
    pub_set, acc_set, statuses = [], [], {}
    settle_times = []
    for row in rows:
        _, status, at, lat, user = row
        statuses[status] = statuses.get(status, 0) + 1
        k = user_index.get(user)
        if k is None or event_of_user(k) >= n_ev:
            continue  # the warm-up
        pub_set.append(int(lat))
        settle_times.append((int(at), int(lat)))
        if k in acc_at:
            acc_set.append(int(at) - acc_at[k])

    # per-second percentiles of publish → settled, by settle time
    t0_ms = wall0 * 1000.0
    per_s = {}
    for at, lat in settle_times:
        per_s.setdefault(int((at - t0_ms) // 1000), []).append(lat)
    p50_series, p99_series = [], []
    for sec in sorted(per_s):
        v = sorted(per_s[sec])
        p50_series.append((sec + 0.5, c.percentile(v, 50)))
        p99_series.append((sec + 0.5, c.percentile(v, 99)))

    result = {
        "target_events_per_s": args.rate, "duration_s": args.duration,
        "recipients_per_event": args.recipients, "connections": args.connections,
        "events_published": n_ev, "notifications": n_ev * args.recipients,
        "achieved_events_per_s": round(n_ev / pub_s, 1) if pub_s else None,
        "publisher_max_lag_s": round(lag_max, 4),
        "statuses": statuses, "sandbox_accepted": len(records),
        "publish_to_accepted_ms": pct(pub_acc),
        "publish_to_settled_ms": pct(pub_set),
        "accepted_to_settled_ms": pct(acc_set),
        "varseld_cpu_s": cpu, "varseld_cpu_pct_of_core": round(100.0 * cpu / (pub_s or 1), 1),
        "varseld_peak_rss_mb": round(mem.get("VmHWM", 0) / 1024.0, 1),
        "timeline": {"settled_p50_ms": p50_series, "settled_p99_ms": p99_series,
                     "receipts_per_s": c.count_rate_series(samples, wall0),
                     "varseld_cpu_pct": c.cpu_percent_series(samples, "varseld", wall0)},
    }
    chart = c.result_path(NAME, ts, "svg")
    svg.line_chart(chart, f"latency at {args.rate:,} events/s × {args.recipients} recipient(s)",
                   [{"ylabel": "publish → settled ms", "series": [("p50 per second", p50_series),
                                                                  ("p99 per second", p99_series)]},
                    {"ylabel": "receipts / s", "series": [("receipts/s", result["timeline"]["receipts_per_s"]),
                                                          ("target", float(args.rate * args.recipients))]},
                    {"ylabel": "varseld CPU %", "series": [("varseld", result["timeline"]["varseld_cpu_pct"])]}],
                   xlabel="seconds since publishing started",
                   subtitle="sandbox in normal mode (JWT checked, every answer recorded); "
                            f"{args.connections} connection(s)")
    result["chart"] = str(chart)
    a, b, s = (result["publish_to_accepted_ms"], result["publish_to_settled_ms"],
               result["accepted_to_settled_ms"])

    def row(name, d):
        return (f"  {name:<22} p50 {d.get('p50')} ms, p90 {d.get('p90')} ms, p99 {d.get('p99')} ms, "
                f"p99.9 {d.get('p99_9')} ms, max {d.get('max')} ms (n={d.get('n', 0):,})")
    lines = [
        f"latency: {n_ev:,} events × {args.recipients} recipient(s) at "
        f"{result['achieved_events_per_s']:,.0f} events/s (target {args.rate:,}) for "
        f"{pub_s:.1f} s, {args.connections} connection(s)",
        row("publish → accepted:", a),
        row("publish → settled:", b),
        row("accepted → settled:", s),
        f"  varseld CPU {cpu:.2f} s ({result['varseld_cpu_pct_of_core']}% of a core), peak RSS "
        f"{result['varseld_peak_rss_mb']} MB; statuses {statuses}",
    ]
    return result, lines
