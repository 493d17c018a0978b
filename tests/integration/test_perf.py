"""Guarantees the performance work (issue #7) must not bend: the settle
batch isolates a failing delivery, and the in-flight window bounds what is
expanded at once, whatever the bursts of settlements.
"""

import json
import re
import time

import harness as h
from harness import check, check_eq, wait_for


def register(r, users, prefix="p"):
    toks = {}
    regs = []
    for u in users:
        toks[u] = h.new_token()
        regs.append(h.device_register(u, f"{u}-phone", toks[u], locale="nb",
                                      occurred_at=h.rfc3339(-60)))
    h.publish_many(r, regs)
    wait_for(lambda: all(h.devices(r, h.TENANT, u) for u in users), 20,
             what="registry entries")
    return toks


def test_settle_batch_isolates_a_failing_delivery(ctx):
    """Two events settle in the same loop turns; one's status hash gets the
    wrong type while its pushes are in flight, so its settlements fail (and
    stay unacknowledged, kept for a retry), while the other's are written
    and acknowledged."""
    rs = ctx.redis_server()
    sb = ctx.sandbox(extra=["--latency-ms", "800"])
    d = ctx.daemon(rs, sb)
    r = ctx.client(rs)
    users = [f"u{i}" for i in range(6)]
    register(r, users)
    good = h.message_new(users[:3], thread="t-good", sender_name="A", school_name="S")
    bad = h.message_new(users[3:], thread="t-bad", sender_name="B", school_name="S")
    h.publish_many(r, [good, bad])
    # Both are expanded and sent; break the bad one's status hash before
    # the (slow) answers come back.
    d.wait_log(re.escape(bad["id"]) + r" message\.new .*3 recipients", timeout=20)
    time.sleep(0.3)
    r.call("SET", h.status_key(h.TENANT, bad["id"]), "not a hash")

    def statuses(ev):
        try:
            return h.status_of(r, h.TENANT, ev["id"])
        except h.RedisError:
            return None
    wait_for(lambda: len(statuses(good) or {}) == 3, 30, what="the good event's statuses")
    check_eq({f"{u}:{u}-phone": "sent" for u in users[:3]}, statuses(good), "good statuses")
    d.wait_log(r"writing the outcome of .*" + re.escape(bad["id"]) + r".* failed", timeout=20)
    # The good event is acknowledged, the bad one is not.
    wait_for(lambda: r.xpending()["count"] == 1, 20,
             what=lambda: f"one entry left pending (now {r.xpending()})")
    rec = [x for x in h.receipts(r) if x.get("event") == good["id"]]
    check_eq(3, len(rec), "receipts of the good event")
    for x in rec:
        check_eq("sent", x.get("status"), "receipt status")
        for f in ("tenant", "user", "device", "platform", "app", "attempt", "provider_id",
                  "http_status", "reason", "latency_ms", "at"):
            check(f in x, f"receipt field {f} in {x}")
    # Once the key is repaired, a restart replays the bad event to the end.
    r.call("DEL", h.status_key(h.TENANT, bad["id"]))
    d.stop()
    d.start()
    wait_for(lambda: r.xpending()["count"] == 0, 30,
             what=lambda: f"the bad event acknowledged after the restart ({r.xpending()})")
    check_eq({f"{u}:{u}-phone": "sent" for u in users[3:]}, statuses(bad), "bad statuses")


def test_window_bounds_what_is_expanded(ctx):
    """Slow answers and a small window: deliveries created but not settled
    never exceed the window (recipients being looked up count too), even
    when a batch of settlements frees room for every waiting event at
    once."""
    window = 60
    rs = ctx.redis_server()
    sb = ctx.sandbox(extra=["--latency-ms", "150"])
    d = ctx.daemon(rs, sb, overrides={"delivery": {"inflight_window": str(window)}},
                   log_level="info")
    r = ctx.client(rs)
    users = [f"g{i:03d}" for i in range(120)]
    register(r, users)
    evs = [h.message_new(users, thread=f"t{i}", sender_name="A", school_name="S")
           for i in range(8)]
    h.publish_many(r, evs)
    peak = 0.0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        peak = max(peak, d.metric("varsel_deliveries_inflight"))
        if r.xpending()["count"] == 0 and len(h.receipts(r)) >= len(evs) * len(users):
            break
        time.sleep(0.02)
    check_eq(len(evs) * len(users), len(h.receipts(r)), "receipts")
    ctx.note(f"peak in flight {peak:.0f} with a window of {window}")
    check(peak <= window, f"in flight peaked at {peak:.0f}, over the window of {window}")


def test_receipt_opened_goes_through_the_settle_script(ctx):
    """receipt.opened goes through the settle batch like a delivery: the receipt
    (status opened, attempt 0, empty provider fields) and the status field
    are written, and the entry is acknowledged."""
    rs, sb, d, r = ctx.stack()
    users = ["o1"]
    register(r, users)
    ev = h.message_new(users, thread="t-open", sender_name="A", school_name="S")
    h.publish(r, ev)
    wait_for(lambda: h.status_of(r, h.TENANT, ev["id"]).get("o1:o1-phone") == "sent", 20,
             what="the delivery settled")
    opened = h.event("receipt.opened", event=ev["id"], user="o1", device="o1-phone")
    h.publish(r, opened)
    wait_for(lambda: h.status_of(r, h.TENANT, ev["id"]).get("o1:o1-phone") == "opened", 20,
             what="the status set to opened")
    wait_for(lambda: r.xpending()["count"] == 0, 20, what="both entries acknowledged")
    rec = [x for x in h.receipts(r) if x.get("status") == "opened"]
    check_eq(1, len(rec), "opened receipts")
    x = rec[0]
    for f, want in (("event", ev["id"]), ("tenant", h.TENANT), ("user", "o1"),
                    ("device", "o1-phone"), ("platform", ""), ("app", ""), ("attempt", "0"),
                    ("provider_id", ""), ("http_status", "0"), ("reason", "")):
        check_eq(want, x.get(f), f"opened receipt {f}")
    check(int(x.get("latency_ms", "-1")) >= 0 and int(x.get("at", "0")) > 0,
          f"latency_ms and at in {x}")
    ttl = r.call("TTL", h.status_key(h.TENANT, ev["id"]))
    check(ttl > 0, f"status hash has a TTL ({ttl})")


def test_full_window_refills_in_large_slices(ctx):
    """A backlog larger than the window: once the window is full, a bulk
    event waits for a low-water mark of free room (an eighth of the
    window) instead of looking up one recipient per freed slot, so the
    registry is read in few, large pipelines."""
    window = 200
    rs = ctx.redis_server()
    sb = ctx.sandbox()
    d = ctx.daemon(rs, sb, overrides={"delivery": {"inflight_window": str(window)}})
    r = ctx.client(rs)
    users = [f"g{i:04d}" for i in range(400)]
    register(r, users)
    evs = [h.message_new(users, thread=f"t{i}", sender_name="A", school_name="S")
           for i in range(10)]
    h.publish_many(r, evs)
    total = len(evs) * len(users)
    wait_for(lambda: r.xpending()["count"] == 0 and r.xlen(h.RECEIPTS) >= total, 120,
             what="every delivery settled")
    lookups = d.metric("varsel_device_lookups_total")
    batches = d.metric("varsel_device_lookup_batches_total")
    check_eq(total, int(lookups or 0), "recipients looked up")
    mean = lookups / batches
    ctx.note(f"{total} recipients in {batches:.0f} lookup pipelines ({mean:.1f} per pipeline)")
    check(mean >= window / 8, f"only {mean:.1f} recipients per lookup pipeline "
                              f"(low-water mark {window // 8})")
