"""varselctl (issue #5) against a live varseld, sandbox and Redis: each
command's output and exit code, send-test following receipts, token
truncation, tokens purge against a late register, dead-letter list and
replay for a malformed event and for a delivery that gave up, stats from
the admin API; plus varseld's side of the service integration: sd_notify
messages and JSON log lines."""

import json
import os
import re
import signal
import socket
import subprocess
import time

import harness as h
from harness import check, check_eq, wait_for

ADMIN_TOKEN = "it-ctl-admin-token-0123456789"
ELLIPSIS = "\u2026"


# --------------------------------------------------------------------------
# helpers

def ctl(ctx, *args, redis=None, env=None, timeout=90):
    """Run build/varselctl [--redis URL] ARGS: (exit code, stdout, stderr).

    The environment is cleaned of VARSEL_* variables first so only what a
    test passes counts. A sanitizer report on stderr fails the test.
    """
    binary = ctx.build / "varselctl"
    check(binary.exists(), f"{binary} is not built")
    cmd = [str(binary)]
    if redis is not None:
        cmd += ["--redis", redis.url]
    cmd += [str(a) for a in args]
    e = {k: v for k, v in os.environ.items() if not k.startswith("VARSEL_")}
    e.update(env or {})
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=e, timeout=timeout)
    out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    check(not h.SANITIZER_RE.search(err), f"sanitizer report from varselctl:\n{err[-3000:]}")
    return p.returncode, out, err


def ctl_json(ctx, *args, redis=None, env=None, expect_rc=0, timeout=90):
    rc, out, err = ctl(ctx, *args, "--json", redis=redis, env=env, timeout=timeout)
    check_eq(expect_rc, rc, f"exit code of varselctl {' '.join(map(str, args))} "
             f"(stderr: {err.strip()!r})")
    try:
        return json.loads(out)
    except ValueError:
        raise h.TestFailure(f"varselctl {' '.join(map(str, args))} --json printed no JSON: "
                            f"{out[:500]!r}")


def stack(ctx, sandbox_extra=None, overrides=None, token=None, **kw):
    """redis + sandbox + varseld with the admin API on a free port."""
    rs = ctx.redis_server()
    sb = ctx.sandbox(extra=sandbox_extra or [])
    d = daemon(ctx, rs, sb, overrides=overrides, token=token, **kw)
    return rs, sb, d, ctx.client(rs)


def daemon(ctx, rs, sb, overrides=None, token=None, **kw):
    ov = {k: dict(v) for k, v in (overrides or {}).items()}
    port = h.free_port()
    ov.setdefault("admin", {})["listen"] = f"127.0.0.1:{port}"
    if token:
        ov["admin"]["token"] = token
    d = ctx.daemon(rs, sb, overrides=ov, **kw)
    d.admin_port = port
    return d


def register(r, user, device, token=None, **kw):
    token = token or h.new_token()
    h.publish(r, h.device_register(user, device, token, **kw))
    wait_for(lambda: h.devices(r, h.TENANT, user).get(device, {}).get("token") == token,
             20, what=f"registration of {user}/{device}")
    return token


def id_tuple(i):
    a, _, b = i.partition("-")
    return int(a), int(b or 0)


def wait_processed(r, entry_id, timeout=20):
    """Until the group has read |entry_id| and nothing is pending."""
    def done():
        for g in r.xinfo_groups():
            if g.get("name") == h.GROUP:
                return (id_tuple(g["last-delivered-id"]) >= id_tuple(entry_id)
                        and r.xpending()["count"] == 0)
        return False
    wait_for(done, timeout, what=f"varseld to take entry {entry_id}")


def statuses(r, ev_id):
    return h.status_of(r, h.TENANT, ev_id)


# --------------------------------------------------------------------------
# usage and errors (no daemon)

def test_usage_and_error_exit_codes(ctx):
    rs = ctx.redis_server()
    r = ctx.client(rs)
    rc, out, err = ctl(ctx)
    check_eq(2, rc, "no command")
    check("usage: varselctl" in err, f"usage on stderr: {err!r}")
    rc, out, _ = ctl(ctx, "--help")
    check_eq(0, rc, "--help")
    for cmd in ("stats", "status", "devices", "send-test", "dead list", "dead replay",
                "tokens purge"):
        check(cmd in out, f"--help names {cmd}")
    for cmd in ("stats", "status", "devices", "send-test", "dead", "tokens"):
        rc, out, _ = ctl(ctx, cmd, "--help")
        check_eq(0, rc, f"{cmd} --help")
        check(out.startswith(f"usage: varselctl {cmd}"), f"{cmd} --help: {out[:80]!r}")
        rc2, out2, _ = ctl(ctx, "help", cmd)
        check_eq((0, out), (rc2, out2), f"help {cmd} is {cmd} --help")
    for args, why in ((["frobnicate"], "unknown command"),
                      (["devices", "oslo"], "missing USER"),
                      (["status", "oslo", "a", "b"], "extra argument"),
                      (["stats", "--text", "x"], "option of another command"),
                      (["send-test", "oslo", "kari", "--timeout", "soon"], "bad --timeout"),
                      (["send-test", "Oslo", "kari"], "a tenant varseld would refuse"),
                      (["dead"], "dead without list/replay"),
                      (["dead", "replay"], "replay without ids"),
                      (["dead", "replay", "1-0", "--since", "1-0"], "ids and --since"),
                      (["dead", "replay", "not-an-id"], "bad id"),
                      (["dead", "list", "--since", "yesterday"], "bad --since"),
                      (["tokens", "revoke", "oslo", "kari"], "unknown tokens subcommand"),
                      (["--bogus", "stats"], "unknown option"),
                      (["--redis", "http://127.0.0.1/", "devices", "oslo", "kari"], "bad URL")):
        rc, _, err = ctl(ctx, *args, redis=None if "--redis" in args else rs)
        check_eq(2, rc, f"{why}: exit code (stderr {err.strip()!r})")
        check(err.startswith("varselctl: "), f"{why}: message on stderr: {err!r}")

    # Redis down: a clear message and 1.
    dead_port = h.free_port()
    rc, _, err = ctl(ctx, "--redis", f"redis://127.0.0.1:{dead_port}/0", "devices", "oslo", "kari")
    check_eq(1, rc, "Redis down")
    check_eq(f"varselctl: cannot connect to Redis at 127.0.0.1:{dead_port}: Connection refused\n",
             err, "message when Redis is down")
    # Admin API down.
    rc, _, err = ctl(ctx, "stats", "--admin", f"127.0.0.1:{dead_port}")
    check_eq(1, rc, "admin API down")
    check(f"cannot connect to the admin API at 127.0.0.1:{dead_port}: Connection refused" in err,
          f"message when the admin API is down: {err!r}")
    # Not found: 1.
    rc, _, err = ctl(ctx, "status", "oslo", "no-such-event", redis=rs)
    check_eq(1, rc, "status of an unknown event")
    check("nothing known about event oslo/no-such-event" in err, err)
    rc, _, err = ctl(ctx, "devices", "oslo", "nobody", redis=rs)
    check_eq(1, rc, "devices of an unknown user")
    check("oslo/nobody has no registered devices" in err, err)
    rc, _, err = ctl(ctx, "tokens", "purge", "oslo", "nobody", redis=rs)
    check_eq(1, rc, "purge of an unknown user")
    rc, out, err = ctl(ctx, "dead", "replay", "1-0", redis=rs)
    check_eq(1, rc, "replay of a missing dead letter")
    check("not_found" in out, out)
    rc, out, _ = ctl(ctx, "dead", "list", redis=rs)
    check_eq(0, rc, "empty dead list")
    check("no dead letters" in out, out)
    # send-test with no daemon: nothing answers within the timeout.
    r.call("HSET", h.devices_key(h.TENANT, "kari"), "phone", json.dumps(
        {"platform": "ios", "token": h.new_token(), "app": h.APP, "locale": "nb",
         "environment": "production", "updated_at": h.now_ms()}))
    t0 = time.monotonic()
    rc, out, err = ctl(ctx, "send-test", "oslo", "kari", "--timeout", "1.5", redis=rs)
    check_eq(1, rc, "send-test without a daemon")
    check(1.4 < time.monotonic() - t0 < 20, "send-test waited about its timeout")
    check("no final receipt within 1.5 s" in err, err)
    check("phone: no answer in time" in out, out)
    check_eq(1, len([e for _, e in r.xrange(h.STREAM) if '"user.erase"' not in e["event"]]),
             "the test event was published (beside user.erase events of purges)")


# --------------------------------------------------------------------------
# devices, status, send-test

def test_devices_truncates_tokens(ctx):
    rs, sb, d, r = stack(ctx)
    t1 = register(r, "kari", "phone")
    t2 = register(r, "kari", "tablet", environment="sandbox", locale="en")
    t3 = register(r, "kari", "old")
    h.publish(r, h.device_unregister("kari", "old"))
    wait_for(lambda: "old" not in h.devices(r, h.TENANT, "kari"), 20, what="logout")
    rc, out, err = ctl(ctx, "devices", "oslo", "kari", redis=rs)
    check_eq(0, rc, f"devices exit code ({err!r})")
    for t in (t1, t2, t3):
        check(t not in out and t[:9] not in out, "no token beyond 8 characters in the output")
    check(t1[:8] + ELLIPSIS in out and t2[:8] + ELLIPSIS in out, f"cut tokens shown: {out}")
    lines = out.splitlines()
    phone = next(l for l in lines if l.startswith("phone"))
    tablet = next(l for l in lines if l.startswith("tablet"))
    check(re.search(r"\bios\b.*\bdemo\b.*\bproduction\b.*\bnb\b", phone), phone)
    check(re.search(r"\bsandbox\b.*\ben\b", tablet), tablet)
    check(re.search(r"^\s+old\s+20\d\d-", out, re.M), f"logged-out device listed as removed: {out}")
    doc = ctl_json(ctx, "devices", "oslo", "kari", redis=rs)
    check_eq({"phone", "tablet"}, {x["device"] for x in doc["devices"]}, "devices in JSON")
    check_eq({t1[:8] + ELLIPSIS, t2[:8] + ELLIPSIS}, {x["token"] for x in doc["devices"]},
             "JSON tokens are cut too")
    check_eq(["old"], [x["device"] for x in doc["removed"]], "tombstones in JSON")
    check(t1 not in json.dumps(doc, ensure_ascii=False), "no full token in JSON")


def test_send_test_shows_receipts_and_exits_0(ctx):
    rs, sb, d, r = stack(ctx)
    t1 = register(r, "kari", "phone")
    t2 = register(r, "kari", "tablet", locale="en")
    rc, out, err = ctl(ctx, "send-test", "oslo", "kari", "--text", "Hei fra drift",
                       "--timeout", "30", redis=rs)
    check_eq(0, rc, f"send-test exit code; out {out!r} err {err!r}")
    m = re.search(r"published oslo/(varselctl-test-[0-9a-f-]{36}) to varsel:events", out)
    check(m, f"send-test names the event: {out!r}")
    ev_id = m.group(1)
    check(re.search(r"^\s+\d\d:\d\d:\d\d\.\d{3}\s+phone\s+ios\s+sent\s+1\s+200\b", out, re.M),
          f"receipt line for the phone: {out}")
    check(re.search(r"^\s+\d\d:\d\d:\d\d\.\d{3}\s+tablet\s+ios\s+sent\s+1\s+200\b", out, re.M),
          f"receipt line for the tablet: {out}")
    check("2 of 2 devices sent" in out, out)
    acc = {x["token"]: x for x in sb.accepted()}
    check(t1 in acc and t2 in acc, "both devices reached the provider")
    alert = acc[t1]["payload"]["aps"]["alert"]
    check_eq("Hei fra drift", alert.get("body"), "the text is the notification body")
    check("varsel" in alert.get("title", "") and "test" in alert.get("title", ""),
          f"sender varsel, school test: {alert}")
    check_eq({"kari:phone": "sent", "kari:tablet": "sent"}, statuses(r, ev_id), "statuses")

    # The same in JSON: one document at the end.
    doc = ctl_json(ctx, "send-test", "oslo", "kari", "--timeout", "30", redis=rs)
    check(doc["all_sent"] is True, f"all_sent: {doc}")
    check_eq({"phone": "sent", "tablet": "sent"},
             {x["device"]: x["status"] for x in doc["devices"]}, "devices in JSON")
    check_eq(2, len([x for x in doc["receipts"] if x["status"] == "sent"]), "receipts in JSON")
    check(all(x["event"] == doc["event"] for x in doc["receipts"]), "only this event's receipts")


def test_send_test_reports_a_dead_token_and_exits_1(ctx):
    rs, sb, d, r = stack(ctx)
    good = register(r, "ola", "phone")
    bad = register(r, "ola", "ipad")
    sb.set_bad_tokens([bad])
    rc, out, err = ctl(ctx, "send-test", "oslo", "ola", "--timeout", "30", redis=rs)
    check_eq(1, rc, f"one device failed: exit 1 ({out!r})")
    check(re.search(r"ipad\s+ios\s+invalid_token\s+1\s+400\s+.*BadDeviceToken", out), out)
    check("1 of 2 devices sent" in out and "ipad: invalid_token" in out, out)


def test_status_shows_statuses_and_receipts(ctx):
    rs, sb, d, r = stack(ctx)
    register(r, "kari", "phone")
    register(r, "kari", "tablet")
    register(r, "ola", "phone")
    bad = register(r, "per", "phone")
    sb.set_bad_tokens([bad])
    ev = h.message_new(["kari", "ola", "per"], "t-status", "Lærer", "Skolen")
    h.publish(r, ev)
    wait_for(lambda: len(statuses(r, ev["id"])) == 4, 30, what=lambda: statuses(r, ev["id"]))
    # other events' receipts in between must not show
    h.publish(r, h.message_new(["kari"], "t-other", "A", "B"))
    wait_for(lambda: r.xlen(h.RECEIPTS) == 6, 30, what="6 receipts")
    rc, out, err = ctl(ctx, "status", "oslo", ev["id"], redis=rs)
    check_eq(0, rc, f"status exit code ({err!r})")
    check(f"event oslo/{ev['id']}: 4 deliveries (3 sent, 1 invalid_token)" in out, out)
    for user, dev, st in (("kari", "phone", "sent"), ("kari", "tablet", "sent"),
                          ("ola", "phone", "sent"), ("per", "phone", "invalid_token")):
        check(re.search(rf"^{user}\s+{dev}\s+{st}$", out, re.M), f"{user}/{dev} {st}: {out}")
    rec_lines = [l for l in out.splitlines() if re.match(r"\s+20\d\d-\d\d-\d\dT", l)]
    check_eq(4, len(rec_lines), f"4 receipts of this event: {out}")
    check("BadDeviceToken" in out, "the reason of the dead token")
    doc = ctl_json(ctx, "status", "oslo", ev["id"], redis=rs)
    check_eq(4, len(doc["deliveries"]), "deliveries in JSON")
    check_eq(4, len(doc["receipts"]), "receipts in JSON")
    ats = [x["at"] for x in doc["receipts"]]
    check_eq(sorted(ats, reverse=True), ats, "receipts newest first")
    check(doc["receipts_complete"] is True, "the whole (small) stream was searched")
    # a bounded scan says so
    doc = ctl_json(ctx, "status", "oslo", ev["id"], "--scan", "2", redis=rs)
    check_eq(2, doc["receipts_scanned"], "--scan bounds the search")
    check(doc["receipts_complete"] is False, "and says it was cut")
    rc, out, _ = ctl(ctx, "status", "oslo", ev["id"], "--scan", "2", redis=rs)
    check("--scan N to look further" in out, out)


# --------------------------------------------------------------------------
# tokens purge

def test_tokens_purge_and_late_register(ctx):
    rs, sb, d, r = stack(ctx)
    t1 = register(r, "kari", "phone", occurred_at=h.rfc3339(-60))
    t2 = register(r, "kari", "tablet", occurred_at=h.rfc3339(-60))
    register(r, "ola", "phone")
    # kari's tablet token has since moved to someone else per the index
    # (as after a login elsewhere): purge must leave that index alone.
    other = json.dumps({"tenant": "oslo", "user": "ola", "device": "tablet2"})
    r.call("SET", h.token_key(h.APP, t2), other)
    before = h.now_ms()
    rc, out, err = ctl(ctx, "tokens", "purge", "oslo", "kari", redis=rs)
    check_eq(0, rc, f"purge exit code ({err!r})")
    check("purged 2 devices of oslo/kari" in out, out)
    check(t1 not in out and t1[:8] + ELLIPSIS in out, "tokens cut in the output")
    check_eq({}, h.devices(r, h.TENANT, "kari"), "no devices left")
    check_eq(0, r.exists(h.devices_key(h.TENANT, "kari")), "devices hash deleted")
    check_eq(None, r.get(h.token_key(h.APP, t1)), "token index of the phone removed")
    check_eq(other, r.get(h.token_key(h.APP, t2)), "an index pointing elsewhere is kept")
    gone = r.hgetall(f"{h.PREFIX}{{oslo}}:gone:kari")
    check_eq({"phone", "tablet"}, set(gone) - {":erased"}, "a tombstone per device")
    check(all(before - 1000 <= int(v) <= h.now_ms() for v in gone.values()),
          f"dated now: {gone}")
    check(0 < r.call("TTL", f"{h.PREFIX}{{oslo}}:gone:kari") <= 2592000, "tombstones expire")
    check(h.devices(r, h.TENANT, "ola").get("phone"), "other users untouched")
    rc, _, _ = ctl(ctx, "devices", "oslo", "kari", redis=rs)
    check_eq(1, rc, "devices after the purge: none")

    # A register that happened before the purge (delivered late) cannot revive it.
    late = h.publish(r, h.device_register("kari", "phone", t1, occurred_at=h.rfc3339(-30)))
    wait_processed(r, late)
    check_eq({}, h.devices(r, h.TENANT, "kari"), "an older register does not revive the device")
    check_eq(None, r.get(h.token_key(h.APP, t1)), "nor its token index")
    # A message now reaches nobody.
    ev = h.message_new(["kari"], "t-purged", "A", "B")
    evid = h.publish(r, ev)
    wait_processed(r, evid)
    check_eq({}, statuses(r, ev["id"]), "no delivery to a purged user")
    check(all(x["token"] not in (t1, t2) for x in sb.records()), "nothing sent to purged tokens")
    # A newer login does.
    t3 = register(r, "kari", "phone", occurred_at=h.rfc3339(1))
    check_eq(t3, h.devices(r, h.TENANT, "kari")["phone"]["token"], "a newer register works")
    # JSON form, and purging nothing is exit 1
    doc = ctl_json(ctx, "tokens", "purge", "oslo", "kari", redis=rs)
    check_eq([{"device": "phone", "platform": "ios", "app": h.APP, "token": t3[:8] + ELLIPSIS,
               "token_index_removed": True}], doc["purged"], "purge JSON")
    rc, _, err = ctl(ctx, "tokens", "purge", "oslo", "kari", redis=rs)
    check_eq(1, rc, "nothing left to purge")


# --------------------------------------------------------------------------
# dead letters

def test_dead_list_and_replay_of_events(ctx):
    rs, sb, d, r = stack(ctx)
    tok = register(r, "kari", "phone")
    bad_json = h.publish(r, "{not json")
    missing = h.message_new(["kari"], "t1", "A", "B")
    del missing["thread"]
    missing_id = h.publish(r, missing)
    no_event = r.xadd(h.STREAM, {"payload": "x"})
    wait_for(lambda: len(h.dead_letters(r)) == 3, 20, what="3 dead letters")
    dl = {x["source_id"]: x for x in h.dead_letters(r)}
    rc, out, err = ctl(ctx, "dead", "list", redis=rs)
    check_eq(0, rc, f"dead list ({err!r})")
    rows = [l for l in out.splitlines() if re.match(r"\d+-\d+\s", l)]
    check_eq(3, len(rows), f"3 rows: {out}")
    check(re.search(r"\sevent\s+invalid_json\s+\(9 bytes, not a JSON object\)", rows[0]), rows[0])
    check(re.search(rf"\sevent\s+missing_field\s+oslo/{missing['id']} message.new\s+.*thread",
                    rows[1]), rows[1])
    check(re.search(r"\sevent\s+missing_field\s+\(entry without an event field\)", rows[2]),
          rows[2])
    doc = ctl_json(ctx, "dead", "list", redis=rs)
    check_eq(["event"] * 3, [x["kind"] for x in doc], "kinds in JSON")
    check_eq([dl[bad_json]["_id"], dl[missing_id]["_id"], dl[no_event]["_id"]],
             [x["id"] for x in doc], "oldest first")
    check_eq([True, True, False], [x["replayable"] for x in doc], "replayable")
    check_eq("<not a JSON object: 9 bytes>", doc[0]["event"],
             "the dead letter holds a redacted copy")
    check_eq("{not json", r.get(doc[0]["original_key"]),
             "the original is kept beside it (dead_payload_ttl_s) for replay")
    check(0 < r.call("TTL", doc[0]["original_key"]) <= 604800, "and expires")
    # --count and --since
    doc = ctl_json(ctx, "dead", "list", "--count", "1", redis=rs)
    check_eq([dl[no_event]["_id"]], [x["id"] for x in doc], "--count 1: the newest")
    doc = ctl_json(ctx, "dead", "list", "--since", dl[bad_json]["_id"], redis=rs)
    check_eq([dl[missing_id]["_id"], dl[no_event]["_id"]], [x["id"] for x in doc], "--since")

    # Replay of a still-malformed event: published, said to bounce, and it does.
    rc, out, err = ctl(ctx, "dead", "replay", dl[missing_id]["_id"], redis=rs)
    check_eq(0, rc, f"replay exit code ({out!r} {err!r})")
    check("still malformed (missing_field" in out and "dead-letter it again" in out, out)
    new_entry = re.search(r"published to varsel:events as (\d+-\d+)", out).group(1)
    wait_for(lambda: any(x.get("source_id") == new_entry for x in h.dead_letters(r)), 20,
             what="the replayed malformed event dead-lettered again")
    # An entry without an event field cannot be replayed: 1.
    rc, out, _ = ctl(ctx, "dead", "replay", dl[no_event]["_id"], redis=rs)
    check_eq(1, rc, "no event field: exit 1")
    check("not_replayable" in out, out)

    # An event rejected by an older varseld (say, a type it did not know)
    # and valid now: replay delivers it; a second replay notifies nobody again.
    ev = h.message_new(["kari"], "t-later", "Lærer", "Skolen")
    dead_id = r.xadd(h.DEAD, {"reason": "unknown type 'message.new'", "code": "unknown_type",
                              "source_stream": h.STREAM, "source_id": "1-0",
                              "consumer": "old", "at": str(h.now_ms()),
                              "event": json.dumps(ev, ensure_ascii=False)})
    doc = ctl_json(ctx, "dead", "replay", dead_id, redis=rs)
    check_eq("published", doc[0]["result"], f"replay result: {doc}")
    check("still malformed" not in doc[0]["detail"], doc[0]["detail"])
    wait_for(lambda: statuses(r, ev["id"]) == {"kari:phone": "sent"}, 20,
             what=lambda: statuses(r, ev["id"]))
    entry = ctl_json(ctx, "dead", "replay", dead_id, redis=rs)[0]["detail"].split(" as ")[1]
    wait_processed(r, entry)
    sent = [x for x in sb.accepted() if x["token"] == tok and x["collapse_id"] == ev["id"]]
    check_eq(1, len(sent), "replaying twice reached the guardian once")
    # --since replays everything after an id (and not what the replay adds)
    n_dead = len(h.dead_letters(r))
    doc = ctl_json(ctx, "dead", "replay", "--since", dl[bad_json]["_id"], redis=rs,
                   expect_rc=1)
    check_eq(n_dead - 1, len(doc), "every dead letter after the id, once")
    check_eq(1, sum(1 for x in doc if x["result"] == "not_replayable"), "the one without event")


def test_dead_replay_of_given_up_deliveries(ctx):
    """Deliveries that gave up against a failing provider are replayed once
    it is healthy: with the device's current token, skipped for a logged-out
    device, refused past the deadline unless --ttl, never sent twice."""
    rs = ctx.redis_server()
    sb1 = ctx.sandbox(extra=["--fault-rate", "503:100"])
    d1 = daemon(ctx, rs, sb1, overrides={"app demo": {"retry_max_attempts": "1"}})
    r = ctx.client(rs)
    toks = {u: register(r, u, "phone") for u in ("kari", "ola", "per", "eva")}
    ev = h.message_new(["kari", "ola", "per"], "t-gaveup", "Lærer", "Skolen")
    ev_short = h.message_new(["eva"], "t-short", "Lærer", "Skolen", ttl_s=2)
    h.publish(r, ev)
    h.publish(r, ev_short)
    wait_for(lambda: sorted(statuses(r, ev["id"]).values()) == ["failed"] * 3
             and list(statuses(r, ev_short["id"]).values()) == ["failed"], 30,
             what=lambda: (statuses(r, ev["id"]), statuses(r, ev_short["id"])))
    dead = {x["user"]: x for x in h.dead_letters(r) if x.get("code") == "delivery_failed"}
    check_eq({"kari", "ola", "per", "eva"}, set(dead), "a dead letter per given-up delivery")
    check(all("retry_data" not in x and x.get("original_key") for x in dead.values()),
          "give-up dead letters hold ids and name the kept request (original_key)")
    for x in dead.values():
        kept = json.loads(r.get(x["original_key"]))
        check_eq(x["user"], kept["user"], "the kept request is this delivery's")
        check(0 < r.call("TTL", x["original_key"]) <= 604800, "it expires")
        check("Lærer" not in json.dumps(x), f"no text in the dead letter: {x}")

    rc, out, err = ctl(ctx, "dead", "list", redis=rs)
    check_eq(0, rc, err)
    check_eq(4, len(re.findall(r"\sdelivery\s+delivery_failed\s+oslo/", out)), out)
    check(re.search(rf"oslo/{ev['id']} -> kari/phone \(ios, demo\) attempt 1\s+gave up after 1 "
                    r"attempts; last error: 503", out), out)
    for t in toks.values():
        check(t[:9] not in out, "no token in dead list")
    doc = ctl_json(ctx, "dead", "list", redis=rs)
    check(all(x["kind"] == "delivery" and x["replayable"] for x in doc), doc)
    check("retry_data" not in json.dumps(doc) and toks["kari"] not in json.dumps(doc),
          "dead list --json shows no request and no token")

    # The provider is healthy again (a new sandbox and a daemon using it).
    check_eq(0, d1.stop(), "first daemon exits 0")
    sb1.stop()
    sb2 = h.Sandbox(ctx.sandbox_bin, ctx.tmp / "sandbox2")
    ctx.procs.append(sb2)
    sb2.start()
    daemon(ctx, rs, sb2)
    # ola logged in again with a new token; per logged out.
    new_ola = register(r, "ola", "phone", occurred_at=h.rfc3339(1))
    h.publish(r, h.device_unregister("per", "phone", occurred_at=h.rfc3339(1)))
    wait_for(lambda: "phone" not in h.devices(r, h.TENANT, "per"), 20, what="per's logout")
    time.sleep(2.2)  # eva's notification is past its deadline now

    ids = [dead[u]["_id"] for u in ("kari", "ola", "per", "eva")]
    doc = ctl_json(ctx, "dead", "replay", *ids, redis=rs, expect_rc=1)
    res = {x["id"]: x for x in doc}
    check_eq("scheduled", res[dead["kari"]["_id"]]["result"], f"kari: {doc}")
    check_eq("scheduled", res[dead["ola"]["_id"]]["result"], f"ola: {doc}")
    check("new token" in res[dead["ola"]["_id"]]["detail"], res[dead["ola"]["_id"]]["detail"])
    check_eq("device_gone", res[dead["per"]["_id"]]["result"], f"per: {doc}")
    check_eq("expired", res[dead["eva"]["_id"]]["result"], f"eva: {doc}")
    check("--ttl" in res[dead["eva"]["_id"]]["detail"], "the way out is named")
    wait_for(lambda: statuses(r, ev["id"]) == {"kari:phone": "sent", "ola:phone": "sent",
                                               "per:phone": "failed"}, 30,
             what=lambda: statuses(r, ev["id"]))
    acc = [x["token"] for x in sb2.accepted()]
    check_eq(1, acc.count(toks["kari"]), "kari reached once")
    check_eq(1, acc.count(new_ola), "ola reached on her new token")
    check(toks["ola"] not in acc and toks["per"] not in acc, "old and logged-out tokens unused")
    rc_kari = [x for x in h.receipts(r) if x["event"] == ev["id"] and x["user"] == "kari"]
    check_eq(["failed", "retrying", "sent"], [x["status"] for x in rc_kari], "kari's receipts")
    check_eq(f"replayed from dead letter {dead['kari']['_id']}", rc_kari[1]["reason"],
             "the replay receipt names the dead letter")
    check_eq("1", rc_kari[2]["attempt"], "a fresh set of attempts")

    # Replaying again: reached already, nothing sent (exit 0: nothing to do).
    rc, out, err = ctl(ctx, "dead", "replay", dead["kari"]["_id"], dead["ola"]["_id"], redis=rs)
    check_eq(0, rc, f"second replay ({out!r})")
    check_eq(2, out.count("already_reached"), out)
    # eva with a new deadline
    doc = ctl_json(ctx, "dead", "replay", dead["eva"]["_id"], "--ttl", "120", redis=rs)
    check_eq("scheduled", doc[0]["result"], f"eva with --ttl: {doc}")
    wait_for(lambda: statuses(r, ev_short["id"]) == {"eva:phone": "sent"}, 30,
             what=lambda: statuses(r, ev_short["id"]))
    time.sleep(0.5)
    acc = [x["token"] for x in sb2.accepted()]
    check_eq((1, 1, 1), (acc.count(toks["kari"]), acc.count(new_ola), acc.count(toks["eva"])),
             "each guardian reached exactly once")
    check_eq(0, r.call("ZCARD", h.PREFIX + "retry") + r.call("ZCARD", h.PREFIX + "retry:lease"),
             "retry schedule empty")


# --------------------------------------------------------------------------
# stats (admin API) and --config

def test_stats_from_the_admin_api(ctx):
    rs, sb, d, r = stack(ctx, token=ADMIN_TOKEN)
    register(r, "kari", "phone")
    ev = h.message_new(["kari"], "t-stats", "A", "B")
    h.publish(r, ev)
    h.publish(r, "{broken")
    wait_for(lambda: statuses(r, ev["id"]) == {"kari:phone": "sent"}, 20, what="delivery")
    wait_for(lambda: len(h.dead_letters(r)) == 1, 20, what="dead letter")
    admin = f"127.0.0.1:{d.admin_port}"
    rc, out, err = ctl(ctx, "stats", "--admin", admin, "--token", ADMIN_TOKEN)
    check_eq(0, rc, f"stats exit code ({err!r})")
    check(re.search(r"^sent\s+1\s*$", out, re.M), f"one delivery sent: {out}")
    for what in ("in flight", "stream lag", "stream pending", "retry schedule",
                 "dead-letter stream", "invalid_json", "PROVIDER ANSWERS", "apns 200",
                 "Redis: "):
        check(what in out, f"stats shows {what!r}: {out}")
    check(re.search(r"^invalid_json\s+1\s*$", out, re.M), f"dead letters by code: {out}")
    doc = ctl_json(ctx, "stats", "--admin", admin, "--token", ADMIN_TOKEN)
    check("varsel_deliveries_total" in doc["families"], "the admin API's JSON")
    # the token from the environment, and from varseld's config file
    rc, _, _ = ctl(ctx, "stats", "--admin", admin, env={"VARSEL_ADMIN_TOKEN": ADMIN_TOKEN})
    check_eq(0, rc, "token from VARSEL_ADMIN_TOKEN")
    rc, out, _ = ctl(ctx, "--config", d.config_path, "stats")
    check_eq(0, rc, f"address and token from --config: {out}")
    # no or a wrong token: 1 with a hint
    rc, _, err = ctl(ctx, "stats", "--admin", admin)
    check_eq(1, rc, "no token")
    check("401" in err and "--token" in err, err)
    rc, _, err = ctl(ctx, "stats", "--admin", admin, "--token", "wrong-token-0123456789")
    check_eq(1, rc, "wrong token")


def test_config_file_supplies_redis_and_prefix(ctx):
    rs, sb, d, r = stack(ctx, overrides={"redis": {"prefix": "vx:"}})
    tok = h.new_token()
    h.publish(r, h.device_register("kari", "phone", tok))
    wait_for(lambda: r.exists("vx:{oslo}:devices:kari"), 20, what="registration under vx:")
    rc, out, err = ctl(ctx, "--config", d.config_path, "devices", "oslo", "kari")
    check_eq(0, rc, f"devices via --config ({err!r})")
    check(tok[:8] + ELLIPSIS in out, out)
    # without --config, the default prefix finds nothing
    rc, _, _ = ctl(ctx, "devices", "oslo", "kari", redis=rs)
    check_eq(1, rc, "default prefix: nothing")
    rc, _, _ = ctl(ctx, "--prefix", "vx:", "devices", "oslo", "kari", redis=rs)
    check_eq(0, rc, "--prefix")
    rc, _, err = ctl(ctx, "--config", ctx.tmp / "nope.ini", "devices", "oslo", "kari")
    check_eq(1, rc, "a config file that cannot be read")
    check("nope.ini" in err, err)


# --------------------------------------------------------------------------
# varseld under a service manager: sd_notify, JSON logs

class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []

    def poll(self):
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (socket.timeout, BlockingIOError):
                return self.messages

    def wait(self, prefix, timeout=20):
        def seen():
            return next((m for m in self.poll() if m.startswith(prefix)), None)
        return wait_for(seen, timeout, what=lambda: f"sd_notify {prefix!r}; have {self.messages}")

    def close(self):
        self.sock.close()


def test_varseld_sd_notify_and_json_logs(ctx):
    rs = ctx.redis_server()
    sb = ctx.sandbox()
    ns = NotifySocket(ctx.tmp / "notify.sock")
    old = {k: os.environ.get(k) for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    os.environ["NOTIFY_SOCKET"] = ns.path
    os.environ["WATCHDOG_USEC"] = "1000000"
    os.environ.pop("WATCHDOG_PID", None)
    try:
        d = daemon(ctx, rs, sb, overrides={"daemon": {"log_format": "json"}})
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        ready = ns.wait("READY=1")
        check("STATUS=delivering" in ready, ready)
        first = ns.messages[0]
        check(first.startswith("STATUS=connecting to Redis at 127.0.0.1:"), first)
        ns.wait("WATCHDOG=1", timeout=5)
        # JSON log lines
        lines = [l for l in d.log_lines() if l.startswith("{")]
        check(lines, "JSON log lines")
        for l in lines:
            o = json.loads(l)
            check(set(o) >= {"ts", "level", "program", "tag", "msg"}, f"members: {l}")
            check_eq("varseld", o["program"], "program")
        check(any(json.loads(l)["msg"].startswith("ready: connected to Redis") for l in lines),
              "the ready line")
        # SIGHUP: RELOADING=1 then READY=1; the format switches to text
        del ns.messages[:]
        text_cfg = d.config_sections()
        text_cfg["daemon"]["log_format"] = "text"
        d.write_config(sections=text_cfg)
        os.kill(d.proc.pid, signal.SIGHUP)
        rel = ns.wait("RELOADING=1")
        check(re.search(r"\nMONOTONIC_USEC=\d+", rel), rel)
        after = ns.wait("READY=1")
        check("STATUS=configuration reloaded" in after, after)
        check(ns.messages.index(rel) < ns.messages.index(after), "RELOADING before READY")
        d.wait_log(r"^\d{4}-\d\d-\d\dT[\d:.]+Z info varseld daemon: configuration reloaded")
        # a refused reload still ends in READY=1
        del ns.messages[:]
        bad = d.config_sections()
        bad["redis"]["stream"] = "other:events"
        d.write_config(sections=bad)
        os.kill(d.proc.pid, signal.SIGHUP)
        ns.wait("RELOADING=1")
        after = ns.wait("READY=1")
        check("reload refused" in after, after)
        d.write_config()
        # SIGTERM: STOPPING=1
        os.kill(d.proc.pid, signal.SIGTERM)
        stop = ns.wait("STOPPING=1")
        check("STATUS=draining" in stop, stop)
        check_eq(0, d.stop(), "exit code")
    finally:
        ns.close()


def fcm_overrides(sb, **app):
    kv = {"fcm_service_account_file": str(sb.service_account), "fcm_url": sb.fcm_url,
          "fcm_token_url": sb.token_url}
    kv.update(app)
    return {f"app {h.APP}": kv}


def test_dead_replay_of_fcm_delivery_uses_the_new_token(ctx):
    """An Android delivery that gave up is replayed after the device got a
    new registration token: the stored FCM request is re-addressed."""
    rs = ctx.redis_server()
    sb1 = h.Sandbox(ctx.sandbox_bin, ctx.tmp / "sandbox1", fcm=True,
                    extra=["--fault-rate", "503:100"])
    ctx.procs.append(sb1)
    sb1.start()
    d1 = daemon(ctx, rs, sb1, overrides=fcm_overrides(sb1, retry_max_attempts="1"))
    r = ctx.client(rs)
    old = register(r, "kari", "pixel", token=h.new_fcm_token(), platform="android")
    ev = h.message_new(["kari"], "t-fcm", "Lærer", "Skolen")
    h.publish(r, ev)
    wait_for(lambda: statuses(r, ev["id"]) == {"kari:pixel": "failed"}, 30,
             what=lambda: statuses(r, ev["id"]))
    dead = [x for x in h.dead_letters(r) if x.get("event") == ev["id"]]
    check_eq(1, len(dead), "one dead letter")
    check(r.get(dead[0].get("original_key", "")), "the dead letter names the kept request")
    check_eq(0, d1.stop(), "first daemon exits 0")
    sb1.stop()
    sb2 = h.Sandbox(ctx.sandbox_bin, ctx.tmp / "sandbox2", fcm=True)
    ctx.procs.append(sb2)
    sb2.start()
    daemon(ctx, rs, sb2, overrides=fcm_overrides(sb2))
    new = register(r, "kari", "pixel", token=h.new_fcm_token(), platform="android",
                   occurred_at=h.rfc3339(1))
    doc = ctl_json(ctx, "dead", "replay", dead[0]["_id"], redis=rs)
    check_eq("scheduled", doc[0]["result"], f"replay: {doc}")
    check("new token" in doc[0]["detail"], doc[0]["detail"])
    wait_for(lambda: statuses(r, ev["id"]) == {"kari:pixel": "sent"}, 30,
             what=lambda: statuses(r, ev["id"]))
    sent = [x for x in sb2.accepted("fcm")]
    check_eq([new], [x["token"] for x in sent], "sent once, to the new token")
    check(old not in json.dumps(sb2.records()), "the old token was not used")


def test_dead_replay_goes_back_to_the_source_stream(ctx):
    """A bad event from the urgent stream is replayed to the urgent stream
    (where it keeps its priority), not to the events stream."""
    rs, sb, d, r = stack(ctx)
    register(r, "kari", "phone")
    bad = h.absence_alert(["kari"], "s-1", "Nora")
    del bad["student"]
    h.publish(r, bad, stream="varsel:urgent")
    wait_for(lambda: len(h.dead_letters(r)) == 1, 20, what="a dead letter")
    dl = h.dead_letters(r)[0]
    check_eq("varsel:urgent", dl["source_stream"], "source stream recorded")
    before = r.xlen(h.STREAM)
    rc, out, err = ctl(ctx, "dead", "replay", dl["_id"], redis=rs)
    check_eq(0, rc, f"replay ({out!r} {err!r})")
    check("published to varsel:urgent as" in out, out)
    check_eq(before, r.xlen(h.STREAM), "nothing published to the events stream")
