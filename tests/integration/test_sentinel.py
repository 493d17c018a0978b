"""Redis Sentinel (issue #8): varseld finds the master through three
Sentinels and follows two failovers in the middle of a run, first a
SENTINEL FAILOVER (the old master turns into a replica), then a kill -9 of
the master then in charge. With [redis] wait_replicas 1 no entry is
acknowledged before a replica has its writes, so nothing acknowledged can
vanish with a master. Afterwards, on the last master: every delivery is
`sent`, nothing is pending, the retry schedule is empty, and every token
reached the provider.

Three redis-server (one master, two replicas) and three redis-sentinel
processes (quorum 2, master down after 1 s) on loopback, free ports.
"""

import socket
import threading
import time

import harness as h
from harness import check, check_eq, wait_for

MASTER = "mymaster"


def current_master(sentinels):
    """The master's port as the Sentinels agree on it, else None."""
    addrs = {s.master_addr() for s in sentinels}
    if len(addrs) == 1:
        a = addrs.pop()
        return a[1] if a else None
    return None


def replicas_online(rs, n):
    with rs.client(timeout=2) as c:
        info = c.call("INFO", "replication")
    return sum(1 for l in info.splitlines() if l.startswith("slave") and "state=online" in l) >= n


@h.timeout(120)
def test_sentinel_failover_mid_run(ctx):
    t_start = time.monotonic()
    # No delay before a full resync (Redis waits 5 s by default for more
    # replicas): a replica that took writes from the old master needs one.
    quick = ["--repl-diskless-sync-delay", "0"]
    a = ctx.redis_server(subdir="redis-a", extra=quick)
    b = ctx.redis_server(subdir="redis-b", extra=quick + ["--replicaof", "127.0.0.1", str(a.port)])
    c = ctx.redis_server(subdir="redis-c", extra=quick + ["--replicaof", "127.0.0.1", str(a.port)])
    servers = {s.port: s for s in (a, b, c)}
    wait_for(lambda: replicas_online(a, 2), 20, what="two replicas in sync")
    sents = [ctx.sentinel(a) for _ in range(3)]
    wait_for(lambda: all(s.known() == (2, 2) for s in sents), 30, interval=0.2,
             what=lambda: f"Sentinels to know each other and the replicas: "
             f"{[s.known() for s in sents]}")

    sb = ctx.sandbox(extra=["--latency-ms", "250"])
    r = ctx.client(a)
    users = [f"f{i}" for i in range(1200)]
    toks = {u: h.new_token() for u in users}
    h.publish_many(r, [h.device_register(u, "phone", toks[u]) for u in users])
    # 40 guardians per event, one event read at a time and a window of 10:
    # an event takes over a second, so events straddle each failover (some
    # outcomes written to the old master, some to the new one). Acknowledging
    # such an event on the new master would lose the outcomes the old one
    # took last: this test fails if varseld does (checked by hand by
    # dropping the connection-epoch check in queue/stream.c).
    per = 40
    evs = [h.message_new(users[i * per:(i + 1) * per], f"t{i}", "Lærer", "Skolen")
           for i in range(len(users) // per)]
    d = ctx.daemon(a, sb, log_level="info", overrides={
        "redis": {"sentinels": ",".join(s.addr for s in sents), "master_name": MASTER,
                  "wait_replicas": "1", "wait_timeout_ms": "500", "claim_idle_ms": "1000",
                  "batch_size": "1"},
        "delivery": {"inflight_window": "10"}})
    wait_for(lambda: all(h.devices(r, h.TENANT, u) for u in users[-3:]), 30,
             what="registrations")
    h.publish_many(r, evs)
    # Replicated before anything fails: the backend's part of the promise.
    check(r.call("WAIT", 2, 5000) == 2, "events replicated to both replicas")
    total = len(users)
    t_setup = time.monotonic() - t_start

    def wait_answers(frac):
        wait_for(lambda: sb.record_lines() >= frac * total, 60, interval=0.1,
                 what=f"{frac:.0%} of the deliveries answered")

    def wait_moved(old):
        wait_for(lambda: current_master(sents) not in (None, old), 30, interval=0.1,
                 what=f"the Sentinels to agree on a master other than :{old}")
        return current_master(sents)

    def wait_daemon_on(port):
        rx = rf"cmd: connected to master {MASTER} at 127\.0\.0\.1:{port}"
        d.wait_log(rx, 30)

    def answered():
        return sb.record_lines() / total

    # 1. A forced failover: the master turns into a replica of another.
    wait_answers(0.25)
    t1 = time.monotonic()
    with sents[0].client() as sc:
        check_eq("OK", sc.call("SENTINEL", "FAILOVER", MASTER), "SENTINEL FAILOVER")
    m1 = wait_moved(a.port)
    wait_daemon_on(m1)
    t1 = time.monotonic() - t1
    # The Sentinels turn the other replica (at once) and the old master
    # (some seconds later) into replicas of the new one; the next failover
    # needs one in sync.
    wait_for(lambda: replicas_online(servers[m1], 1), 30, interval=0.2,
             what="a replica in sync with the new master")
    check(answered() < 0.75, f"work left for the second failover ({answered():.0%} done)")

    # 2. The new master dies.
    wait_answers(0.6)
    t2 = time.monotonic()
    servers[m1].kill9()
    m2 = wait_moved(m1)
    wait_daemon_on(m2)
    t2 = time.monotonic() - t2

    r = ctx.client(servers[m2])

    def sent():
        cmds = [["HGETALL", h.status_key(h.TENANT, ev["id"])] for ev in evs]
        n = 0
        for rep in r.pipeline(cmds):
            n += sum(1 for v in rep[1::2] if v == "sent")
        return n
    wait_for(lambda: sent() == total, 45, interval=0.5,
             what=lambda: f"{total} deliveries sent on the last master, have {sent()}")
    wait_for(lambda: r.xpending()["count"] == 0 and r.xinfo_groups()[0].get("lag") == 0, 30,
             interval=0.2, what=lambda: f"nothing pending: {r.xpending()}")
    check_eq(0, r.call("ZCARD", h.PREFIX + "retry") + r.call("ZCARD", h.PREFIX + "retry:lease"),
             "retry schedule empty")
    accepted = [x["token"] for x in sb.accepted()]
    check(set(accepted) >= set(toks.values()), "every token reached the provider")
    dups = len(accepted) - len(set(accepted))
    check(d.alive(), "varseld survived both failovers")
    waits_ok = d.metric("varsel_redis_waits_total", 'result="ok"')
    waits_short = d.metric("varsel_redis_waits_total", 'result="short"')
    changes = d.metric("varsel_redis_master_changes_total", 'connection="cmd"')
    check(waits_ok > 0, "XACKs went through WAIT")
    check(changes >= 2, f"the command connection moved twice (saw {changes:.0f})")
    switches = sum(1 for l in d.log_lines() if "+switch-master" in l)
    ctx.note(f"{total} deliveries through 2 failovers in {time.monotonic() - t_start:.1f}s "
             f"(set-up {t_setup:.1f}s): SENTINEL FAILOVER -> on the new master after "
             f"{t1:.1f}s, kill -9 -> after {t2:.1f}s; {dups} duplicates; WAIT ok "
             f"{waits_ok:.0f}, short {waits_short:.0f}; {switches} +switch-master seen")


def test_wait_replicas_holds_acks(ctx):
    """[redis] wait_replicas 1 while the only replica is down: deliveries go
    out and their outcomes are written, but no entry is acknowledged (the
    short WAITs are counted in /metrics); the process keeps them (no replay,
    no second send) and acknowledges them once the replica is back."""
    m = ctx.redis_server(subdir="redis-m")
    rep = ctx.redis_server(subdir="redis-r", extra=["--replicaof", "127.0.0.1", str(m.port)])
    wait_for(lambda: replicas_online(m, 1), 20, what="the replica in sync")
    sb = ctx.sandbox()
    r = ctx.client(m)
    d = ctx.daemon(m, sb, overrides={"redis": {"wait_replicas": "1", "wait_timeout_ms": "200"}})
    users = [f"w{i}" for i in range(5)]
    toks = {u: h.new_token() for u in users}
    h.publish_many(r, [h.device_register(u, "phone", toks[u]) for u in users])
    wait_for(lambda: r.xpending()["count"] == 0 and r.xinfo_groups()[0].get("lag") == 0, 20,
             what="registrations acknowledged (the replica answers WAIT)")
    port = rep.port
    rep.stop()
    evs = [h.message_new([u], f"t-{u}", "A", "B") for u in users]
    h.publish_many(r, evs)
    wait_for(lambda: all(h.status_of(r, h.TENANT, ev["id"]).get(f"{ev['recipients'][0]}:phone")
                         == "sent" for ev in evs), 20, what="all five sent")
    time.sleep(1.5)
    check_eq(5, r.xpending()["count"], "entries pending while no replica has their writes")
    d.wait_log(r"WAIT: 0 of 1 replicas have the writes", 10)
    check(d.metric("varsel_redis_waits_total", 'result="short"') > 0, "short WAITs counted")
    rep.start(port=port)
    wait_for(lambda: r.xpending()["count"] == 0, 30,
             what=lambda: f"acknowledged once the replica is back: {r.xpending()}")
    accepted = [x["token"] for x in sb.accepted()]
    check_eq(sorted(toks.values()), sorted(accepted), "each sent once, not replayed")


def test_cluster_node_needs_one_hash_tag(ctx):
    """Redis Cluster readiness (docs/redis.md, "Redis Cluster"): on a cluster
    node every script must keep its keys in one slot. With the default key
    layout the device registry's script spans slots and is refused
    (CROSSSLOT: the event is dead-lettered); with prefix "{varsel}:" and
    stream "{varsel}:events" every key shares one hash tag and the whole
    pipeline runs: registry, deliveries, a retry, a dead-token removal."""
    rs = ctx.redis_server(subdir="redis-cluster", extra=[
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
    r = ctx.client(rs)
    r.call("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
    wait_for(lambda: "cluster_state:ok" in r.call("CLUSTER", "INFO"), 20,
             what="the one-node cluster up")
    sb = ctx.sandbox(extra=["--fault-rate", "503:30", "--seed", "3"])

    # Default layout: refused.
    d0 = ctx.daemon(rs, sb, consumer="plain")
    tok = h.new_token()
    h.publish(r, h.device_register("c0", "phone", tok))
    wait_for(lambda: any(x.get("code") == "registry_error" for x in h.dead_letters(r)), 20,
             what="the register dead-lettered")
    dl = [x for x in h.dead_letters(r) if x.get("code") == "registry_error"][0]
    check("CROSSSLOT" in dl.get("reason", "") or "slot" in dl.get("reason", "").lower(),
          f"refused for its slots: {dl.get('reason')!r}")
    d0.stop()

    # One hash tag for everything.
    prefix, stream = "{varsel}:", "{varsel}:events"
    d = ctx.daemon(rs, sb, consumer="tagged", start=False, overrides={
        "redis": {"prefix": prefix, "stream": stream},
        "delivery": {"retry_base_ms": "100", "retry_max_delay_ms": "300"},
        "app demo": {"retry_max_attempts": "20"}})
    d.start(wait_ready=False)
    users = [f"c{i}" for i in range(1, 21)]
    toks = {u: h.new_token() for u in users}
    dead = users[0]
    sb.set_unregistered([toks[dead]])
    h.publish_many(r, [h.device_register(u, "phone", toks[u]) for u in users], stream=stream)
    ev = h.message_new(users, "t-cluster", "A", "B")
    h.publish(r, ev, stream=stream)
    skey = f"{prefix}{{{h.TENANT}}}:status:{ev['id']}"
    wait_for(lambda: len(r.hgetall(skey)) == len(users) and
             "retrying" not in r.hgetall(skey).values(), 30,
             what=lambda: f"every delivery final: {r.hgetall(skey)}")
    st = r.hgetall(skey)
    check_eq("invalid_token", st[f"{dead}:phone"], "the dead token's delivery")
    check_eq(len(users) - 1, sum(1 for v in st.values() if v == "sent"), "the others sent")
    check(r.call("HGET", f"{prefix}{{{h.TENANT}}}:devices:{dead}", "phone") is None,
          "the dead token was removed from the registry")
    wait_for(lambda: r.xpending(stream=stream)["count"] == 0, 20, what="nothing pending")
    retried = sum(1 for _, x in r.xrange(prefix + "receipts") if x.get("status") == "retrying")
    check(retried > 0, "some deliveries went through the retry schedule")
    check_eq(0, r.call("ZCARD", prefix + "retry") + r.call("ZCARD", prefix + "retry:lease"),
             "retry schedule empty")
    ctx.note(f"one-node cluster, one hash tag: {len(users)} deliveries, {retried} retries")


class LaggingSentinel(threading.Thread):
    """A stand-in Sentinel on a free loopback port that names |port| as the
    master, whatever it is now (as a Sentinel lagging behind a failover)."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        p = str(port).encode()
        self.answer = b"*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%s\r\n" % (len(p), p)
        self.done = False

    def run(self):
        while not self.done:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(2)
                buf = b""
                try:
                    while b"get-master-addr-by-name" not in buf.lower() or \
                            not buf.endswith(b"\r\n"):
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        buf += chunk
                    conn.sendall(self.answer)
                    conn.recv(4096)  # until varselctl closes
                except OSError:
                    pass

    def stop(self):
        self.done = True
        self.join(2)
        self.sock.close()


def test_varselctl_asks_sentinel_for_the_master(ctx):
    """varselctl --config with [redis] sentinels asks them where the master
    is, on every run (url's host and port are not used, as in varseld): it
    works with url pointing nowhere, follows a failover once the old master
    is gone, and says which master it could not find."""
    from test_varselctl import ctl  # noqa: PLC0415 - the CLI runner lives there
    a = ctx.redis_server(subdir="redis-a")
    b = ctx.redis_server(subdir="redis-b", extra=["--replicaof", "127.0.0.1", str(a.port)])
    wait_for(lambda: replicas_online(a, 1), 20, what="the replica in sync")
    sent = ctx.sentinel(a, quorum=1)
    wait_for(lambda: sent.known()[1] == 1, 30, interval=0.2,
             what="the Sentinel to know the replica")
    sb = ctx.sandbox()
    d = ctx.daemon(a, sb, overrides={"redis": {
        "url": "redis://127.0.0.1:1/0", "sentinels": sent.addr, "master_name": MASTER}})
    r = ctx.client(a)
    tok = h.new_token()
    h.publish(r, h.device_register("kari", "phone", tok))
    wait_for(lambda: h.devices(r, h.TENANT, "kari"), 20, what="the registration")
    check(r.call("WAIT", 1, 5000) == 1, "the registration replicated")

    rc, out, err = ctl(ctx, "--config", d.config_path, "devices", "oslo", "kari")
    check_eq(0, rc, f"devices through the Sentinel ({err!r})")
    check(tok[:8] in out, f"the device listed: {out!r}")

    # A Sentinel that names the replica (lagging behind a failover): refused.
    lag = LaggingSentinel(b.port)
    lag.start()
    try:
        stale = ctx.tmp / "stale.ini"
        stale.write_text(d.config_path.read_text().replace(sent.addr, lag.addr))
        rc, out, err = ctl(ctx, "--config", stale, "devices", "oslo", "kari")
    finally:
        lag.stop()
    check_eq(1, rc, f"a replica named as master is refused ({err!r})")
    check(f"127.0.0.1:{b.port}" in err and "is not the master" in err, err)

    # Failover, then the old master is gone: the next run asks again.
    d.stop()
    with sent.client() as sc:
        check_eq("OK", sc.call("SENTINEL", "FAILOVER", MASTER), "SENTINEL FAILOVER")
    wait_for(lambda: sent.master_addr() == ("127.0.0.1", b.port), 30, interval=0.1,
             what="the Sentinel to name the replica as master")

    def promoted():
        with b.client(timeout=2) as c:
            return c.call("ROLE")[0] == "master"
    wait_for(promoted, 20, what="the replica promoted")
    a.stop()
    rc, out, err = ctl(ctx, "--config", d.config_path, "devices", "oslo", "kari")
    check_eq(0, rc, f"devices after the failover ({err!r})")
    check(tok[:8] in out, f"the device listed by the new master: {out!r}")

    # A name no Sentinel knows: an error naming it and the Sentinel asked.
    bad = ctx.tmp / "nosuch.ini"
    bad.write_text(d.config_path.read_text().replace(f"master_name = {MASTER}",
                                                     "master_name = nosuch"))
    rc, out, err = ctl(ctx, "--config", bad, "devices", "oslo", "kari")
    check_eq(1, rc, f"an unknown master name fails ({err!r})")
    check("master nosuch" in err and sent.addr in err, f"the error names both: {err!r}")
