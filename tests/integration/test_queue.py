"""The events stream under stress (issue #4): trimming, a Redis restart with
append-only persistence, and big events expanded a slice at a time."""

import time

import harness as h
from harness import check, check_eq, wait_for


def test_stream_trimmed_below_what_groups_need(ctx):
    rs = ctx.redis_server()
    sb = ctx.sandbox()
    d = ctx.daemon(rs, sb, overrides={"redis": {"trim_interval_ms": "200"}})
    r = ctx.client(rs)
    # Events for users without devices settle at once (nothing to send).
    evs = [h.message_new([f"nobody{i}"], "t", "A", "B") for i in range(3000)]
    h.publish_many(r, evs)
    wait_for(lambda: r.xinfo_groups()[0].get("lag") == 0 and r.xpending()["count"] == 0,
             30, what=lambda: f"all read and acked: {r.xinfo_groups()}")
    wait_for(lambda: r.xlen(h.STREAM) < 500, 10,
             what=lambda: f"the stream trimmed (XLEN {r.xlen(h.STREAM)})")
    ctx.note(f"XLEN after trimming: {r.xlen(h.STREAM)} of 3000")


def test_trim_respects_other_groups(ctx):
    rs = ctx.redis_server()
    r = ctx.client(rs)
    # Another consumer group that has read nothing yet: nothing may go.
    r.call("XGROUP", "CREATE", h.STREAM, "analytics", "0", "MKSTREAM")
    sb = ctx.sandbox()
    d = ctx.daemon(rs, sb, overrides={"redis": {"trim_interval_ms": "200"}})
    evs = [h.message_new([f"nobody{i}"], "t", "A", "B") for i in range(1000)]
    h.publish_many(r, evs)
    wait_for(lambda: r.xpending()["count"] == 0 and
             any(g["name"] == "varsel" and g.get("last-delivered-id") != "0-0"
                 for g in r.xinfo_groups()), 30, what="all acked")
    time.sleep(1.0)
    check_eq(1000, r.xlen(h.STREAM), "entries another group still needs are kept")


def test_redis_restart_loses_nothing(ctx):
    """Redis with appendonly + appendfsync always is restarted mid-run:
    varseld reconnects, writes the outcomes it holds, and every delivery
    ends with a final receipt; nothing stays pending."""
    rs = ctx.redis_server(appendonly=True, extra=["--appendfsync", "always"])
    # Answers take 1.5 s, so Redis goes away while deliveries are in flight
    # and their outcomes must wait in varseld until it is back.
    sb = ctx.sandbox(extra=["--latency-ms", "1500"])
    d = ctx.daemon(rs, sb)
    r = ctx.client(rs)
    users = [f"r{i}" for i in range(400)]
    toks = {u: h.new_token() for u in users}
    h.publish_many(r, [h.device_register(u, "phone", toks[u]) for u in users])
    wait_for(lambda: all(h.devices(r, h.TENANT, u) for u in users[-5:]), 20,
             what="registrations")
    evs = [h.message_new(users[i * 2:(i + 1) * 2], f"t{i}", "A", "B") for i in range(200)]
    h.publish_many(r, evs)
    wait_for(lambda: "deliveries started" in d.log_text() or "attempt 1" in d.log_text(),
             30, what="deliveries under way")
    time.sleep(0.3)
    port = rs.port
    rs.stop()
    time.sleep(2.5)
    rs.start(port=port)
    r = ctx.client(rs)

    def settled():
        n = 0
        for ev in evs:
            st = h.status_of(r, h.TENANT, ev["id"])
            n += sum(1 for v in st.values() if v == "sent")
        return n
    wait_for(lambda: settled() == 400, 60, what=lambda: f"400 sent, have {settled()}")
    wait_for(lambda: r.xpending()["count"] == 0, 30, what="XPENDING empty")
    accepted = [x["token"] for x in sb.accepted()]
    check(set(accepted) >= set(toks.values()), "every token reached the provider")
    dups = len(accepted) - len(set(accepted))
    ctx.note(f"Redis restarted mid-run (400 deliveries): {dups} duplicates")
    check(d.alive(), "varseld survived the Redis restart")
    check("kept while Redis was unavailable" in d.log_text(),
          "some outcomes arrived while Redis was down and were written later")


def test_big_event_expanded_in_slices(ctx):
    """One message to 3,000 guardians with a window of 100: expanded a slice
    at a time and all delivered."""
    rs = ctx.redis_server()
    sb = ctx.sandbox()
    d = ctx.daemon(rs, sb, log_level="info",
                   overrides={"delivery": {"inflight_window": "100"}})
    r = ctx.client(rs)
    users = [f"b{i}" for i in range(3000)]
    h.publish_many(r, [h.device_register(u, "phone", h.new_token()) for u in users])
    wait_for(lambda: h.devices(r, h.TENANT, users[-1]), 30, what="registrations")
    ev = h.message_new(users, "t-big", "Rektor", "Skolen")
    h.publish(r, ev)
    wait_for(lambda: len(h.status_of(r, h.TENANT, ev["id"])) == 3000, 60,
             what=lambda: f"3000 statuses, have {len(h.status_of(r, h.TENANT, ev['id']))}")
    check_eq({"sent"}, set(h.status_of(r, h.TENANT, ev["id"]).values()), "all sent")
    wait_for(lambda: r.xpending()["count"] == 0, 30, what="XPENDING empty")


def test_waiting_event_goes_on_after_a_slice_that_sent_nothing(ctx):
    """A window of 2: a replayed event whose deliveries are all settled
    holds the window only while its lookups are out. The event waiting
    behind it must go on when they return, although no delivery ended
    (no delivery was started) to wake it."""
    rs = ctx.redis_server()
    sb = ctx.sandbox()
    r = ctx.client(rs)
    users = [f"w{i}" for i in range(12)]
    d = ctx.daemon(rs, sb, log_level="info",
                   overrides={"delivery": {"inflight_window": "2"}})
    h.publish_many(r, [h.device_register(u, "phone", h.new_token()) for u in users])
    wait_for(lambda: h.devices(r, h.TENANT, users[-1]), 30, what="registrations")
    first = h.message_new(users, "t-1", "Rektor", "Skolen")
    h.publish(r, first)
    wait_for(lambda: len(h.status_of(r, h.TENANT, first["id"])) == 12, 30, what="first sent")
    for _ in range(3):
        # The same event again (all settled: nothing is sent), then a new one.
        h.publish(r, first)
        nxt = h.message_new(users, "t-2", "Rektor", "Skolen")
        h.publish(r, nxt)
        wait_for(lambda: len(h.status_of(r, h.TENANT, nxt["id"])) == 12, 20,
                 what=lambda: f"the event behind the replay delivered "
                              f"({len(h.status_of(r, h.TENANT, nxt['id']))} of 12)")
    wait_for(lambda: r.xpending()["count"] == 0, 20, what="XPENDING empty")
    check_eq(12 * 4, len(sb.records()), "one delivery per guardian and new event")


@h.long_test
@h.timeout(240)
def test_hung_redis_is_detected(ctx):
    """Redis stops answering (SIGSTOP) without closing connections: varseld
    notices the overdue replies, reconnects once Redis answers again, and
    every delivery completes."""
    import signal as sig
    rs = ctx.redis_server()
    sb = ctx.sandbox(extra=["--latency-ms", "500"])
    d = ctx.daemon(rs, sb, overrides={"redis": {"claim_idle_ms": "3000"}})
    r = ctx.client(rs)
    users = [f"hz{i}" for i in range(50)]
    h.publish_many(r, [h.device_register(u, "phone", h.new_token()) for u in users])
    wait_for(lambda: h.devices(r, h.TENANT, users[-1]), 20, what="registrations")
    ev = h.message_new(users, "t-hung", "A", "B")
    h.publish(r, ev)
    time.sleep(0.2)
    rs.proc.send_signal(sig.SIGSTOP)
    try:
        wait_for(lambda: "overdue" in d.log_text(), 60, interval=1.0,
                 what="varseld to notice Redis hanging")
    finally:
        rs.proc.send_signal(sig.SIGCONT)
    r = ctx.client(rs)
    wait_for(lambda: list(h.status_of(r, h.TENANT, ev["id"]).values()).count("sent") == 50,
             60, what="all 50 sent after Redis woke up")
    wait_for(lambda: r.xpending()["count"] == 0, 30, what="XPENDING empty")


def test_registry_updates_apply_in_occurred_at_order(ctx):
    """Replays and several daemons can reorder device events: an older
    update never overwrites a newer one, and a logout is not undone by an
    older register arriving late."""
    rs = ctx.redis_server()
    sb = ctx.sandbox()
    d = ctx.daemon(rs, sb)
    r = ctx.client(rs)
    ta, tb, tc = h.new_token(), h.new_token(), h.new_token()

    def settle(evs):
        h.publish_many(r, evs)
        wait_for(lambda: r.xpending()["count"] == 0 and
                 r.xinfo_groups()[0].get("lag") == 0, 20, what="events applied")

    settle([h.device_register("o1", "d1", ta, occurred_at=h.rfc3339(-10)),
            h.device_register("o1", "d1", tb, occurred_at=h.rfc3339(-20))])
    check_eq(ta, h.devices(r, h.TENANT, "o1")["d1"]["token"], "the newer register wins")
    check(h.token_owner(r, h.APP, tb) is None, "the stale token was not indexed")
    settle([h.device_unregister("o1", "d1", occurred_at=h.rfc3339(-30))])
    check("d1" in h.devices(r, h.TENANT, "o1"), "an older logout changes nothing")
    settle([h.device_unregister("o1", "d1", occurred_at=h.rfc3339(-5)),
            h.device_register("o1", "d1", tc, occurred_at=h.rfc3339(-7))])
    check("d1" not in h.devices(r, h.TENANT, "o1"),
          "a register older than the logout does not bring the device back")
    check(h.token_owner(r, h.APP, ta) is None, "the logged-out token left the index")
    settle([h.device_register("o1", "d1", tc, occurred_at=h.rfc3339(-1))])
    check_eq(tc, h.devices(r, h.TENANT, "o1")["d1"]["token"], "a newer register does")


def test_poison_entry_is_dead_lettered_not_replayed_forever(ctx):
    """An entry of this consumer that was delivered 20+ times without being
    settled (a daemon that crashes on it would loop forever) goes to the
    dead letters with code "poison"; the entries beside it are delivered."""
    rs = ctx.redis_server()
    sb = ctx.sandbox()
    d = ctx.daemon(rs, sb)
    r = ctx.client(rs)
    tok = h.new_token()
    h.publish(r, h.device_register("p1", "phone", tok))
    wait_for(lambda: h.devices(r, h.TENANT, "p1"), 20, what="registration")
    d.stop()
    bad = h.message_new(["p1"], "t-bad", "A", "B")
    good = h.message_new(["p1"], "t-good", "A", "B")
    bad_id, good_id = h.publish_many(r, [bad, good])
    # Make both pending for this consumer, as if it had read them and died,
    # and give the first a long history of deliveries.
    r.call("XREADGROUP", "GROUP", h.GROUP, d.consumer, "COUNT", "10", "STREAMS", h.STREAM, ">")
    r.call("XCLAIM", h.STREAM, h.GROUP, d.consumer, "0", bad_id, "RETRYCOUNT", "25")
    counts = {e[0]: e[3] for e in r.call("XPENDING", h.STREAM, h.GROUP, "-", "+", "10")}
    check(counts.get(bad_id, 0) >= 20, f"set-up: delivery count {counts}")
    d.start()
    wait_for(lambda: any(x.get("source_id") == bad_id for x in h.dead_letters(r)), 20,
             what="the poison entry in the dead letters")
    dl = [x for x in h.dead_letters(r) if x.get("source_id") == bad_id][0]
    check_eq("poison", dl.get("code"), "dead-letter code")
    check("delivered 20 times" in dl.get("reason", ""), f"reason: {dl.get('reason')!r}")
    check("event" in dl, "the dead letter keeps the event for a later replay")
    wait_for(lambda: h.status_of(r, h.TENANT, good["id"]).get("p1:phone") == "sent", 20,
             what="the entry beside it delivered")
    check_eq({}, h.status_of(r, h.TENANT, bad["id"]), "the poison entry was not delivered")
    wait_for(lambda: r.xpending()["count"] == 0, 20, what="XPENDING empty")


def test_several_streams_and_the_urgent_stream(ctx):
    """[redis] streams = two regional streams: both consumed by the group and
    acknowledged on their own stream; the urgent stream beside them."""
    rs = ctx.redis_server()
    sb = ctx.sandbox()
    r = ctx.client(rs)
    d = ctx.daemon(rs, sb, log_level="info", start=False,
                   overrides={"redis": {"stream": None,
                                        "streams": "events:north,events:south"}})
    d.start(wait_ready=False)  # the harness's readiness check looks at varsel:events
    d.wait_log(r"ready: connected to Redis", timeout=30)
    toks = {u: h.new_token() for u in ("n1", "s1", "u1")}
    h.publish_many(r, [h.device_register(u, "phone", t) for u, t in toks.items()],
                   stream="events:north")
    wait_for(lambda: all(h.devices(r, h.TENANT, u) for u in toks), 20, what="registrations")
    north = h.message_new(["n1"], "t-n", "Rektor", "Nord skole")
    south = h.message_new(["s1"], "t-s", "Rektor", "Sør skole")
    alert = h.absence_alert(["u1"], "s-1", "Nora")
    h.publish(r, north, stream="events:north")
    h.publish(r, south, stream="events:south")
    h.publish(r, alert, stream="varsel:urgent")
    for ev, u in ((north, "n1"), (south, "s1"), (alert, "u1")):
        wait_for(lambda ev=ev, u=u: h.status_of(r, h.TENANT, ev["id"]) == {f"{u}:phone": "sent"},
                 20, what=f"{ev['id']} sent")
    for stream in ("events:north", "events:south", "varsel:urgent"):
        wait_for(lambda stream=stream: r.xpending(stream=stream)["count"] == 0, 20,
                 what=f"{stream} acknowledged")
        check_eq(h.GROUP, r.xinfo_groups(stream=stream)[0]["name"], f"group on {stream}")
    check_eq(sorted(toks.values()), sorted(x["token"] for x in sb.records()),
             "one delivery per stream's event")
