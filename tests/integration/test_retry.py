"""Retries per error class (issue #4): transient errors come back from the
durable schedule in Redis, permanent ones never do, and a delivery that runs
out of attempts or time gives up with a receipt and a dead letter.
"""

import time

import harness as h
from harness import check, check_eq, wait_for

FAST_RETRY = {"delivery": {"retry_base_ms": "100", "retry_max_delay_ms": "400"}}


def register_users(r, n, prefix="u", app=None):
    toks = {}
    regs = []
    for i in range(n):
        t = h.new_token()
        toks[f"{prefix}{i}"] = t
        kw = {"app": app} if app else {}
        regs.append(h.device_register(f"{prefix}{i}", "phone", t, **kw))
    h.publish_many(r, regs)
    wait_for(lambda: all(h.devices(r, h.TENANT, u).get("phone") for u in toks), 20,
             what="registrations")
    return toks


def statuses(r, ev):
    return h.status_of(r, h.TENANT, ev["id"])


def by_key(receipts):
    out = {}
    for rc in receipts:
        out.setdefault(f"{rc['user']}:{rc['device']}", []).append(rc)
    return out


def test_transient_errors_are_retried_until_sent(ctx):
    rs = ctx.redis_server()
    sb = ctx.sandbox(extra=["--fault-rate", "503:40", "--seed", "11"])
    d = ctx.daemon(rs, sb, overrides=FAST_RETRY)
    r = ctx.client(rs)
    toks = register_users(r, 30)
    ev = h.message_new(list(toks), "t-retry", "Lærer", "Skolen")
    h.publish(r, ev)
    wait_for(lambda: sum(1 for s in statuses(r, ev).values() if s == "sent") == 30, 60,
             what=lambda: f"30 sent, have {statuses(r, ev)}")
    wait_for(lambda: r.xpending()["count"] == 0, 20, what="XPENDING empty")
    rcpts = [x for x in h.receipts(r) if x["event"] == ev["id"]]
    retrying = [x for x in rcpts if x["status"] == "retrying"]
    check(retrying, "with 40% 503s some deliveries were retried")
    # Every key's receipts go retrying(1), retrying(2), ..., sent(n).
    for key, lst in by_key(rcpts).items():
        check_eq([str(i + 1) for i in range(len(lst))], [x["attempt"] for x in lst],
                 f"{key} attempts in order")
        check_eq("sent", lst[-1]["status"], f"{key} ends sent")
        for x in lst[:-1]:
            check_eq("retrying", x["status"], f"{key} earlier receipts")
            check_eq("503", x["http_status"], f"{key} retry reason status")
    # The sandbox saw each token accepted exactly once, after its 503s, with
    # the same apns-id and collapse id every time.
    recs = [x for x in sb.records() if x.get("token") in toks.values()]
    for u, t in toks.items():
        mine = [x for x in recs if x["token"] == t]
        check_eq(1, sum(1 for x in mine if x["status"] == 200), f"{u} accepted once")
        check_eq(1, len({x["apns_id"] for x in mine}), f"{u} one apns-id over retries")
        check_eq(1, len({x["collapse_id"] for x in mine}), f"{u} one collapse id")
    check_eq(0, r.call("ZCARD", h.PREFIX + "retry"), "retry schedule empty")
    check_eq(0, r.call("ZCARD", h.PREFIX + "retry:lease"), "no leases left")
    check_eq(0, r.call("HLEN", h.PREFIX + "retry:data"), "no retry data left")
    ctx.note(f"{len(retrying)} retries for 30 deliveries at 40% 503")


def test_permanent_error_is_never_retried(ctx):
    rs = ctx.redis_server()
    # An app whose team id is not the key's: APNs refuses its provider token
    # with 403 InvalidProviderToken, a permanent error.
    sb2 = ctx.sandbox()
    d = ctx.daemon(rs, sb2, overrides=FAST_RETRY, extra_sections={
        "app other": {"apns_topic": "no.example.other", "apns_team_id": "WRONGTEAM1",
                      "apns_key_id": sb2.key_id, "apns_key_file": str(sb2.p8),
                      "apns_url": sb2.apns_url, "apns_sandbox_url": sb2.apns_sandbox_url,
                      "retry_max_attempts": "5"}})
    r = ctx.client(rs)
    toks = register_users(r, 3, prefix="p", app="other")
    ev = h.message_new(list(toks), "t-perm", "Lærer", "Skolen")
    h.publish(r, ev)
    wait_for(lambda: len(statuses(r, ev)) == 3, 30, what=lambda: statuses(r, ev))
    time.sleep(1.0)  # a wrongly scheduled retry would fire within this
    check_eq({f"{u}:phone": "failed" for u in toks}, statuses(r, ev), "statuses")
    rcpts = [x for x in h.receipts(r) if x["event"] == ev["id"]]
    check_eq(3, len(rcpts), "one receipt per delivery, no retries")
    for x in rcpts:
        check_eq("1", x["attempt"], "attempt")
        check_eq("403", x["http_status"], "http status")
        check_eq("InvalidProviderToken", x["reason"], "reason")
    check_eq(0, r.call("ZCARD", h.PREFIX + "retry"), "nothing scheduled")
    wait_for(lambda: r.xpending()["count"] == 0, 20, what="XPENDING empty")


def test_gives_up_after_max_attempts(ctx):
    rs = ctx.redis_server()
    sb = ctx.sandbox(extra=["--fault-rate", "503:100"])
    ov = dict(FAST_RETRY)
    ov["app demo"] = {"retry_max_attempts": "3"}
    d = ctx.daemon(rs, sb, overrides=ov)
    r = ctx.client(rs)
    toks = register_users(r, 2, prefix="g")
    ev = h.message_new(list(toks), "t-giveup", "Lærer", "Skolen")
    h.publish(r, ev)
    wait_for(lambda: sorted(statuses(r, ev).values()) == ["failed", "failed"], 30,
             what=lambda: statuses(r, ev))
    rcpts = by_key([x for x in h.receipts(r) if x["event"] == ev["id"]])
    for key, lst in rcpts.items():
        check_eq(["retrying", "retrying", "failed"], [x["status"] for x in lst], key)
        check_eq(["1", "2", "3"], [x["attempt"] for x in lst], key)
    dead = [x for x in h.dead_letters(r) if x.get("event") == ev["id"]]
    check_eq(2, len(dead), "a dead letter per given-up delivery")
    for x in dead:
        check_eq("delivery_failed", x.get("code"), "dead letter code")
        check("gave up after 3 attempts" in x.get("reason", "") and "503" in x["reason"],
              f"dead letter names the last error: {x.get('reason')!r}")
    recs = [x for x in sb.records() if x.get("token") in toks.values()]
    check_eq(6, len(recs), "3 attempts per token reached the provider")
    check_eq(0, r.call("ZCARD", h.PREFIX + "retry"), "nothing left scheduled")
    wait_for(lambda: r.xpending()["count"] == 0, 20, what="XPENDING empty")


def test_expires_at_deadline(ctx):
    rs = ctx.redis_server()
    sb = ctx.sandbox(extra=["--fault-rate", "503:100"])
    d = ctx.daemon(rs, sb, overrides={"delivery": {"retry_base_ms": "300",
                                                   "retry_max_delay_ms": "300"}})
    r = ctx.client(rs)
    toks = register_users(r, 1, prefix="e")
    ev = h.message_new(list(toks), "t-exp", "Lærer", "Skolen", ttl_s=1)
    h.publish(r, ev)
    wait_for(lambda: list(statuses(r, ev).values()) == ["expired"], 30,
             what=lambda: statuses(r, ev))
    dead = [x for x in h.dead_letters(r) if x.get("event") == ev["id"]]
    check_eq(1, len(dead), "one dead letter")
    check_eq("delivery_expired", dead[0].get("code"), "code")
    check("expired" in dead[0].get("reason", ""), f"reason: {dead[0].get('reason')!r}")


def test_scheduled_retries_survive_a_crash(ctx):
    """kill -9 while retries wait in Redis; a new process (new provider,
    healthy now) sends them: nothing is lost, nothing is sent twice."""
    rs = ctx.redis_server()
    sb = ctx.sandbox(extra=["--fault-rate", "503:100"])
    d = ctx.daemon(rs, sb, overrides={"delivery": {"retry_base_ms": "3000",
                                                   "retry_max_delay_ms": "3000",
                                                   "retry_lease_ms": "2000"}})
    r = ctx.client(rs)
    toks = register_users(r, 10, prefix="c")
    ev = h.message_new(list(toks), "t-crash", "Lærer", "Skolen")
    h.publish(r, ev)
    wait_for(lambda: r.call("ZCARD", h.PREFIX + "retry")
             + r.call("ZCARD", h.PREFIX + "retry:lease") == 10, 30,
             what="10 scheduled retries")
    wait_for(lambda: r.xpending()["count"] == 0, 20,
             what="the event acked once its retries are scheduled")
    d.kill9()
    sb.stop()
    sb.extra = []
    sb.start()
    d.start()
    wait_for(lambda: sorted(set(statuses(r, ev).values())) == ["sent"], 60,
             what=lambda: statuses(r, ev))
    ok = [x for x in sb.records() if x.get("status") == 200 and x.get("token") in toks.values()]
    check_eq(sorted(toks.values()), sorted(x["token"] for x in ok),
             "each token accepted exactly once after the restart")
    check_eq(0, r.call("ZCARD", h.PREFIX + "retry") + r.call("ZCARD", h.PREFIX + "retry:lease"),
             "schedule empty")


def test_dead_provider_does_not_stall_others(ctx):
    """One app's provider is unreachable (nothing listens on its port): its
    deliveries become durable retries while the healthy app's deliveries go
    out at once, even with a small in-flight window."""
    rs = ctx.redis_server()
    sb = ctx.sandbox()
    dead_port = h.free_port()
    d = ctx.daemon(rs, sb, overrides={"delivery": {"inflight_window": "20"}},
                   extra_sections={"app dead": {
                       "apns_topic": h.TOPIC, "apns_team_id": sb.team_id,
                       "apns_key_id": sb.key_id, "apns_key_file": str(sb.p8),
                       "apns_url": f"https://127.0.0.1:{dead_port}",
                       "apns_sandbox_url": f"https://127.0.0.1:{dead_port}"}})
    r = ctx.client(rs)
    dead_users = register_users(r, 100, prefix="x", app="dead")
    live_users = register_users(r, 100, prefix="l")
    ev_dead = h.message_new(list(dead_users), "t-dead", "A", "B")
    h.publish(r, ev_dead)
    time.sleep(0.5)
    t0 = time.monotonic()
    ev_live = h.message_new(list(live_users), "t-live", "A", "B")
    h.publish(r, ev_live)
    wait_for(lambda: list(statuses(r, ev_live).values()).count("sent") == 100, 60,
             what=lambda: f"100 live deliveries sent, have {statuses(r, ev_live)}")
    took = time.monotonic() - t0
    check(took < 15, f"the healthy app waited {took:.1f}s behind the dead one")
    wait_for(lambda: len(statuses(r, ev_dead)) == 100, 30, what="dead app outcomes")
    check_eq({"retrying"}, set(statuses(r, ev_dead).values()),
             "the unreachable app's deliveries wait in the retry schedule")
    ctx.note(f"healthy app's 100 deliveries done in {took:.1f}s beside an unreachable provider")
