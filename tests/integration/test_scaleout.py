"""Scale-out (issue #8): several varseld processes on one consumer group.

Three processes share one stream while the provider answers 2 % of the
pushes with 503 (so the durable retry schedule is busy too) and takes
400 ms per answer (so each process always has entries in the works).
One of them is killed with SIGKILL mid-run: the others must finish its
pending entries within claim_idle_ms plus a margin. It is then started
again under the same name and takes its share again.

Afterwards, from the receipts stream: every delivery has exactly one final
receipt, no attempt of a delivery has two receipts (no retry ran twice), and
no XACK found its entry already acknowledged (no event acked twice). Each
process settled at least 20 % of the deliveries (from /metrics, scraped
while it ran).

The CI tier runs 30,000 deliveries (published over 24 s); the long tier
100,000 over a minute.

Also here: a consumer gone for good leaves the group once nothing is pending
for it, never before; and a second process configured with a name already
in use waits instead of sharing it.
"""

import json
import re
import threading
import time
import urllib.request

import harness as h
from harness import check, check_eq, wait_for

FINAL = ("sent", "invalid_token", "failed", "expired")
METRIC_RE = re.compile(r'^varsel_deliveries_total\{([^}]*)\} ([0-9.e+]+)$')


def seed_devices(r, users):
    """One iPhone per user, written straight into the registry layout
    (docs/redis.md), so the run measures message delivery only."""
    toks = {}
    cmds = []
    at = h.now_ms()
    for u in users:
        tok = h.new_token()
        toks[u] = tok
        dev = json.dumps({"platform": "ios", "token": tok, "app": h.APP, "locale": "nb",
                          "environment": "production", "updated_at": at},
                         separators=(",", ":"))
        owner = json.dumps({"tenant": h.TENANT, "user": u, "device": "phone"},
                           separators=(",", ":"))
        cmds.append(["HSET", h.devices_key(h.TENANT, u), "phone", dev])
        cmds.append(["SET", h.token_key(h.APP, tok), owner])
    for i in range(0, len(cmds), 2000):
        for rep in r.pipeline(cmds[i:i + 2000]):
            if isinstance(rep, h.RedisError):
                raise rep
    return toks


def settled_count(d):
    """Deliveries this process settled with a final outcome (its /metrics),
    or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{d.admin_port}/metrics",
                                    timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    n = 0.0
    for line in text.splitlines():
        m = METRIC_RE.match(line)
        if m and any(f'outcome="{o}"' in m.group(1) for o in FINAL):
            n += float(m.group(2))
    return int(n)


class Shares:
    """Per consumer name: final outcomes settled, summed over its runs."""

    def __init__(self, daemons):
        self.daemons = daemons
        self.done = {d.consumer: 0 for d in daemons}   # earlier runs
        self.last = {d.consumer: 0 for d in daemons}   # this run, last scrape

    def scrape(self):
        for d in self.daemons:
            if d.alive():
                v = settled_count(d)
                if v is not None:
                    self.last[d.consumer] = v

    def restarted(self, d):
        self.done[d.consumer] += self.last[d.consumer]
        self.last[d.consumer] = 0

    def totals(self):
        return {c: self.done[c] + self.last[c] for c in self.done}


class Publisher(threading.Thread):
    """XADDs the events at a steady rate from its own connection, so the
    work arrives over the whole run (the kill and the restart happen while
    the stream is busy, and each process takes its share as it arrives)."""

    def __init__(self, rs, evs, seconds):
        super().__init__(daemon=True)
        self.rs, self.evs, self.seconds = rs, evs, seconds
        self.ids = []
        self.error = None

    def run(self):
        try:
            with self.rs.client() as r:
                # Small bursts every 50 ms: each goes to the process whose
                # blocking read waited longest, so the work spreads evenly.
                ticks = max(1, int(self.seconds * 20))
                per = -(-len(self.evs) // ticks)
                t0 = time.monotonic()
                for k in range(0, len(self.evs), per):
                    self.ids += h.publish_many(r, self.evs[k:k + per])
                    delay = t0 + (k // per + 1) * 0.05 - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


def scaleout(ctx, n_events, per_event, publish_s=20.0, kill_at=0.25, claim_idle_ms=1500,
             margin_s=10.0, window=300):
    rs = ctx.redis_server()
    sb = ctx.sandbox(extra=["--fault-rate", "503:2", "--seed", "5", "--latency-ms", "400"])
    r = ctx.client(rs)
    total = n_events * per_event
    users = [f"s{i}" for i in range(total)]
    toks = seed_devices(r, users)
    overrides = {
        "redis": {"claim_idle_ms": str(claim_idle_ms), "batch_size": "20", "block_ms": "500"},
        "delivery": {"inflight_window": str(window), "retry_base_ms": "100",
                     "retry_max_delay_ms": "400", "retry_lease_ms": "3000"},
        "app demo": {"retry_max_attempts": "30"},
    }
    ds = [ctx.daemon(rs, sb, log_level="info", consumer=f"worker-{i + 1}", overrides=overrides)
          for i in range(3)]
    shares = Shares(ds)
    evs = [h.message_new(users[i * per_event:(i + 1) * per_event], f"t{i}", "Lærer", "Skolen")
           for i in range(n_events)]
    ev_by_id = {ev["id"]: ev for ev in evs}
    t0 = time.monotonic()
    pub = Publisher(rs, evs, publish_s)
    pub.start()

    # Kill one process while events keep coming.
    victim = ds[0]
    wait_for(lambda: (shares.scrape() or True) and time.monotonic() - t0 >= kill_at * publish_s,
             publish_s, interval=0.2, what="the moment of the kill")
    shares.scrape()

    def victim_pending():
        pend = r.call("XPENDING", h.STREAM, h.GROUP, "-", "+", 100000, victim.consumer)
        return {p[0] for p in pend}
    # Answers take 400 ms, so it has entries pending nearly all the time.
    wait_for(victim_pending, 10, interval=0.02, what=f"{victim.consumer} to have entries pending")
    victim.kill9()
    # What it had at the moment of the kill (nobody else changes its list).
    victim_ids = victim_pending()
    # Their events (read now: once acknowledged they may be trimmed away).
    victim_evs = [json.loads(r.xrange(h.STREAM, eid, eid)[0][1]["event"])["id"]
                  for eid in victim_ids]
    t_kill = time.monotonic()
    shares.restarted(victim)
    check(victim_ids, "the process killed had entries pending")

    def victims_left():
        shares.scrape()
        pending = {p[0] for p in r.call("XPENDING", h.STREAM, h.GROUP, "-", "+", 100000)}
        return victim_ids & pending
    wait_for(lambda: not victims_left(), claim_idle_ms / 1000 + margin_s, interval=0.2,
             what=lambda: f"the killed process's {len(victim_ids)} pending entries finished "
             f"by the others ({len(victims_left())} left)")
    takeover_s = time.monotonic() - t_kill
    # Their events have every delivery settled.
    for ev_id in victim_evs:
        ev = ev_by_id[ev_id]
        st = h.status_of(r, h.TENANT, ev["id"])
        check_eq(per_event, sum(1 for v in st.values() if v in FINAL + ("retrying",)),
                 f"settled deliveries of {ev['id']} (taken over)")
    # Same name, new process (its name lease ran out with the old one): it
    # joins again and takes its share.
    victim.start()

    pub.join(publish_s + 60)
    check(pub.error is None, f"publisher: {pub.error}")
    check_eq(n_events, len(pub.ids), "events published")

    def all_final():
        shares.scrape()
        return r.xinfo_groups()[0].get("lag") == 0 and r.xpending()["count"] == 0 and \
            r.call("ZCARD", h.PREFIX + "retry") + r.call("ZCARD", h.PREFIX + "retry:lease") == 0
    wait_for(all_final, 120, interval=0.5,
             what=lambda: f"all read and acked, retries done: {r.xpending()['count']} pending")
    shares.scrape()
    elapsed = time.monotonic() - t0

    # Receipts: one final receipt per delivery, no attempt settled twice.
    rcpts = h.receipts(r)
    finals, attempts = {}, {}
    retries = 0
    for x in rcpts:
        key = (x["event"], x["user"], x["device"])
        akey = key + (x["attempt"],)
        attempts[akey] = attempts.get(akey, 0) + 1
        if x["status"] in FINAL:
            finals[key] = finals.get(key, 0) + 1
        elif x["status"] == "retrying":
            retries += 1
    twice = [k for k, n in attempts.items() if n > 1]
    check(not twice, f"{len(twice)} attempts have two receipts (sent twice: a delivery "
          f"or a retry ran twice), "
          f"e.g. {twice[:3]}")
    check_eq(total, len(finals), "deliveries with a final receipt")
    dup_final = [k for k, n in finals.items() if n > 1]
    check(not dup_final, f"{len(dup_final)} deliveries settled twice, e.g. {dup_final[:3]}")
    check(retries > 0, "the 503s made some deliveries go through the retry schedule")
    statuses = {}
    cmds = [["HGETALL", h.status_key(h.TENANT, ev["id"])] for ev in evs]
    for i in range(0, len(cmds), 1000):
        for rep in r.pipeline(cmds[i:i + 1000]):
            for k, v in zip(rep[0::2], rep[1::2]):
                statuses[k] = v
    check_eq(total, sum(1 for v in statuses.values() if v == "sent"), "deliveries sent")

    # No event acked twice: no XACK found its entry already acknowledged.
    for d in ds:
        again = [l for l in d.log_lines() if "was no longer pending" in l]
        check(not again, f"{d.name}: an XACK found its entry already acknowledged: {again[:2]}")

    # Every token reached the provider; duplicates only from the kill.
    accepted = {}
    for x in sb.accepted():
        accepted[x["token"]] = accepted.get(x["token"], 0) + 1
    check(set(toks.values()) <= set(accepted), "every device got its notification")
    dups = sum(n - 1 for n in accepted.values())
    check(dups <= window, f"{dups} duplicates: more than the killed process's window ({window})")

    tot = shares.totals()
    s = sum(tot.values())
    share = {c: n / s for c, n in tot.items()}
    for c, f in share.items():
        check(f >= 0.20, f"{c} settled {f:.1%} of the deliveries (< 20 %): {tot}")
    ctx.note(f"{total} deliveries by 3 processes in {elapsed:.1f}s, {retries} retries; "
             f"shares " + ", ".join(f"{c} {f:.1%}" for c, f in sorted(share.items())))
    ctx.note(f"kill -9 of {victim.consumer} with {len(victim_ids)} entries pending: taken "
             f"over and finished in {takeover_s:.1f}s (claim_idle_ms {claim_idle_ms}); "
             f"{dups} duplicates")


@h.timeout(150)
def test_scaleout_three_processes(ctx):
    """30,000 deliveries (3,000 events x 10 guardians) published over 24 s."""
    scaleout(ctx, n_events=3000, per_event=10, publish_s=24.0)


@h.long_test
@h.timeout(400)
def test_scaleout_three_processes_100k(ctx):
    """The same at 100,000 deliveries over a minute."""
    scaleout(ctx, n_events=10000, per_event=10, publish_s=60.0)


def ghost_and_backlog(ctx, per_event, n_ghost, backlog, window, batch, claim_idle_ms):
    """A dead consumer ("ghost") holds |n_ghost| events of |per_event|
    recipients; behind them |backlog| new events; answers take 300 ms. Then
    one process with this window, batch_size and claim_idle_ms. Returns
    (redis client, daemon, the ghost's events)."""
    rs = ctx.redis_server()
    sb = ctx.sandbox(extra=["--latency-ms", "300"])
    r = ctx.client(rs)
    users = [f"b{i}" for i in range(per_event * (backlog + n_ghost))]
    seed_devices(r, users)
    r.call("XGROUP", "CREATE", h.STREAM, h.GROUP, "0", "MKSTREAM")
    evs = [h.message_new(users[i * per_event:(i + 1) * per_event], f"t{i}", "A", "B")
           for i in range(n_ghost + backlog)]
    h.publish_many(r, evs[:n_ghost])
    r.call("XREADGROUP", "GROUP", h.GROUP, "ghost", "COUNT", str(n_ghost), "STREAMS",
           h.STREAM, ">")
    h.publish_many(r, evs[n_ghost:])
    d = ctx.daemon(rs, sb, overrides={
        "redis": {"claim_idle_ms": str(claim_idle_ms), "batch_size": str(batch)},
        "delivery": {"inflight_window": str(window)}})
    return r, d, evs[:n_ghost]


def ghost_behind_backlog(ctx, per_event, n_ghost, backlog, window, batch):
    """ghost_and_backlog: the seconds until the ghost's deliveries are
    settled, checked to come long before the backlog is done."""
    claim_idle_ms = 1000
    r, d, ghost = ghost_and_backlog(ctx, per_event, n_ghost, backlog, window, batch,
                                    claim_idle_ms)
    t0 = time.monotonic()

    def ghost_done():
        cmds = [["HLEN", h.status_key(h.TENANT, ev["id"])] for ev in ghost]
        return sum(r.pipeline(cmds)) == per_event * n_ghost
    wait_for(ghost_done, 60, interval=0.05, what="the ghost's deliveries settled")
    took = time.monotonic() - t0
    lag = r.xinfo_groups()[0].get("lag")
    ctx.note(f"the ghost's {per_event * n_ghost} deliveries settled {took:.1f}s after the "
             f"start (claim_idle_ms {claim_idle_ms}), {lag} of {backlog} backlog entries "
             f"still unread")
    # Before: a take-over waited for room the backlog never left (a full
    # window; or a full bound on jobs, taken by the next read each time),
    # and the ghost's entries came after most of the backlog.
    check(lag is not None and lag >= backlog // 4,
          f"the ghost's deliveries settled with only {lag} of {backlog} backlog entries "
          f"unread: the take-over waited for the backlog")
    check(took < claim_idle_ms / 1000 + 10,
          f"took over {took:.1f}s after the start, more than claim_idle_ms + 10 s")
    check(any("took over" in l for l in d.log_lines()), "take-over logged")


def test_busy_process_takes_over_before_reading_new(ctx):
    """A process busy to its window still takes over a dead consumer's
    entries within about claim_idle_ms: a take-over that is due goes before
    the next read of new entries, instead of waiting for a moment with room
    to spare (which a backlog never leaves)."""
    ghost_behind_backlog(ctx, per_event=10, n_ghost=3, backlog=300, window=50, batch=20)


def test_take_over_when_the_bound_on_jobs_is_full(ctx):
    """The same when the bound on jobs held (4 x batch_size), not the
    window, is what a backlog of one-recipient events keeps full: new reads
    wait while a take-over is due, and a take-over goes on until it has
    scanned every pending entry, so the dead consumer's 40 entries do not
    trickle in one per timer tick."""
    ghost_behind_backlog(ctx, per_event=1, n_ghost=40, backlog=1500, window=500, batch=5)


def test_take_over_stays_within_the_bound_on_jobs(ctx):
    """Taking over does not wait for window room, so the bound on entries
    worked on at once (4 x batch_size, for memory) is what holds it: while a
    dead consumer's 70 entries are taken over (a backlog of new ones behind
    them, a window of 3, slow answers) no more than 4 x batch_size events
    are ever in progress."""
    batch = 7
    r, d, _ = ghost_and_backlog(ctx, per_event=1, n_ghost=70, backlog=40, window=3,
                                batch=batch, claim_idle_ms=1000)

    def ghost_pending():
        return int(next((c["pending"] for c in r.xinfo_consumers() if c["name"] == "ghost"), 0))
    peak = 0
    until = time.monotonic() + 60
    while time.monotonic() < until:
        peak = max(peak, int(d.metric("varsel_events_in_progress")))
        if ghost_pending() == 0:
            # All taken over: watch a little longer, then stop.
            until = min(until, time.monotonic() + 1.0)
        time.sleep(0.02)
    check_eq(0, ghost_pending(), "the dead consumer's entries all taken over")
    ctx.note(f"peak {peak} events in progress (bound {4 * batch})")
    check(peak <= 4 * batch, f"{peak} events in progress, over the bound of {4 * batch}")
    check(peak >= 3 * batch, f"only {peak} in progress: the bound was never approached")


def test_gone_consumers_leave_the_group(ctx):
    """[redis] consumer_gone_ms: a consumer with nothing pending, idle that
    long and with no live process under its name is removed from the group;
    one with pending entries stays until they were taken over and finished;
    one whose name a live process holds stays."""
    rs = ctx.redis_server()
    sb = ctx.sandbox()
    r = ctx.client(rs)
    toks = seed_devices(r, ["g1", "g2", "g3"])
    r.call("XGROUP", "CREATE", h.STREAM, h.GROUP, "0", "MKSTREAM")
    # "ghost" read three entries and died without acknowledging them.
    evs = [h.message_new([u], f"t-{u}", "A", "B") for u in ("g1", "g2", "g3")]
    ids = h.publish_many(r, evs)
    r.call("XREADGROUP", "GROUP", h.GROUP, "ghost", "COUNT", "10", "STREAMS", h.STREAM, ">")
    # "idle" never read anything; "held" is idle too but a live process
    # holds its name.
    r.call("XGROUP", "CREATECONSUMER", h.STREAM, h.GROUP, "idle")
    r.call("XGROUP", "CREATECONSUMER", h.STREAM, h.GROUP, "held")
    r.call("SET", f"{h.PREFIX}consumer:{h.GROUP}:held", "otherhost 1 x", "PX", "60000")
    d = ctx.daemon(rs, sb, overrides={"redis": {"claim_idle_ms": "1000",
                                                "consumer_gone_ms": "2500"}})
    names = lambda: {c["name"] for c in r.xinfo_consumers()}  # noqa: E731
    # The ghost's entries are taken over and delivered; it stays while any
    # of them is pending for it.
    wait_for(lambda: all(h.status_of(r, h.TENANT, ev["id"]).get(f"{ev['recipients'][0]}:phone")
                         == "sent" for ev in evs), 20, what="the ghost's entries delivered")
    wait_for(lambda: r.xpending()["count"] == 0, 20, what="XPENDING empty")
    wait_for(lambda: "ghost" not in names() and "idle" not in names(), 20,
             what=lambda: f"ghost and idle removed, consumers now {sorted(names())}")
    check("held" in names(), "a consumer whose name is held by a live process stays")
    check(d.consumer in names(), "the live daemon stays")
    removed = [l for l in d.log_lines() if "removed consumer" in l]
    check(any("ghost" in l for l in removed) and any("idle" in l for l in removed),
          f"removals logged: {removed}")
    check(set(toks.values()) <= {x["token"] for x in sb.accepted()}, "all delivered")
    del ids


def test_consumer_name_in_use_waits(ctx):
    """Two processes configured with one [redis] consumer: the second waits
    (and says why) until the first stops; a clean stop frees the name at
    once, so the second takes over without waiting for the lease to end."""
    rs = ctx.redis_server()
    sb = ctx.sandbox()
    r = ctx.client(rs)
    seed_devices(r, ["n1"])
    # A long claim_idle_ms: the lease lasts that long, so only a released
    # name lets the second process start quickly.
    ov = {"redis": {"claim_idle_ms": "60000"}}
    a = ctx.daemon(rs, sb, consumer="same", overrides=ov)
    b = ctx.daemon(rs, sb, consumer="same", overrides=ov, start=False)
    b.start(wait_ready=False)
    b.wait_log(r"consumer name same is in use by another process", 20)
    ev = h.message_new(["n1"], "t-n1", "A", "B")
    h.publish(r, ev)
    wait_for(lambda: h.status_of(r, h.TENANT, ev["id"]).get("n1:phone") == "sent", 20,
             what="delivered by the first process")
    check(not any("event oslo/" + ev["id"] in l for l in b.log_lines()),
          "the waiting process read nothing")
    t = time.monotonic()
    a.stop()
    ev2 = h.message_new(["n1"], "t-n1b", "A", "B")
    h.publish(r, ev2)
    wait_for(lambda: h.status_of(r, h.TENANT, ev2["id"]).get("n1:phone") == "sent", 20,
             what="delivered by the second process after the first stopped")
    check(time.monotonic() - t < 15, "the second did not wait for the 60 s lease")
    check(any("event oslo/" + ev2["id"] in l for l in b.log_lines()),
          "the second process delivered it")
