"""Android through FCM HTTP v1 (issue #3), end to end: real redis-server,
varsel-sandbox as FCM + Google's OAuth token endpoint (and APNs), varseld."""

import time

import harness as h
from harness import check, check_eq, wait_for


def fcm_app(sb, **more):
    sec = {"fcm_service_account_file": str(sb.service_account),
           "fcm_url": sb.fcm_url, "fcm_token_url": sb.token_url}
    sec.update(more)
    return {f"app {h.APP}": sec}


def fcm_daemon(ctx, rs, sb, overrides=None, **kw):
    ov = fcm_app(sb)
    for sec, kv in (overrides or {}).items():
        ov.setdefault(sec, {}).update(kv)
    return ctx.daemon(rs, sb, overrides=ov, **kw)


def register(r, regs):
    h.publish_many(r, regs)
    wait_for(lambda: all(h.devices(r, h.TENANT, e["user"]).get(e["device"]) for e in regs),
             20, what="registrations")


def fcm_msg(rec):
    return (rec.get("payload") or {}).get("message") or {}


def test_iphone_and_android_both_get_it(ctx):
    rs = ctx.redis_server()
    sb = ctx.sandbox(fcm=True)
    d = fcm_daemon(ctx, rs, sb)
    r = ctx.client(rs)
    ios, android = h.new_token(), h.new_fcm_token()
    register(r, [h.device_register("kari", "iphone", ios, locale="nb"),
                 h.device_register("kari", "pixel", android, platform="android", locale="nn")])
    ev = h.message_new([{"user": "kari", "badge": 2}], "thread-9", "Lærer Hansen",
                       "Bakken skule", subject="Tur i morgon")
    h.publish(r, ev)
    wait_for(lambda: sorted(h.status_of(r, h.TENANT, ev["id"]).values()) == ["sent", "sent"],
             30, what=lambda: h.status_of(r, h.TENANT, ev["id"]))
    apns = [x for x in sb.accepted("apns") if x["token"] == ios]
    fcm = [x for x in sb.accepted("fcm") if x["token"] == android]
    check_eq(1, len(apns), "one APNs delivery")
    check_eq(1, len(fcm), "one FCM delivery")
    x = fcm[0]
    check(x.get("authorization_ok") is True, f"the FCM request carried a valid bearer: {x}")
    check_eq(h.FCM_PROJECT, x.get("project"), "project in the path")
    m = fcm_msg(x)
    check_eq(android, m.get("token"), "message.token")
    check("Lærer Hansen" in m["notification"]["title"], f"title: {m['notification']}")
    check_eq("Tur i morgon", m["notification"]["body"], "body (the subject)")
    data = m.get("data") or {}
    check(all(isinstance(v, str) for v in data.values()), f"data values are strings: {data}")
    check_eq(ev["id"], data.get("event"), "data.event")
    check_eq("message.new", data.get("type"), "data.type")
    check_eq(h.TENANT, data.get("tenant"), "data.tenant")
    check_eq("thread-9", data.get("thread"), "data.thread")
    a = m.get("android") or {}
    check_eq("HIGH", a.get("priority"), "a message is HIGH priority")
    check(a.get("ttl", "").endswith("s") and a["ttl"][:-1].isdigit(), f"ttl: {a.get('ttl')}")
    check_eq("thread-9", a.get("collapse_key"), "collapse_key = the thread")
    check_eq("thread-9", a["notification"].get("tag"), "notification.tag = the thread")
    check_eq("messages", a["notification"].get("channel_id"), "channel")
    rc = {x["device"]: x for x in h.receipts(r) if x["event"] == ev["id"]}
    check_eq("sent", rc["pixel"]["status"], "android receipt")
    check_eq("android", rc["pixel"]["platform"], "receipt platform")
    check(rc["pixel"]["provider_id"].startswith(f"projects/{h.FCM_PROJECT}/messages/"),
          f"provider_id is the message name: {rc['pixel']['provider_id']}")
    check_eq(1, len(sb.oauth_records()), "one token request")


def test_urgent_alert_and_other_types_on_android(ctx):
    rs = ctx.redis_server()
    sb = ctx.sandbox(fcm=True)
    d = fcm_daemon(ctx, rs, sb)
    r = ctx.client(rs)
    t = h.new_fcm_token()
    register(r, [h.device_register("ola", "pixel", t, platform="android")])
    alert = h.absence_alert(["ola"], "s-1", "Nora")
    rep = h.absence_reported(["ola", "kari"], "s-1", "Nora", reported_by="kari")
    h.publish_many(r, [alert, rep])
    wait_for(lambda: len([x for x in sb.accepted("fcm") if x["token"] == t]) == 2, 30,
             what="two FCM deliveries")
    by_type = {fcm_msg(x)["data"]["type"]: fcm_msg(x) for x in sb.accepted("fcm")}
    a = by_type["absence.alert"]["android"]
    check_eq("HIGH", a["priority"], "an absence alert is HIGH")
    check_eq("absence_urgent", a["notification"]["channel_id"], "urgent channel")
    check_eq(alert["id"], a["collapse_key"], "collapse key = the event id")
    b = by_type["absence.reported"]["android"]
    check_eq("NORMAL", b["priority"], "a report to the other guardian is NORMAL")
    check_eq(rep["id"], b["notification"]["tag"], "tag = the event id")


def test_access_token_renewed_once_per_expiry(ctx):
    """Tokens live 6 s: renewed about every 3 s while sends continue, one
    token request per renewal, never one per send."""
    rs = ctx.redis_server()
    sb = ctx.sandbox(fcm=True, oauth_expires_in=6)
    d = fcm_daemon(ctx, rs, sb)
    r = ctx.client(rs)
    toks = {f"a{i}": h.new_fcm_token() for i in range(20)}
    register(r, [h.device_register(u, "pixel", t, platform="android") for u, t in toks.items()])
    t0 = time.monotonic()
    sent = 0
    while time.monotonic() - t0 < 10:
        h.publish(r, h.message_new(list(toks), f"t{sent}", "A", "B"))
        sent += 1
        time.sleep(0.6)  # under 20 per phone: FCM's collapsible burst
    wait_for(lambda: len(sb.accepted("fcm")) == 20 * sent, 30,
             what=lambda: f"{20 * sent} FCM deliveries, have {len(sb.accepted('fcm'))}")
    elapsed = time.monotonic() - t0
    n_tok = len([x for x in sb.oauth_records() if x.get("status") == 200])
    check(all(x.get("authorization_ok") for x in sb.fcm_records()),
          "every FCM request carried a valid, unexpired bearer")
    check(n_tok >= 3, f"{n_tok} token requests in {elapsed:.0f}s with 6-second tokens: "
          f"the token was not renewed")
    check(n_tok <= elapsed / 3 + 2, f"{n_tok} token requests in {elapsed:.0f}s: more than "
          f"one per renewal")
    ctx.note(f"{20 * sent} sends over {elapsed:.1f}s, {n_tok} token requests (6 s tokens)")


def test_many_in_flight_use_several_connections(ctx):
    """300 sends in flight (the sandbox answers after 1 s): FCM's limit of
    100 streams per connection means more than one connection, and never
    more than 100 streams on any."""
    rs = ctx.redis_server()
    sb = ctx.sandbox(fcm=True, extra=["--fcm-latency-ms", "1000"])
    d = fcm_daemon(ctx, rs, sb)
    r = ctx.client(rs)
    toks = {f"m{i}": h.new_fcm_token() for i in range(300)}
    register(r, [h.device_register(u, "pixel", t, platform="android") for u, t in toks.items()])
    ev = h.message_new(list(toks), "t-many", "A", "B")
    h.publish(r, ev)
    wait_for(lambda: list(h.status_of(r, h.TENANT, ev["id"]).values()).count("sent") == 300,
             60, what="300 sent")
    sb.stop()
    s = sb.summary() or {}
    conns = [c for c in s.get("per_connection", []) if c.get("listener", "fcm") == "fcm"
             and c.get("requests", 0) > 0]
    check(len(conns) > 1, f"more than one FCM connection: {conns}")
    worst = max(c.get("max_concurrent_streams", 0) for c in conns)
    check(worst <= 100, f"a connection carried {worst} concurrent streams")
    ctx.note(f"300 in flight over {len(conns)} connections, at most {worst} streams on one")


def test_unregistered_token_removed(ctx):
    rs = ctx.redis_server()
    sb = ctx.sandbox(fcm=True)
    d = fcm_daemon(ctx, rs, sb)
    r = ctx.client(rs)
    dead, live = h.new_fcm_token(), h.new_fcm_token()
    sb.set_fcm_unregistered([dead])
    register(r, [h.device_register("u1", "old", dead, platform="android"),
                 h.device_register("u1", "new", live, platform="android")])
    ev = h.message_new(["u1"], "t-u", "A", "B")
    h.publish(r, ev)
    wait_for(lambda: len(h.status_of(r, h.TENANT, ev["id"])) == 2, 30, what="two outcomes")
    check_eq({"u1:old": "invalid_token", "u1:new": "sent"}, h.status_of(r, h.TENANT, ev["id"]),
             "statuses")
    wait_for(lambda: "old" not in h.devices(r, h.TENANT, "u1"), 10, what="dead device removed")
    check("new" in h.devices(r, h.TENANT, "u1"), "the live device stays")
    check(h.token_owner(r, h.APP, dead) is None, "the dead token left the index")
    rc = [x for x in h.receipts(r) if x["device"] == "old"]
    check_eq("404", rc[0]["http_status"], "http status")
    check_eq("UNREGISTERED", rc[0]["reason"], "reason")


def test_token_endpoint_outage_delays_but_loses_nothing(ctx):
    rs = ctx.redis_server()
    sb = ctx.sandbox(fcm=True, extra=["--oauth-outage-ms", "3000"])
    d = fcm_daemon(ctx, rs, sb)
    r = ctx.client(rs)
    toks = {f"o{i}": h.new_fcm_token() for i in range(10)}
    register(r, [h.device_register(u, "pixel", t, platform="android") for u, t in toks.items()])
    ev = h.message_new(list(toks), "t-o", "A", "B")
    h.publish(r, ev)
    wait_for(lambda: list(h.status_of(r, h.TENANT, ev["id"]).values()).count("sent") == 10,
             60, what="10 sent after the token endpoint came back")
    failed = [x for x in sb.oauth_records() if x.get("status") != 200]
    check(failed, "the token endpoint was out at first")
    check("token request failed" in d.log_text(), "the failure shows in the log")
    check_eq(10, len(sb.accepted("fcm")), "each message sent once")


def test_revoked_token_refreshed_once_and_resent(ctx):
    """Google revokes the access token (the sandbox's SIGUSR1): FCM answers
    401 UNAUTHENTICATED; varseld fetches a new token once and resends, so
    the delivery succeeds at its first attempt."""
    import signal as sig
    rs = ctx.redis_server()
    sb = ctx.sandbox(fcm=True)
    d = fcm_daemon(ctx, rs, sb)
    r = ctx.client(rs)
    t = h.new_fcm_token()
    register(r, [h.device_register("rv", "pixel", t, platform="android")])
    ev1 = h.message_new(["rv"], "t1", "A", "B")
    h.publish(r, ev1)
    wait_for(lambda: h.status_of(r, h.TENANT, ev1["id"]).get("rv:pixel") == "sent", 20,
             what="first delivery")
    sb.proc.send_signal(sig.SIGUSR1)
    wait_for(lambda: "tokens revoked" in "".join(h.tail(sb.log, 50)), 10,
             what="the sandbox to revoke its tokens")
    ev2 = h.message_new(["rv"], "t2", "A", "B")
    h.publish(r, ev2)
    wait_for(lambda: h.status_of(r, h.TENANT, ev2["id"]).get("rv:pixel") == "sent", 20,
             what="second delivery after the revocation")
    fcm = sb.fcm_records()
    check_eq([200, 401, 200], [x["status"] for x in fcm], "FCM answers in order")
    check_eq(2, len([x for x in sb.oauth_records() if x.get("status") == 200]),
             "exactly one more token request")
    rc = [x for x in h.receipts(r) if x["event"] == ev2["id"]]
    check_eq(["sent"], [x["status"] for x in rc], "one receipt, sent")
    check_eq("1", rc[0]["attempt"], "the resend is inside the first attempt")
