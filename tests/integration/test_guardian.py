"""What the guardian sees (issue #6), one scenario per test, checked against
the sandbox's delivery record: languages, grouping, urgency, preferences,
escalation, privacy and erasure. Every test ends by grepping the daemon's
log for the names, texts and full tokens it used (none may appear)."""

import datetime
import json
import time
from zoneinfo import ZoneInfo

import harness as h
from harness import check, check_eq, wait_for

OSLO = ZoneInfo("Europe/Oslo")
URGENT = "varsel:urgent"
ESCALATIONS = h.PREFIX + "escalations"


# --------------------------------------------------------------------------
# helpers

def fcm_app(sb):
    return {f"app {h.APP}": {"fcm_service_account_file": str(sb.service_account),
                             "fcm_url": sb.fcm_url, "fcm_token_url": sb.token_url}}


def stack(ctx, tenant=None, redis=None, daemon=None):
    """redis + sandbox (APNs and FCM) + varseld with FCM, optional
    [tenant oslo] keys and [redis]/[daemon] overrides."""
    rs = ctx.redis_server()
    sb = ctx.sandbox(fcm=True)
    ov = fcm_app(sb)
    if tenant is not None:
        ov[f"tenant {h.TENANT}"] = tenant
    if redis:
        ov["redis"] = redis
    if daemon:
        ov["daemon"] = daemon
    d = ctx.daemon(rs, sb, overrides=ov)
    return rs, sb, d, ctx.client(rs)


def register(r, regs):
    h.publish_many(r, regs)
    wait_for(lambda: all(h.devices(r, h.TENANT, e["user"]).get(e["device"], {}).get("token")
                         == e["token"] for e in regs), 20, what="registrations")


def to_token(sb, token, provider=None):
    return [x for x in sb.accepted(provider) if x.get("token") == token]


def aps(rec):
    return (rec.get("payload") or {}).get("aps") or {}


def fcm_msg(rec):
    return (rec.get("payload") or {}).get("message") or {}


def statuses(r, ev):
    return h.status_of(r, h.TENANT, ev["id"])


def wait_status(r, ev, want, timeout=30):
    """Wait until the event's status hash equals |want| ({user:device: st})."""
    wait_for(lambda: statuses(r, ev) == want, timeout,
             what=lambda: f"status of {ev['id']} = {want}, have {statuses(r, ev)}")


def no_leaks(ctx, d, secrets_, tokens=()):
    """Names, texts and full tokens never reach the daemon's log."""
    text = d.log_text()
    for s in list(secrets_) + list(tokens):
        check(s not in text, f"the daemon log contains {s[:12]!r}…: it must not hold names, "
              f"message text or full tokens")
    ctx.note(f"log checked for {len(secrets_)} names/texts and {len(tokens)} tokens: none")


def oslo_now():
    return datetime.datetime.now(OSLO)


# --------------------------------------------------------------------------
# 1. a new message to two guardians, one iPhone (nb) and one Android (en)

def test_message_to_two_guardians_iphone_nb_android_en(ctx):
    rs, sb, d, r = stack(ctx)
    ios, android = h.new_token(), h.new_fcm_token()
    register(r, [h.device_register("g-kari", "iphone", ios, locale="nb"),
                 h.device_register("g-ola", "pixel", android, platform="android",
                                   locale="en")])
    ev = h.message_new([{"user": "g-kari", "badge": 4}, {"user": "g-ola", "badge": 1}],
                       "thread-77", "Lærer Solberg", "Ila skole", subject="Foreldremøte",
                       preview="Møtet er flyttet til torsdag kl 18")
    h.publish(r, ev)
    wait_status(r, ev, {"g-kari:iphone": "sent", "g-ola:pixel": "sent"})
    a = to_token(sb, ios, "apns")
    f = to_token(sb, android, "fcm")
    check_eq(1, len(a), "one APNs request")
    check_eq(1, len(f), "one FCM request")
    p = aps(a[0])
    check_eq("Lærer Solberg, Ila skole", p["alert"]["title"], "title: sender and school")
    check_eq("Foreldremøte", p["alert"]["body"], "body: the subject, no preview by default")
    check_eq("thread-77", p.get("thread-id"), "thread-id")
    check_eq(4, p.get("badge"), "badge from the recipient's unread count")
    m = fcm_msg(f[0])
    check_eq("Lærer Solberg, Ila skole", m["notification"]["title"], "FCM title")
    check_eq("Foreldremøte", m["notification"]["body"], "FCM body")
    check_eq("thread-77", m["android"]["collapse_key"], "FCM collapse_key = thread")
    check_eq("thread-77", m["android"]["notification"]["tag"], "FCM tag = thread")
    check_eq(1, m["android"]["notification"].get("notification_count"), "FCM badge")
    check("Møtet er flyttet" not in json.dumps(a[0]) + json.dumps(f[0]),
          "the preview is not sent where the tenant does not allow it")
    # The receipts carry the tenant.
    rc = [x for x in h.receipts(r) if x["event"] == ev["id"]]
    check_eq({h.TENANT}, {x["tenant"] for x in rc}, "receipts carry the tenant")
    no_leaks(ctx, d, ["Solberg", "Ila skole", "Foreldremøte", "flyttet til torsdag"],
             [ios, android])


def test_message_preview_and_locale_where_the_tenant_allows(ctx):
    """[tenant oslo] message_preview = on, default_locale = en: the preview
    shows, and a device without a locale gets English."""
    rs, sb, d, r = stack(ctx, tenant={"message_preview": "on", "default_locale": "en"})
    ios = h.new_token()
    reg = h.device_register("g-kari", "iphone", ios)
    reg.pop("locale")
    register(r, [reg])
    ev = h.message_new(["g-kari"], "t-1", "Lærer Solberg", "Ila skole",
                       preview="Husk gymtøy")
    h.publish(r, ev)
    wait_status(r, ev, {"g-kari:iphone": "sent"})
    p = aps(to_token(sb, ios)[0])
    check_eq("Husk gymtøy", p["alert"]["body"], "the preview shows (no subject)")
    ev2 = h.event("timetable.changed", recipients=["g-kari"],
                                student_name="Nora", date="2026-12-01",
                                summary="Gym is moved")
    h.publish(r, ev2)
    wait_status(r, ev2, {"g-kari:iphone": "sent"})
    p2 = aps([x for x in to_token(sb, ios) if aps(x).get("alert", {}).get("title", "")
              .startswith("Timetable")][0])
    check_eq("Timetable change for Nora", p2["alert"]["title"],
             "no locale on the device: the tenant's default (en)")
    no_leaks(ctx, d, ["Husk gymtøy", "Gym is moved"], [ios])


# --------------------------------------------------------------------------
# 2. a burst in one thread

def test_thread_burst_is_one_conversation(ctx):
    """20 messages in one thread within a minute: one conversation on the
    phone (one thread-id / collapse key / tag), unread count rising, and
    within FCM's per-device limits (no 429 from the sandbox)."""
    rs, sb, d, r = stack(ctx)
    ios, android = h.new_token(), h.new_fcm_token()
    register(r, [h.device_register("g-kari", "iphone", ios),
                 h.device_register("g-kari", "pixel", android, platform="android")])
    evs = [h.message_new([{"user": "g-kari", "badge": i + 1}], "thread-burst",
                         "Lærer Solberg", "Ila skole", subject=f"Melding {i + 1}")
           for i in range(20)]
    h.publish_many(r, evs)
    wait_for(lambda: len(to_token(sb, ios)) == 20 and len(to_token(sb, android)) == 20, 30,
             what=lambda: f"40 deliveries, have {len(to_token(sb, ios))} + "
                          f"{len(to_token(sb, android))}")
    check_eq([], [x for x in sb.records() if x.get("status") == 429],
             "no request over a per-device limit")
    a = to_token(sb, ios)
    check_eq({"thread-burst"}, {aps(x).get("thread-id") for x in a}, "one APNs thread-id")
    check_eq(list(range(1, 21)), sorted(aps(x).get("badge") for x in a), "badges 1..20")
    f = [fcm_msg(x) for x in to_token(sb, android)]
    check_eq({"thread-burst"}, {m["android"]["collapse_key"] for m in f}, "one collapse key")
    check_eq({"thread-burst"}, {m["android"]["notification"]["tag"] for m in f},
             "one tag: each replaces the last in the shade")
    no_leaks(ctx, d, ["Solberg", "Melding 1"], [ios, android])


def test_burst_over_the_collapsible_limit_is_paced_not_rejected(ctx):
    """25 messages to one Android phone at once: FCM takes a burst of 20
    collapsible messages per device, then one per 3 minutes. varsel sends
    20 and schedules the other 5 durably for when the device may take them,
    instead of collecting 429s."""
    rs, sb, d, r = stack(ctx)
    android = h.new_fcm_token()
    register(r, [h.device_register("g-kari", "pixel", android, platform="android")])
    evs = [h.message_new(["g-kari"], "thread-big", "Lærer Solberg", "Ila skole",
                         subject=f"Melding {i + 1}") for i in range(25)]
    t0 = h.now_ms()
    h.publish_many(r, evs)
    wait_for(lambda: r.xpending()["count"] == 0 and len(to_token(sb, android)) == 20, 30,
             what=lambda: f"20 sent and 25 events settled, have {len(to_token(sb, android))}")
    check_eq([], [x for x in sb.records() if x.get("status") == 429],
             "no 429 from the provider")
    st = [statuses(r, ev)["g-kari:pixel"] for ev in evs]
    check_eq(20, st.count("sent"), f"20 sent: {st}")
    check_eq(5, st.count("retrying"), f"5 paced: {st}")
    paced = [x for x in h.receipts(r) if x["status"] == "retrying"]
    check(all(x["reason"].startswith("paced") and x["attempt"] == "0" for x in paced),
          f"paced, not failed, and not counted as an attempt: {paced[:2]}")
    due = [int(float(v)) for v in r.call("ZRANGE", h.PREFIX + "retry", 0, -1,
                                          "WITHSCORES")[1::2]]
    check_eq(5, len(due), "5 in the durable schedule")
    check(all(t0 + 170000 <= x <= h.now_ms() + 182000 for x in due),
          f"scheduled about 3 minutes on (FCM's refill): {[x - t0 for x in due]}")
    ctx.note(f"paced 5 of 25: due {sorted(x - t0 for x in due)} ms after publishing")
    no_leaks(ctx, d, ["Solberg", "Melding 2"], [android])


# --------------------------------------------------------------------------
# 3. absence reported by one guardian

def test_absence_reported_tells_the_other_guardian_only(ctx):
    rs, sb, d, r = stack(ctx)
    kari, ola = h.new_token(), h.new_token()
    register(r, [h.device_register("g-kari", "iphone", kari),
                 h.device_register("g-ola", "iphone", ola)])
    ev = h.absence_reported(["g-kari", "g-ola"], "s-17", "Nora Hansen",
                            reported_by="g-kari", date="2026-11-30", kind="hours",
                            **{"from": "09:00", "to": "11:30", "reason": "Tannlege",
                               "note": "Vondt i tannen"})
    h.publish(r, ev)
    wait_status(r, ev, {"g-ola:iphone": "sent"})
    time.sleep(0.3)
    check_eq([], to_token(sb, kari), "the guardian who reported it is not told")
    p = aps(to_token(sb, ola)[0])
    text = p["alert"]["title"] + " " + p["alert"]["body"]
    check("Nora Hansen" in text and "09:00" in text, f"who and when: {text!r}")
    check("Tannlege" not in json.dumps(p) and "Vondt" not in json.dumps(p),
          f"no reason or note in the notification: {p}")
    no_leaks(ctx, d, ["Nora Hansen", "Tannlege", "Vondt i tannen"], [kari, ola])


# --------------------------------------------------------------------------
# 4. an unreported absence: urgent, expires at the end of the school day

def test_unreported_absence_alert_is_time_sensitive_until_school_ends(ctx):
    rs, sb, d, r = stack(ctx)
    ios, android = h.new_token(), h.new_fcm_token()
    register(r, [h.device_register("g-kari", "iphone", ios),
                 h.device_register("g-ola", "pixel", android, platform="android")])
    day = (oslo_now() + datetime.timedelta(days=1)).date()
    end = datetime.datetime(day.year, day.month, day.day, 16, 0, tzinfo=OSLO)
    ev = h.absence_alert(["g-kari", "g-ola"], "s-17", "Nora Hansen", date=day.isoformat(),
                         lesson="Matematikk")
    h.publish(r, ev, stream=URGENT)
    wait_status(r, ev, {"g-kari:iphone": "sent", "g-ola:pixel": "sent"})
    a = to_token(sb, ios)[0]
    check_eq("time-sensitive", aps(a).get("interruption-level"), "interruption-level")
    check_eq("10", str(a.get("priority")), "apns-priority 10")
    check_eq(str(int(end.timestamp())), str(a.get("expiration")),
             f"apns-expiration = {end.isoformat()} (16:00 Europe/Oslo on the absence's date)")
    m = fcm_msg(to_token(sb, android)[0])
    check_eq("HIGH", m["android"]["priority"], "FCM HIGH")
    check_eq("absence_urgent", m["android"]["notification"]["channel_id"], "urgent channel")
    ttl = int(m["android"]["ttl"].rstrip("s"))
    want = end.timestamp() - time.time()
    check(abs(ttl - want) < 30, f"FCM ttl {ttl}s ends at the end of the school day "
          f"(~{want:.0f}s)")
    check_eq(0, r.xlen(ESCALATIONS), "delivered: no escalation")
    no_leaks(ctx, d, ["Nora Hansen", "Matematikk"], [ios, android])


# --------------------------------------------------------------------------
# 5. leave decided

def test_leave_decided(ctx):
    rs, sb, d, r = stack(ctx)
    nb, en = h.new_token(), h.new_fcm_token()
    register(r, [h.device_register("g-kari", "iphone", nb, locale="nb"),
                 h.device_register("g-ola", "pixel", en, platform="android", locale="en")])
    ev = h.event("leave.decided", recipients=["g-kari", "g-ola"], student="s-17",
                 student_name="Nora Hansen", **{"from": "2026-12-14", "to": "2026-12-18"},
                 decision="approved")
    h.publish(r, ev)
    wait_status(r, ev, {"g-kari:iphone": "sent", "g-ola:pixel": "sent"})
    p = aps(to_token(sb, nb)[0])["alert"]
    m = fcm_msg(to_token(sb, en)[0])["notification"]
    check("innvilget" in p["title"] + p["body"], f"nb decision word: {p}")
    check("approved" in m["title"] + m["body"], f"en decision word: {m}")
    no_leaks(ctx, d, ["Nora Hansen"], [nb, en])


# --------------------------------------------------------------------------
# 6. logout

def test_logout_stops_pushes_to_that_device(ctx):
    rs, sb, d, r = stack(ctx)
    phone, tablet = h.new_token(), h.new_token()
    register(r, [h.device_register("g-kari", "phone", phone),
                 h.device_register("g-kari", "tablet", tablet)])
    h.publish(r, h.device_unregister("g-kari", "tablet"))
    wait_for(lambda: "tablet" not in h.devices(r, h.TENANT, "g-kari"), 20, what="logout")
    ev = h.message_new(["g-kari"], "t-1", "Lærer Solberg", "Ila skole")
    h.publish(r, ev)
    wait_status(r, ev, {"g-kari:phone": "sent"})
    time.sleep(0.3)
    check_eq([], to_token(sb, tablet), "nothing to the logged-out tablet")
    check_eq(1, len(to_token(sb, phone)), "the phone still gets it")
    no_leaks(ctx, d, ["Solberg"], [phone, tablet])


# --------------------------------------------------------------------------
# 7. a shared tablet changes hands

def test_shared_tablet_token_moves_to_the_other_parent(ctx):
    rs, sb, d, r = stack(ctx)
    tab, ola_phone = h.new_token(), h.new_token()
    register(r, [h.device_register("g-kari", "tab-k", tab),
                 h.device_register("g-ola", "phone", ola_phone)])
    # Ola logs in on the same tablet: same APNs token, his install id.
    register(r, [h.device_register("g-ola", "tab-o", tab)])
    wait_for(lambda: "tab-k" not in h.devices(r, h.TENANT, "g-kari"), 20,
             what="the token left Kari's login")
    to_kari = h.message_new(["g-kari"], "t-k", "Lærer Solberg", "Ila skole")
    to_both = h.message_new(["g-kari", "g-ola"], "t-b", "Rektor", "Ila skole")
    h.publish_many(r, [to_kari, to_both])
    wait_status(r, to_both, {"g-ola:tab-o": "sent", "g-ola:phone": "sent"})
    wait_for(lambda: r.xpending()["count"] == 0, 20, what="both events settled")
    check_eq({}, statuses(r, to_kari), "Kari has no device left: nothing sent for her")
    tab_got = to_token(sb, tab)
    check_eq(1, len(tab_got), "the tablet gets only the message for its new owner")
    check_eq("t-b", aps(tab_got[0]).get("thread-id"), "the tablet's message is Ola's")
    no_leaks(ctx, d, ["Solberg", "Rektor"], [tab, ola_phone])


# --------------------------------------------------------------------------
# 8. a locale switch

def test_locale_switch(ctx):
    rs, sb, d, r = stack(ctx)
    tok = h.new_token()
    register(r, [h.device_register("g-kari", "iphone", tok, locale="nb")])
    ev1 = h.event("timetable.changed", recipients=["g-kari"], student_name="Nora",
                  date="2026-12-01", summary="Gym flyttet")
    h.publish(r, ev1)
    wait_status(r, ev1, {"g-kari:iphone": "sent"})
    register(r, [h.device_register("g-kari", "iphone", tok, locale="nn")])
    wait_for(lambda: h.devices(r, h.TENANT, "g-kari")["iphone"].get("locale") == "nn", 20,
             what="locale nn stored")
    ev2 = h.event("timetable.changed", recipients=["g-kari"], student_name="Nora",
                  date="2026-12-02", summary="Gym flyttet")
    h.publish(r, ev2)
    wait_status(r, ev2, {"g-kari:iphone": "sent"})
    got = {aps(x)["alert"]["body"][:10]: aps(x)["alert"] for x in to_token(sb, tok)}
    titles = sorted(a["title"] for a in got.values())
    check_eq(2, len(titles), f"two notifications: {titles}")
    check(titles[0] != titles[1], f"the text changed with the locale: {titles}")
    nb_title = [t for t in titles if "Endret timeplan" in t]
    check(nb_title, f"the first is Bokmål: {titles}")
    no_leaks(ctx, d, ["Gym flyttet"], [tok])


# --------------------------------------------------------------------------
# 9. quiet hours hold a message, never an alert; muted types are not sent

def test_quiet_hours_hold_a_message_but_not_an_alert(ctx):
    rs, sb, d, r = stack(ctx)
    tok = h.new_token()
    register(r, [h.device_register("g-kari", "iphone", tok)])
    now = oslo_now()
    start = (now - datetime.timedelta(minutes=60))
    end = (now + datetime.timedelta(minutes=60))
    prefs = h.event("preferences.set", user="g-kari",
                    quiet_hours={"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")})
    h.publish(r, prefs)
    wait_for(lambda: r.hget(h.devices_key(h.TENANT, "g-kari"), ":prefs"), 20,
             what="preferences stored")
    msg = h.message_new(["g-kari"], "t-q", "Lærer Solberg", "Ila skole", subject="Kveldsinfo")
    alert = h.absence_alert(["g-kari"], "s-17", "Nora", date=now.date().isoformat())
    h.publish(r, msg)
    h.publish(r, alert, stream=URGENT)
    wait_status(r, alert, {"g-kari:iphone": "sent"})
    wait_status(r, msg, {"g-kari:iphone": "held"})
    wait_for(lambda: r.xpending()["count"] == 0, 20, what="the held message's event acked")
    check_eq(1, len(to_token(sb, tok)), "only the alert went out")
    # Held durably, in the retry schedule, until the end of the quiet hours.
    ids = r.call("ZRANGE", h.PREFIX + "retry", 0, -1, "WITHSCORES")
    check_eq(2, len(ids), f"one held delivery in the schedule: {ids}")
    due = int(float(ids[1]))
    want = end.replace(second=0, microsecond=0)
    check(abs(due / 1000 - want.timestamp()) < 1,
          f"held until {want.isoformat()}, scheduled at {due}")
    rc = [x for x in h.receipts(r) if x["event"] == msg["id"]]
    check_eq(["held"], [x["status"] for x in rc], "a 'held' receipt")
    # When the quiet hours end (moved forward here instead of waiting an
    # hour), the poller sends it.
    r.call("ZADD", h.PREFIX + "retry", str(h.now_ms()), ids[0])
    wait_status(r, msg, {"g-kari:iphone": "sent"})
    check_eq(2, len(to_token(sb, tok)), "the held message went out when the hours ended")
    rc = [x for x in h.receipts(r) if x["event"] == msg["id"]]
    check_eq(["held", "sent"], [x["status"] for x in rc], "held, then sent (attempt 1)")
    check_eq("1", rc[-1]["attempt"], "holding is not an attempt")
    no_leaks(ctx, d, ["Solberg", "Kveldsinfo", "Nora"], [tok])


def test_muted_type_is_not_sent_but_alerts_always_are(ctx):
    rs, sb, d, r = stack(ctx)
    tok = h.new_token()
    register(r, [h.device_register("g-kari", "iphone", tok)])
    h.publish(r, h.event("preferences.set", user="g-kari",
                         muted=["timetable.changed", "absence.alert"]))
    wait_for(lambda: r.hget(h.devices_key(h.TENANT, "g-kari"), ":prefs"), 20,
             what="preferences stored")
    tt = h.event("timetable.changed", recipients=["g-kari"], student_name="Nora",
                 date="2026-12-01", summary="Gym flyttet")
    alert = h.absence_alert(["g-kari"], "s-17", "Nora")
    msg = h.message_new(["g-kari"], "t-m", "Lærer Solberg", "Ila skole")
    h.publish_many(r, [tt, alert, msg])
    wait_status(r, tt, {"g-kari:iphone": "muted"})
    wait_status(r, alert, {"g-kari:iphone": "sent"})
    wait_status(r, msg, {"g-kari:iphone": "sent"})
    check_eq(2, len(to_token(sb, tok)), "the alert and the message, not the timetable")
    no_leaks(ctx, d, ["Nora", "Solberg"], [tok])


# --------------------------------------------------------------------------
# read receipts

def test_receipt_opened_marks_the_device(ctx):
    rs, sb, d, r = stack(ctx)
    phone, tablet = h.new_token(), h.new_token()
    register(r, [h.device_register("g-kari", "phone", phone),
                 h.device_register("g-kari", "tablet", tablet)])
    ev = h.message_new(["g-kari"], "t-o", "Lærer Solberg", "Ila skole")
    h.publish(r, ev)
    wait_status(r, ev, {"g-kari:phone": "sent", "g-kari:tablet": "sent"})
    h.publish(r, h.event("receipt.opened", user="g-kari", device="phone", event=ev["id"]))
    wait_status(r, ev, {"g-kari:phone": "opened", "g-kari:tablet": "sent"})
    rc = [x for x in h.receipts(r) if x["event"] == ev["id"] and x["status"] == "opened"]
    check_eq(1, len(rc), f"one 'opened' receipt: {rc}")
    check_eq(("g-kari", "phone", h.TENANT), (rc[0]["user"], rc[0]["device"], rc[0]["tenant"]),
             "it names the device and tenant")
    # A replay of the message skips the opened device and the sent one.
    h.publish(r, ev)
    wait_for(lambda: r.xpending()["count"] == 0, 20, what="replay settled")
    check_eq(1, len(to_token(sb, phone)), "no second push after a replay")
    no_leaks(ctx, d, ["Solberg"], [phone, tablet])


# --------------------------------------------------------------------------
# 10. an alert nobody can receive is escalated

def test_alert_with_no_reachable_device_is_escalated(ctx):
    rs, sb, d, r = stack(ctx)
    dead = h.new_token()
    register(r, [h.device_register("g-ola", "iphone", dead)])
    sb.set_unregistered([dead])
    nobody = h.absence_alert(["g-kari", "g-per"], "s-17", "Nora Hansen")
    unreachable = h.absence_alert(["g-ola"], "s-18", "Emil Hansen")
    h.publish_many(r, [nobody, unreachable], stream=URGENT)
    wait_for(lambda: r.xlen(ESCALATIONS) == 2, 20,
             what=lambda: f"two escalations, have {r.xrange(ESCALATIONS)}")
    esc = {e["event"]: e for _, e in r.xrange(ESCALATIONS)}
    e1 = esc[nobody["id"]]
    check_eq("no_device", e1["why"], "no recipient has a device")
    check_eq(h.TENANT, e1["tenant"], "tenant")
    check_eq("s-17", e1["student"], "student id")
    check_eq("g-kari,g-per", e1["users"], "the guardians' user ids")
    e2 = esc[unreachable["id"]]
    check_eq("undeliverable", e2["why"], "the only device's token is dead")
    for e in esc.values():
        check("Hansen" not in json.dumps(e), f"ids only, no names: {e}")
    # Exactly once: the scheduled check finds nothing more to do.
    check_eq(0, r.call("ZCARD", h.PREFIX + "escalate"), "no check left scheduled")
    # A replay of the event schedules nothing again.
    h.publish(r, nobody, stream=URGENT)
    time.sleep(1.5)
    check_eq(2, r.xlen(ESCALATIONS), "a replayed alert is not escalated twice")
    no_leaks(ctx, d, ["Nora Hansen", "Emil Hansen"], [dead])


def test_alert_not_delivered_in_time_is_escalated(ctx):
    """The provider keeps failing (503): after escalate_after_s (10 s for
    the test) the alert is escalated while its retries go on."""
    rs = ctx.redis_server()
    sb = ctx.sandbox(fcm=True, extra=["--fault-rate", "503:100"])
    d = ctx.daemon(rs, sb, overrides={f"tenant {h.TENANT}": {"escalate_after_s": "10"}})
    r = ctx.client(rs)
    tok = h.new_token()
    register(r, [h.device_register("g-kari", "iphone", tok)])
    ev = h.absence_alert(["g-kari"], "s-17", "Nora")
    t0 = time.monotonic()
    h.publish(r, ev, stream=URGENT)
    wait_for(lambda: r.xlen(ESCALATIONS) == 1, 30, what="an escalation")
    took = time.monotonic() - t0
    e = r.xrange(ESCALATIONS)[0][1]
    check_eq("not_delivered_in_time", e["why"], "still retrying when the time was up")
    check(9 <= took <= 15, f"escalated after {took:.1f}s (escalate_after_s = 10)")
    import urllib.request
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{d.admin_port}/metrics",
                                     timeout=10).read().decode()
    check('varsel_escalations_total{tenant="oslo",why="not_delivered_in_time"} 1' in metrics,
          "the escalation is counted per tenant and reason: " +
          str([x for x in metrics.splitlines() if "escalations" in x]))
    check("Nora" not in metrics and tok not in metrics, "no names or tokens in the metrics")
    ctx.note(f"escalated {took:.1f}s after publishing (escalate_after_s = 10)")


# --------------------------------------------------------------------------
# 11. an alert during a 100,000-recipient fan-out

def preload_devices(r, n, prefix_user="fan"):
    """n guardians with one iPhone each, written straight into the registry."""
    now = h.now_ms()
    cmds = []
    for i in range(n):
        rec = json.dumps({"platform": "ios", "token": f"{i:064x}", "app": h.APP,
                          "locale": "nb", "environment": "production", "updated_at": now})
        cmds.append(["HSET", h.devices_key(h.TENANT, f"{prefix_user}-{i}"), "d", rec])
        if len(cmds) == 2000:
            r.pipeline(cmds)
            cmds = []
    if cmds:
        r.pipeline(cmds)


def test_alert_during_a_big_fanout_reaches_the_provider_within_a_second(ctx):
    rs = ctx.redis_server()
    sb = ctx.sandbox()
    d = ctx.daemon(rs, sb, log_level="info")
    r = ctx.client(rs)
    n = 100000
    preload_devices(r, n)
    tok = h.new_token()
    register(r, [h.device_register("g-kari", "iphone", tok)])
    big = h.message_new([f"fan-{i}" for i in range(n)], "snow", "Kommunen", "Alle skoler",
                        subject="Skolene er stengt i dag")
    h.publish(r, big)
    # Publish the alert once the fan-out is well under way.
    wait_for(lambda: sb.record_lines() >= 10000, 120, what="the fan-out under way")
    alert = h.absence_alert(["g-kari"], "s-17", "Nora")
    sid = h.publish(r, alert, stream=URGENT)
    published = int(sid.split("-")[0])
    # Found by a byte search (parsing 100,000 record lines per poll would
    # take longer than the fan-out); the fan-out answers before the
    # alert's line are counted from the record, which is in answer order,
    # so the check does not depend on how fast this loop polls.
    def alert_line():
        try:
            data = sb.record_path.read_bytes()
        except OSError:
            return None
        i = data.find(tok.encode())
        return (data[:i].count(b"\n"),) if i >= 0 else None
    during, = wait_for(alert_line, 20, what="the alert at the sandbox")
    at = to_token(sb, tok)[0]["at"]
    lag = at - published
    check(during < n, f"the alert was answered while the fan-out was still running "
          f"({during} of {n} fan-out deliveries answered before it)")
    check(lag <= 1000, f"the alert reached the provider {lag} ms after publishing (≤ 1000)")
    ctx.note(f"alert accepted {lag} ms after publishing, with {during} of {n} fan-out "
             f"deliveries done")
    wait_for(lambda: r.xpending()["count"] == 0, 240, interval=0.5,
             what=lambda: f"the fan-out to settle ({sb.record_lines()} answered)")


test_alert_during_a_big_fanout_reaches_the_provider_within_a_second.timeout = 400


# --------------------------------------------------------------------------
# privacy: erasure and the device age sweep

def test_user_erase_removes_everything_about_a_guardian(ctx):
    rs, sb, d, r = stack(ctx)
    tok, other = h.new_token(), h.new_token()
    register(r, [h.device_register("g-kari", "iphone", tok),
                 h.device_register("g-ola", "iphone", other)])
    now = oslo_now()
    h.publish(r, h.event("preferences.set", user="g-kari", muted=["leave.decided"],
                         quiet_hours={"start": (now - datetime.timedelta(minutes=30))
                                      .strftime("%H:%M"),
                                      "end": (now + datetime.timedelta(minutes=90))
                                      .strftime("%H:%M")}))
    wait_for(lambda: r.hget(h.devices_key(h.TENANT, "g-kari"), ":prefs"), 20, what="prefs")
    msg = h.message_new(["g-kari", "g-ola"], "t-e", "Lærer Solberg", "Ila skole")
    h.publish(r, msg)
    wait_status(r, msg, {"g-kari:iphone": "held", "g-ola:iphone": "sent"})
    check_eq(1, r.call("ZCARD", h.PREFIX + "retry"), "Kari's message is held")
    # A request kept for the replay of a given-up delivery (as the settle
    # script writes it), and one of another guardian.
    kept = f"{h.PREFIX}dead:payload:{h.TENANT}:g-kari:iphone:old-ev"
    other_kept = f"{h.PREFIX}dead:payload:{h.TENANT}:g-ola:iphone:old-ev"
    r.call("SET", kept, '{"body":"x"}', "EX", "600")
    r.call("SET", other_kept, '{"body":"y"}', "EX", "600")
    h.publish(r, h.event("user.erase", user="g-kari"))
    wait_for(lambda: r.call("ZCARD", h.PREFIX + "retry") == 0, 20,
             what="the held delivery erased")
    wait_for(lambda: not r.exists(h.devices_key(h.TENANT, "g-kari")), 20,
             what="devices and preferences erased")
    check_eq(None, h.token_owner(r, h.APP, tok), "token index entry erased")
    check_eq({"g-ola:iphone": "sent"}, statuses(r, msg), "only Ola's status is left")
    check_eq(0, r.call("HLEN", h.PREFIX + "retry:data"), "no request data left")
    wait_for(lambda: not r.exists(kept), 20, what="the kept request of a given-up delivery")
    check(r.exists(other_kept), "another guardian's is kept")
    # An older registration arriving late cannot bring Kari back.
    late = h.device_register("g-kari", "iphone", tok, occurred_at=h.rfc3339(-60))
    h.publish(r, late)
    wait_for(lambda: r.xpending()["count"] == 0, 20, what="late register handled")
    check_eq({}, h.devices(r, h.TENANT, "g-kari"), "a late, older register is refused")
    check_eq(1, len(to_token(sb, other)), "Ola got his message")
    check_eq([], to_token(sb, tok), "Kari got nothing")
    no_leaks(ctx, d, ["Solberg"], [tok, other])


def test_devices_not_registered_again_are_pruned(ctx):
    rs, sb, d, r = stack(ctx, daemon={"token_max_age_days": "30"})
    old, fresh = h.new_token(), h.new_token()
    register(r, [h.device_register("g-kari", "old-ipad", old,
                                   occurred_at=h.rfc3339(-40 * 86400)),
                 h.device_register("g-kari", "iphone", fresh)])
    wait_for(lambda: "old-ipad" not in h.devices(r, h.TENANT, "g-kari"), 20,
             what="the 40-day-old device pruned")
    check("iphone" in h.devices(r, h.TENANT, "g-kari"), "the fresh one stays")
    check_eq(None, h.token_owner(r, h.APP, old), "its token index entry is gone")
    check(r.hget(f"{h.PREFIX}{{{h.TENANT}}}:gone:g-kari", "old-ipad"),
          "a tombstone keeps an older register from bringing it back")


def test_bad_tokens_are_dead_lettered_at_registration(ctx):
    rs, sb, d, r = stack(ctx)
    bad_ios = h.device_register("g-kari", "iphone", "not-a-hex-token")
    bad_android = h.device_register("g-kari", "pixel", "has spaces in it", platform="android")
    h.publish_many(r, [bad_ios, bad_android])
    wait_for(lambda: len(h.dead_letters(r)) == 2, 20, what="two dead letters")
    for dl in h.dead_letters(r):
        check_eq("invalid_field", dl["code"], f"code: {dl}")
        check("token" in dl["reason"], f"the reason names the token field: {dl['reason']}")
    check_eq({}, h.devices(r, h.TENANT, "g-kari"), "nothing registered")


def test_an_unreadable_escalation_record_does_not_stop_the_others(ctx):
    """A broken record in the escalation schedule (the oldest, so first in
    every run) is dropped; the alert behind it is still escalated."""
    rs, sb, d, r = stack(ctx, tenant={"escalate_after_s": "10"})
    r.call("ZADD", h.PREFIX + "escalate", "1", "oslo|broken")
    r.call("HSET", h.PREFIX + "escalate:data", "oslo|broken", "{not json")
    ev = h.absence_alert(["g-nobody"], "s-9", "Nora")
    h.publish(r, ev, stream=URGENT)
    wait_for(lambda: r.xlen(ESCALATIONS) == 1, 20, what="the alert escalated")
    check_eq(ev["id"], r.xrange(ESCALATIONS)[0][1]["event"], "the real alert")
    wait_for(lambda: r.call("ZSCORE", h.PREFIX + "escalate", "oslo|broken") is None, 10,
             what="the broken record dropped")


def test_user_erase_keeps_what_a_newer_event_wrote(ctx):
    """An erasure that is processed late removes what was registered before
    it, not a device registered after it (occurred_at decides, as for every
    registry change)."""
    rs, sb, d, r = stack(ctx)
    old, new = h.new_token(), h.new_token()
    register(r, [h.device_register("g-kari", "old-phone", old,
                                   occurred_at=h.rfc3339(-120))])
    register(r, [h.device_register("g-kari", "new-phone", new)])
    h.publish(r, h.event("user.erase", user="g-kari", occurred_at=h.rfc3339(-60)))
    wait_for(lambda: "old-phone" not in h.devices(r, h.TENANT, "g-kari"), 20,
             what="the older device erased")
    check("new-phone" in h.devices(r, h.TENANT, "g-kari"),
          "the device registered after the erasure stays")
    check_eq(None, h.token_owner(r, h.APP, old), "the older token's index entry is gone")
