"""The walking skeleton, end to end: real redis-server, varsel-sandbox as
APNs and varseld as a process. Each test publishes v1 events and checks
what varseld wrote to Redis (registry, receipts, status, dead letters) and
what the sandbox recorded as delivered.
"""

import json
import re
import time

import harness as h
from harness import check, check_eq, wait_for

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DEAD_CODES = {"invalid_json", "unknown_type", "missing_field", "invalid_field",
              "unsupported_version", "too_large"}


# --------------------------------------------------------------------------
# helpers

def register(r, regs, timeout=20):
    """Publish device.register events and wait until the registry has them."""
    h.publish_many(r, regs)

    def missing():
        out = []
        for ev in regs:
            got = h.devices(r, ev["tenant"], ev["user"]).get(ev["device"])
            if not got or got.get("token") != ev["token"]:
                out.append(f"{ev['user']}/{ev['device']}")
        return out
    wait_for(lambda: not missing(), timeout,
             what=lambda: f"registry entries for {missing()}")


def receipts_by_key(r, event_id=None):
    """{(event, 'user:device'): [receipt, ...]} in stream order."""
    out = {}
    for rc in h.receipts(r):
        if event_id is not None and rc.get("event") != event_id:
            continue
        out.setdefault((rc.get("event"), f"{rc.get('user')}:{rc.get('device')}"),
                       []).append(rc)
    return out


def wait_receipts(r, expected, timeout=30):
    """Wait until each (event, 'user:device') → status in |expected| has a
    receipt with that status; return receipts_by_key()."""
    def missing():
        got = receipts_by_key(r)
        return [k for k, st in expected.items()
                if not any(rc.get("status") == st for rc in got.get(k, []))]
    wait_for(lambda: not missing(), timeout,
             what=lambda: f"receipts for {missing()[:5]} "
                          f"({len(missing())} missing; receipts so far: "
                          f"{[(x.get('user'), x.get('device'), x.get('status')) for x in h.receipts(r)[-5:]]})")
    return receipts_by_key(r)


def wait_settled(r, timeout=30):
    wait_for(lambda: r.xpending()["count"] == 0, timeout,
             what=lambda: f"XPENDING to empty (now {r.xpending()})")


def stream_id(s):
    ms, _, seq = s.partition("-")
    return int(ms), int(seq or 0)


# --------------------------------------------------------------------------
# 1. registry

def test_register_and_move_token(ctx):
    rs, sb, d, r = ctx.stack()
    t1, t2 = h.new_token(), h.new_token()
    regs = [h.device_register("u1", "d1", t1, locale="nb", occurred_at=h.rfc3339(-60)),
            h.device_register("u1", "d2", t2, locale="en", environment="sandbox",
                              occurred_at=h.rfc3339(-60))]
    register(r, regs)

    devs = h.devices(r, "oslo", "u1")
    check_eq({"d1", "d2"}, set(devs), "u1's devices")
    for dev, tok, loc, env in (("d1", t1, "nb", "production"),
                               ("d2", t2, "en", "sandbox")):
        e = devs[dev]
        check_eq("ios", e.get("platform"), f"{dev} platform")
        check_eq(tok, e.get("token"), f"{dev} token")
        check_eq("demo", e.get("app"), f"{dev} app")
        check_eq(loc, e.get("locale"), f"{dev} locale")
        check_eq(env, e.get("environment"), f"{dev} environment")
        check(e.get("updated_at") not in (None, ""), f"{dev} has updated_at: {e}")
    check_eq({"tenant": "oslo", "user": "u1", "device": "d1"},
             h.token_owner(r, "demo", t1), "token index of t1")
    check_eq({"tenant": "oslo", "user": "u1", "device": "d2"},
             h.token_owner(r, "demo", t2), "token index of t2")

    # t1 moves to another guardian's login on another device
    register(r, [h.device_register("u2", "d5", t1, locale="nn")])
    wait_for(lambda: (h.token_owner(r, "demo", t1) or {}).get("user") == "u2", 10,
             what="the token index to follow t1 to u2")
    check_eq({"tenant": "oslo", "user": "u2", "device": "d5"},
             h.token_owner(r, "demo", t1), "token index of t1 after the move")
    wait_for(lambda: "d1" not in h.devices(r, "oslo", "u1"), 10,
             what="u1/d1 to leave the registry")
    check_eq({"d2"}, set(h.devices(r, "oslo", "u1")), "u1's devices after the move")
    check_eq(t1, h.devices(r, "oslo", "u2")["d5"]["token"], "u2/d5 token")

    # t2 moves to another municipality (the app connects to one at a time)
    register(r, [h.device_register("u9", "d9", t2, tenant="bergen")])
    wait_for(lambda: "d2" not in h.devices(r, "oslo", "u1"), 10,
             what="oslo u1/d2 to leave the registry after moving to bergen")
    check_eq({"tenant": "bergen", "user": "u9", "device": "d9"},
             h.token_owner(r, "demo", t2), "token index of t2 after the move")
    wait_settled(r)


# --------------------------------------------------------------------------
# 2. a message to two guardians, three iPhones

def test_message_new_delivered(ctx):
    rs, sb, d, r = ctx.stack()
    tk = {name: h.new_token() for name in ("kari1", "kari2", "ola", "other")}
    register(r, [
        h.device_register("kari", "kari-iphone", tk["kari1"], locale="nb"),
        h.device_register("kari", "kari-iphone-2", tk["kari2"], locale="en"),
        h.device_register("ola", "ola-iphone", tk["ola"], locale="nb",
                          environment="sandbox"),
        h.device_register("per", "per-iphone", tk["other"], locale="nb"),
    ])
    # No subject: the body is then the locale's "new message" text, so nb
    # and en differ (the title is sender and school in every locale).
    ev = h.message_new(["kari", {"user": "ola", "badge": 3}], thread="thread-42",
                       sender_name="Lærer Hansen", school_name="Bjølsen skole")
    h.publish(r, ev)

    expected = {(ev["id"], "kari:kari-iphone"): "sent",
                (ev["id"], "kari:kari-iphone-2"): "sent",
                (ev["id"], "ola:ola-iphone"): "sent"}
    got = wait_receipts(r, expected)
    wait_settled(r)

    recs = sb.records()
    check_eq(sorted([tk["kari1"], tk["kari2"], tk["ola"]]),
             sorted(x.get("token") for x in recs), "tokens the sandbox was sent")
    by_tok = {x["token"]: x for x in recs}
    collapse = set()
    for name, env in (("kari1", "production"), ("kari2", "production"),
                      ("ola", "sandbox")):
        x = by_tok[tk[name]]
        check_eq(200, x.get("status"), f"{name} status")
        check_eq(env, x.get("env"), f"{name} listener (environment)")
        check_eq(h.TOPIC, x.get("topic"), f"{name} apns-topic")
        check_eq("alert", x.get("push_type"), f"{name} apns-push-type")
        check_eq("10", str(x.get("priority")), f"{name} apns-priority")
        check(UUID_RE.match(x.get("apns_id") or ""), f"{name} apns-id is a lowercase "
              f"UUID: {x.get('apns_id')!r}")
        cid = x.get("collapse_id")
        check(cid and len(cid.encode()) <= 64, f"{name} collapse-id ≤ 64 bytes: {cid!r}")
        collapse.add(cid)
        check_eq(h.KEY_ID, x.get("kid"), f"{name} JWT kid")
        check_eq(h.TEAM_ID, x.get("iss"), f"{name} JWT iss")
        aps = (x.get("payload") or {}).get("aps") or {}
        alert = aps.get("alert") or {}
        check(isinstance(alert, dict) and alert.get("title") and alert.get("body"),
              f"{name} aps.alert has title and body: {aps}")
        check("Lærer Hansen" in alert["title"] and "Bjølsen skole" in alert["title"],
              f"{name} title names sender and school: {alert['title']!r}")
        check_eq("thread-42", aps.get("thread-id"), f"{name} thread-id")
        if name == "ola":
            check_eq(3, aps.get("badge"), "ola's badge")
        else:
            check("badge" not in aps, f"{name} got no badge (none given): {aps}")
    check_eq(1, len(collapse), f"one collapse-id per event: {collapse}")
    p_nb = by_tok[tk["kari1"]]["payload"]["aps"]["alert"]
    p_en = by_tok[tk["kari2"]]["payload"]["aps"]["alert"]
    check((p_nb["title"], p_nb["body"]) != (p_en["title"], p_en["body"]),
          f"nb and en texts differ: {p_nb} vs {p_en}")

    for (eid, ud), rcs in got.items():
        rc = [x for x in rcs if x.get("status") == "sent"][0]
        user, dev = ud.split(":")
        tok = {"kari-iphone": tk["kari1"], "kari-iphone-2": tk["kari2"],
               "ola-iphone": tk["ola"]}[dev]
        check_eq(by_tok[tok]["apns_id"], (rc.get("provider_id") or "").lower(),
                 f"{ud} receipt provider_id = apns-id")
        check_eq("oslo", rc.get("tenant"), f"{ud} receipt tenant")
        check_eq("ios", rc.get("platform"), f"{ud} receipt platform")
        check_eq("demo", rc.get("app"), f"{ud} receipt app")
        check_eq("200", rc.get("http_status"), f"{ud} receipt http_status")
        check_eq("1", rc.get("attempt"), f"{ud} receipt attempt")
        for f in ("latency_ms", "at"):
            check(rc.get(f) not in (None, ""), f"{ud} receipt has {f}: {rc}")
    check_eq({"kari:kari-iphone": "sent", "kari:kari-iphone-2": "sent",
              "ola:ola-iphone": "sent"}, h.status_of(r, "oslo", ev["id"]), "status hash")
    check_eq(0, r.xpending()["count"], "XPENDING")


# --------------------------------------------------------------------------
# 3. logged out

def test_logged_out_device_gets_nothing(ctx):
    rs, sb, d, r = ctx.stack()
    t_in, t_out = h.new_token(), h.new_token()
    register(r, [h.device_register("kari", "phone", t_in),
                 h.device_register("kari", "old-phone", t_out)])
    h.publish(r, h.device_unregister("kari", "old-phone"))
    wait_for(lambda: "old-phone" not in h.devices(r, "oslo", "kari"), 10,
             what="kari/old-phone to leave the registry")
    owner = h.token_owner(r, "demo", t_out)
    check(owner is None or owner.get("device") != "old-phone",
          f"token index still points at the logged-out device: {owner}")

    ev = h.message_new(["kari"], thread="t1", sender_name="Rektor",
                       school_name="Sagene skole")
    h.publish(r, ev)
    wait_receipts(r, {(ev["id"], "kari:phone"): "sent"})
    wait_settled(r)
    time.sleep(0.5)
    check_eq([t_in], [x.get("token") for x in sb.records()], "tokens sent to")
    check_eq({"kari:phone": "sent"}, h.status_of(r, "oslo", ev["id"]), "status hash")
    check(not any(x.get("device") == "old-phone" for x in h.receipts(r)),
          "no receipt for the logged-out device")


# --------------------------------------------------------------------------
# 4. 410 Unregistered

def test_unregistered_token_removed(ctx):
    rs, sb, d, r = ctx.stack()
    dead, alive = h.new_token(), h.new_token()
    register(r, [h.device_register("ola", "ipad", dead, occurred_at=h.rfc3339(-120)),
                 h.device_register("ola", "iphone", alive, occurred_at=h.rfc3339(-120))])
    # APNs says the token died after the app registered it.
    sb.set_unregistered([(dead, h.now_ms())])

    ev = h.message_new(["ola"], thread="t9", sender_name="Kontaktlærer",
                       school_name="Uranienborg skole")
    h.publish(r, ev)
    wait_receipts(r, {(ev["id"], "ola:ipad"): "invalid_token",
                      (ev["id"], "ola:iphone"): "sent"})
    wait_settled(r)
    rec = [x for x in sb.records() if x.get("token") == dead]
    check(rec and rec[0].get("status") == 410,
          f"the sandbox answered 410 for the dead token: {rec}")
    rc = [x for x in h.receipts(r) if x.get("device") == "ipad"][-1]
    check_eq("410", rc.get("http_status"), "receipt http_status")
    check("Unregistered" in (rc.get("reason") or ""), f"receipt reason: {rc}")
    wait_for(lambda: "ipad" not in h.devices(r, "oslo", "ola"), 10,
             what="ola/ipad to leave the registry")
    check(h.token_owner(r, "demo", dead) is None, "token index of the dead token removed")
    check_eq({"iphone"}, set(h.devices(r, "oslo", "ola")), "ola keeps the live device")
    check_eq({"tenant": "oslo", "user": "ola", "device": "iphone"},
             h.token_owner(r, "demo", alive), "token index of the live token")
    check_eq({"ola:ipad": "invalid_token", "ola:iphone": "sent"},
             h.status_of(r, "oslo", ev["id"]), "status hash")


# --------------------------------------------------------------------------
# 5. dead letters

def test_malformed_events_dead_lettered(ctx):
    rs, sb, d, r = ctx.stack()
    tok = h.new_token()
    register(r, [h.device_register("emma", "phone", tok, locale="en")])

    good_fields = dict(thread="t", sender_name="S", school_name="Skole")
    no_recipients = h.message_new(["emma"], **good_fields)
    del no_recipients["recipients"]
    cases = {
        "not json": ("invalid_json", {"event": '{"v":1,"type":"message.new",'}),
        "unknown type": ("unknown_type", {"event": json.dumps(
            h.event("message.nwe", recipients=["emma"], **good_fields))}),
        "missing field": ("missing_field", {"event": json.dumps(no_recipients)}),
        "wrong type": ("invalid_field", {"event": json.dumps(
            h.message_new("emma", **good_fields))}),
        "version 2": ("unsupported_version", {"event": json.dumps(
            h.message_new(["emma"], v=2, **good_fields))}),
        "no event field": (None, {"payload": "hello", "kind": "message.new"}),
    }
    ids = {}
    for name, (_, fields) in cases.items():
        ids[name] = r.xadd(h.STREAM, fields)
    good = h.message_new(["emma"], thread="t-good", sender_name="Lærer",
                         school_name="Skole")
    h.publish(r, good)

    wait_receipts(r, {(good["id"], "emma:phone"): "sent"})
    wait_for(lambda: len(h.dead_letters(r)) >= len(cases), 20,
             what=lambda: f"{len(cases)} dead letters (have {len(h.dead_letters(r))})")
    wait_settled(r)
    dead = {x.get("source_id"): x for x in h.dead_letters(r)}
    for name, (code, fields) in cases.items():
        x = dead.get(ids[name])
        check(x is not None, f"{name}: no dead letter with source_id {ids[name]}; "
              f"dead letters: {list(dead.values())}")
        check(x.get("reason"), f"{name}: dead letter has a reason: {x}")
        if code is None:
            check(x.get("code") in DEAD_CODES, f"{name}: code {x.get('code')!r}")
        else:
            check_eq(code, x.get("code"), f"{name}: code (reason {x.get('reason')!r})")
        check_eq(h.STREAM, x.get("source_stream"), f"{name}: source_stream")
        for k, v in fields.items():
            if k == "event":
                # The dead letter holds ids only; the original is kept
                # beside it for replay ([redis] dead_payload_ttl_s).
                check_eq(v, r.get(x.get("original_key", "")), f"{name}: original kept")
                check(x.get(k) != v or "<redacted" in v or "Skole" not in v,
                      f"{name}: redacted in the dead letter: {x.get(k)!r}")
                check("Skole" not in x.get(k, ""), f"{name}: no names in the dead letter")
            else:
                check_eq(f"<redacted: {len(v.encode())} bytes>", x.get(k),
                         f"{name}: field {k} redacted")
    check_eq(len(cases), len(h.dead_letters(r)), "dead letters (no extra ones)")
    check_eq([tok], [x.get("token") for x in sb.records()], "deliveries")
    check(d.alive(), "varseld still runs")


# --------------------------------------------------------------------------
# 6. kill -9 mid-batch and restart

N_GUARDIANS = 100  # even ones have two devices, odd ones one: 3 per pair


def _fleet(r):
    regs, devs = [], {}
    for g in range(N_GUARDIANS):
        user = f"g{g}"
        for k in range(2 if g % 2 == 0 else 1):
            tok = h.new_token()
            regs.append(h.device_register(user, f"{user}-d{k}", tok,
                                          locale=("nb", "nn", "en")[g % 3]))
            devs[(user, f"{user}-d{k}")] = tok
    register(r, regs, timeout=60)
    return devs


def _burst(r, n, tag):
    """n message.new events, event i to pair i mod 50 (3 devices each)."""
    evs = []
    for i in range(n):
        k = i % (N_GUARDIANS // 2)
        evs.append(h.message_new([f"g{2 * k}", {"user": f"g{2 * k + 1}", "badge": i % 9}],
                                 thread=f"{tag}-{i}", sender_name="Lærer",  # unique
                                 school_name="Skole", id=f"{tag}-{i}"))
    return evs


def _expected(evs, devs):
    exp = {}
    for ev in evs:
        for rcp in ev["recipients"]:
            user = rcp if isinstance(rcp, str) else rcp["user"]
            for (u, dev) in devs:
                if u == user:
                    exp[(ev["id"], f"{u}:{dev}")] = "sent"
    return exp


def _status_complete(r, evs, exp):
    bad = []
    for ev in evs:
        want = {ud: st for (eid, ud), st in exp.items() if eid == ev["id"]}
        if h.status_of(r, "oslo", ev["id"]) != want:
            bad.append(ev["id"])
    return bad


@h.timeout(300)
def test_kill9_and_restart(ctx):
    rs, sb, d, r = ctx.stack()
    devs = _fleet(r)
    evs = _burst(r, 200, "crash")
    exp = _expected(evs, devs)
    check_eq(600, len(exp), "deliveries planned")
    base = sb.record_lines()
    h.publish_many(r, evs)
    wait_for(lambda: sb.record_lines() - base >= 10, 60, interval=0.002,
             what="the first deliveries")
    d.kill9()
    time.sleep(0.3)  # let the sandbox answer what was in flight
    done = len(sb.accepted())
    pending = r.xpending()["count"]
    final_before = {k for k, rcs in receipts_by_key(r).items()
                    if any(x.get("status") in h.FINAL_STATUSES for x in rcs)}
    ctx.note(f"kill -9 after {done} of 600 deliveries ({len(final_before)} with a "
             f"final receipt); {pending} entries pending")
    check(done < 600 and pending > 0,
          f"varseld finished the batch before the kill ({done} deliveries, "
          f"{pending} pending): the test did not exercise a crash")

    d.start()  # same consumer name
    wait_receipts(r, exp, timeout=150)
    wait_for(lambda: not _status_complete(r, evs, exp), 30,
             what=lambda: f"complete status hashes ({_status_complete(r, evs, exp)[:5]})")
    wait_settled(r, 30)

    tok_owner = {tok: ud for ud, tok in devs.items()}
    firsts, dups, refinal = {}, 0, []
    for x in sb.accepted():
        payload = x.get("payload") or {}
        ev_id = (payload.get("v") or {}).get("event") or \
            (payload.get("aps") or {}).get("thread-id")  # thread = event id here
        key = (ev_id, x.get("token"))
        if key in firsts:
            dups += 1
            user, dev = tok_owner.get(key[1], ("?", "?"))
            if (key[0], f"{user}:{dev}") in final_before:
                refinal.append(f"{key[0]} → {user}:{dev}")
            check_eq(firsts[key].get("collapse_id"), x.get("collapse_id"),
                     f"collapse-id of the duplicate of {key[0]} to "
                     f"{tok_owner.get(key[1])}")
        else:
            firsts[key] = x
    check_eq(600, len(firsts), "distinct deliveries accepted by the sandbox")
    ctx.note(f"{dups} duplicate deliveries (same event and token accepted twice)")
    check(dups <= done, f"{dups} duplicates but only {done} deliveries before the "
          f"kill: the restarted daemon sent some delivery twice itself")
    # A delivery with a final receipt (and so a final status) before the
    # restart must be skipped when its event is replayed.
    check(not refinal, f"{len(refinal)} of the {dups} duplicates had a final receipt "
          f"before the restart, e.g. {refinal[:3]}")


# --------------------------------------------------------------------------
# 7. SIGTERM

@h.timeout(240)
def test_sigterm_drains(ctx):
    rs, sb, d, r = ctx.stack()
    devs = _fleet(r)
    evs = _burst(r, 200, "term")
    exp = _expected(evs, devs)
    entry_ids = h.publish_many(r, evs)
    wait_for(lambda: sb.record_lines() >= 1, 60, interval=0.002,
             what="the first deliveries")
    rc = d.stop(timeout=30)
    check_eq(0, rc, "varseld exit code on SIGTERM")

    pending = set(r.xpending_ids())
    groups = [g for g in r.xinfo_groups() if g.get("name") == h.GROUP]
    check(groups, "the consumer group exists")
    last = stream_id(groups[0]["last-delivered-id"])
    acked = [ev for ev, eid in zip(evs, entry_ids)
             if stream_id(eid) <= last and eid not in pending]
    ctx.note(f"SIGTERM after {len(sb.accepted())} deliveries: {len(acked)} events "
             f"acked, {len(pending)} pending")
    bad = _status_complete(r, acked, exp)
    check(not bad, f"{len(bad)} acked events are not settled, e.g. {bad[:3]}: "
          f"{[h.status_of(r, 'oslo', e) for e in bad[:3]]}")
    rcpt = receipts_by_key(r)
    unreceipted = [k for k in exp if k[0] in {ev["id"] for ev in acked}
                   and not any(x.get("status") == "sent" for x in rcpt.get(k, []))]
    check(not unreceipted, f"acked deliveries without a receipt: {unreceipted[:5]}")

    d.start()
    wait_receipts(r, exp, timeout=120)
    wait_for(lambda: not _status_complete(r, evs, exp), 30, what="complete status hashes")
    wait_settled(r)
    check_eq(0, d.stop(), "exit code of the second run")


# --------------------------------------------------------------------------
# 8. --check-config

def test_check_config(ctx):
    rs = ctx.redis_server()
    sb = ctx.sandbox()
    d = ctx.daemon(rs, sb, start=False)
    good = d.write_config(ctx.tmp / "good.ini")
    rc, out = d.run_check_config(good)
    check_eq(0, rc, f"exit code for a good config (output: {out.strip()[-500:]!r})")

    for sec, key, val in (("redis", "claim_idle_ms", "soon"),
                          ("daemon", "log_level", "loud")):
        secs = d.config_sections()
        secs[sec][key] = val
        path = ctx.tmp / f"bad-{key}.ini"
        d.write_config(path, secs)
        lineno = next(i for i, line in enumerate(path.read_text().splitlines(), 1)
                      if line.startswith(f"{key} ="))
        rc, out = d.run_check_config(path)
        check_eq(1, rc, f"exit code for {key} = {val} (output: {out.strip()[-500:]!r})")
        check(f"{path}:{lineno}" in out, f"output names {path.name}:{lineno}: {out!r}")
        check(key in out, f"output names the key {key}: {out!r}")
