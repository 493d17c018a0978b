"""Checks of the harness itself and of the sandbox's command-line contract.

These run without varseld: the RESP client against a real redis-server, and
varsel-sandbox driven by nghttp with a JWT signed by the openssl tool, so a
broken harness or sandbox shows up here rather than as a puzzling daemon
test failure.
"""

import json
import re
import socket

import harness as h
from harness import check, check_eq

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def test_resp_client(ctx):
    rs = ctx.redis_server()
    r = ctx.client(rs)
    check_eq("PONG", r.ping(), "PING")
    check_eq("OK", r.call("SET", "k", "væl\r\nue"), "SET")
    check_eq("væl\r\nue", r.get("k"), "GET of a value with CRLF and UTF-8")
    check(r.get("missing") is None, "GET of a missing key is nil")
    check_eq(2, r.call("RPUSH", "l", "a", 7), "RPUSH")
    check_eq(["a", "7"], r.call("LRANGE", "l", 0, -1), "LRANGE")
    try:
        r.call("INCR", "k")
        raise h.TestFailure("an error reply did not raise RedisError")
    except h.RedisError as e:
        check("ERR" in str(e), f"error text: {e}")
    replies = r.pipeline([["SET", "a", "1"], ["INCR", "k"], ["GET", "a"]])
    check_eq("OK", replies[0], "pipeline reply 1")
    check(isinstance(replies[1], h.RedisError), "pipeline keeps error replies")
    check_eq("1", replies[2], "pipeline reply 3")

    check_eq(0, r.xpending()["count"], "XPENDING without a stream")
    eid = h.publish(r, {"v": 1, "type": "x", "text": "æøå"})
    entries = r.xrange(h.STREAM)
    check_eq(1, len(entries), "XRANGE length")
    check_eq(eid, entries[0][0], "XRANGE id")
    check_eq("æøå", json.loads(entries[0][1]["event"])["text"], "round trip")
    r.call("XGROUP", "CREATE", h.STREAM, h.GROUP, "0")
    r.call("XREADGROUP", "GROUP", h.GROUP, "c1", "COUNT", 10, "STREAMS", h.STREAM, ">")
    p = r.xpending()
    check_eq(1, p["count"], "XPENDING count")
    check_eq({"c1": 1}, p["consumers"], "XPENDING consumers")
    check_eq([eid], r.xpending_ids(), "XPENDING ids")
    check_eq("c1", r.xinfo_consumers()[0]["name"], "XINFO CONSUMERS")
    check_eq(eid, r.xinfo_groups()[0]["last-delivered-id"], "XINFO GROUPS")
    r.call("HSET", h.status_key("oslo", "e1"), "u:d", "sent")
    check_eq({"u:d": "sent"}, h.status_of(r, "oslo", "e1"), "status hash")
    check_eq(["varsel:{oslo}:status:e1"], r.scan_keys("varsel:{oslo}:*"), "SCAN")
    ids = h.publish_many(r, [{"n": i} for i in range(1200)])
    check_eq(1200, len(set(ids)), "publish_many ids")
    check_eq(1201, r.xlen(h.STREAM), "XLEN")


def test_redis_stops_by_pid(ctx):
    rs = ctx.redis_server()
    port = rs.port
    check(rs.proc.poll() is None, "redis-server runs")
    check_eq(0, rs.stop(), "redis-server exit code on SIGTERM")
    with socket.socket() as s:
        check(s.connect_ex(("127.0.0.1", port)) != 0, "port still accepts after stop")


def _push(sb, ctx, base_url, token, **kw):
    jwt = h.es256_jwt(sb.p8, sb.key_id, sb.team_id)
    payload = {"aps": {"alert": {"title": "T", "body": "B"}, "thread-id": "t1"}}
    return h.apns_push(base_url, token, payload, jwt, tmpdir=ctx.tmp, **kw)


def test_sandbox_accepts_and_records(ctx):
    sb = ctx.sandbox()
    tok, tok2 = h.new_token(), h.new_token()
    apns_id = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
    status, hdrs, body = _push(sb, ctx, sb.apns_url, tok, apns_id=apns_id,
                               collapse_id="c-1")
    check_eq(200, status, f"status (body {body!r})")
    check_eq(apns_id, hdrs.get("apns-id", "").lower(), "apns-id echoed")
    status, hdrs, _ = _push(sb, ctx, sb.apns_sandbox_url, tok2)
    check_eq(200, status, "status on the sandbox listener")
    check(UUID_RE.match(hdrs.get("apns-id", "").lower() or "-"),
          f"generated apns-id: {hdrs.get('apns-id')!r}")

    recs = h.wait_for(lambda: len(sb.records()) >= 2 and sb.records(), 10,
                      what="two record lines")
    by_tok = {r.get("token"): r for r in recs}
    r1, r2 = by_tok.get(tok), by_tok.get(tok2)
    check(r1 is not None and r2 is not None, f"records for both tokens: {recs}")
    check_eq("apns", r1.get("provider"), "provider")
    check_eq("production", r1.get("env"), "env of the production listener")
    check_eq("sandbox", r2.get("env"), "env of the sandbox listener")
    check_eq(200, r1.get("status"), "recorded status")
    check_eq(apns_id, r1.get("apns_id"), "recorded apns_id")
    check_eq(h.TOPIC, r1.get("topic"), "recorded topic")
    check_eq("alert", r1.get("push_type"), "recorded push_type")
    check_eq("10", str(r1.get("priority")), "recorded priority")
    check_eq("c-1", r1.get("collapse_id"), "recorded collapse_id")
    check_eq(h.KEY_ID, r1.get("kid"), "recorded kid")
    check_eq(h.TEAM_ID, r1.get("iss"), "recorded iss")
    check_eq("T", r1.get("payload", {}).get("aps", {}).get("alert", {}).get("title"),
             "recorded payload")
    check_eq(2, len(sb.accepted()), "accepted()")
    check_eq(0, sb.stop(), "sandbox exit code on SIGTERM")
    check(sb.summary() is not None, "summary line written on clean shutdown")


def test_sandbox_token_files(ctx):
    sb = ctx.sandbox()
    dead, bad, fine = h.new_token(), h.new_token(), h.new_token()
    ts = h.now_ms()
    sb.set_unregistered([(dead, ts)])
    sb.set_bad_tokens([bad])
    status, _, body = _push(sb, ctx, sb.apns_url, dead)
    check_eq(410, status, "status for an unregistered token")
    b = json.loads(body or "{}")
    check_eq("Unregistered", b.get("reason"), "410 reason")
    check_eq(ts, b.get("timestamp"), "410 timestamp")
    status, _, body = _push(sb, ctx, sb.apns_url, bad)
    check_eq(400, status, "status for a bad token")
    check_eq("BadDeviceToken", json.loads(body or "{}").get("reason"), "400 reason")
    status, _, _ = _push(sb, ctx, sb.apns_url, fine)
    check_eq(200, status, "status for a good token")
    recs = {r["token"]: r for r in h.wait_for(lambda: len(sb.records()) >= 3 and
                                              sb.records(), 10, what="3 records")}
    check_eq("Unregistered", recs[dead].get("reason"), "recorded 410 reason")
    check_eq(410, recs[dead].get("status"), "recorded 410 status")
    check_eq([fine], [r["token"] for r in sb.accepted()], "accepted tokens")


def test_sandbox_rejects_bad_signature(ctx):
    sb = ctx.sandbox()
    jwt = h.es256_jwt(sb.p8, sb.key_id, sb.team_id)
    head, claims, sig = jwt.split(".")
    forged = f"{head}.{h.b64url(json.dumps({'iss': sb.team_id, 'iat': int(h.time.time()) - 5}))}.{sig}"
    status, _, body = h.apns_push(sb.apns_url, h.new_token(), {"aps": {"alert": "x"}},
                                  forged, tmpdir=ctx.tmp)
    check_eq(403, status, f"status for a forged token (body {body!r})")
    check_eq("InvalidProviderToken", json.loads(body or "{}").get("reason"), "reason")
