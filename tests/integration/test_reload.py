"""SIGHUP (issue #5): a rotated APNs key is used on new connections while
the old ones drain, and no push is lost; a bad new key is refused and the
daemon keeps delivering with the key it has."""

import signal
import time

import harness as h
from harness import check, check_eq, wait_for

KEY2 = "KEY7654321"


def sighup(d):
    d.proc.send_signal(signal.SIGHUP)


def test_rotated_apns_key_loses_nothing(ctx):
    rs = ctx.redis_server()
    sb = ctx.sandbox(start=False, extra=["--latency-ms", "1500"])
    sb.gen_certs()
    sb.gen_apns_key()
    sb._run_tool(["gen-apns-key", "--out-dir", str(sb.dir), "--key-id", KEY2])
    sb.extra += ["--apns-key", f"{KEY2}:{sb.team_id}:{sb.dir / (KEY2 + '.pub.pem')}"]
    sb.start()
    d = ctx.daemon(rs, sb)
    r = ctx.client(rs)
    users = [f"k{i}" for i in range(100)]
    toks = {u: h.new_token() for u in users}
    h.publish_many(r, [h.device_register(u, "phone", toks[u]) for u in users])
    wait_for(lambda: h.devices(r, h.TENANT, users[-1]), 20, what="registrations")

    first = [h.message_new(users[i:i + 2], f"a{i}", "A", "B") for i in range(0, 100, 2)]
    h.publish_many(r, first)
    # The sandbox answers after 1.5 s: reload while the first batch waits.
    wait_for(lambda: "deliver" in d.log_text(), 20, what="deliveries under way")
    time.sleep(0.5)
    check_eq(0, len(sb.accepted("apns")), "answers still pending at the reload")
    # Rotate: the new key file and id, then SIGHUP while answers are pending.
    d.overrides.setdefault(f"app {h.APP}", {}).update(
        {"apns_key_id": KEY2, "apns_key_file": str(sb.dir / f"{KEY2}.p8")})
    d.write_config()
    t_reload = h.now_ms()
    sighup(d)
    d.wait_log(r"new APNs credentials \(key " + KEY2, timeout=10)
    second = [h.message_new(users[i:i + 2], f"b{i}", "A", "B") for i in range(0, 100, 2)]
    h.publish_many(r, second)

    def sent():
        n = 0
        for ev in first + second:
            n += list(h.status_of(r, h.TENANT, ev["id"]).values()).count("sent")
        return n
    wait_for(lambda: sent() == 200, 60, what=lambda: f"200 sent, have {sent()}")
    recs = sb.records()
    check(not [x for x in recs if x.get("status") != 200],
          f"no refused request: {[(x['status'], x['reason']) for x in recs if x.get('status') != 200][:3]}")
    new_kid = [x for x in recs if x.get("kid") == KEY2]
    check(new_kid, "the new key is in use")
    old_conns = {x["connection"] for x in recs if x.get("kid") == h.KEY_ID}
    check(not old_conns & {x["connection"] for x in new_kid},
          "no connection carried both keys (APNs refuses a new key id on a live one)")
    late_old = [x for x in recs if x.get("kid") == h.KEY_ID and x["at"] > t_reload]
    check(late_old, "requests in flight at the reload drained on the old connection")
    # Every second-batch push went out with the new key.
    ev2 = {ev["id"] for ev in second}
    for x in recs:
        if (x.get("payload") or {}).get("v", {}).get("event") in ev2:
            check_eq(KEY2, x.get("kid"), "kid of a push published after the reload")
    check_eq(200, len([x for x in recs if x.get("status") == 200]), "each push sent once")
    ctx.note(f"{len(late_old)} pushes drained on old connections with the old key, "
             f"{len(new_kid)} on new connections with the new key")

    # A bad key is refused; delivery goes on with the key in use.
    d.overrides[f"app {h.APP}"].update({"apns_key_file": str(sb.dir / "missing.p8")})
    d.write_config()
    sighup(d)
    d.wait_log(r"reload refused", timeout=10)
    third = h.message_new(users[:4], "c", "A", "B")
    h.publish(r, third)
    wait_for(lambda: list(h.status_of(r, h.TENANT, third["id"]).values()).count("sent") == 4,
             30, what="deliveries after a refused reload")
    check(d.alive(), "varseld still runs")
