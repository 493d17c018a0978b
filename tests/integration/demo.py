#!/usr/bin/env python3
"""The varsel demo: a whole delivery on one machine, printed for a person.

    python3 tests/integration/demo.py [--build DIR] [--keep]

Starts redis-server (free port, temp dir), varsel-sandbox as APNs and as
FCM v1 + Google's OAuth token endpoint (fresh certificates, APNs key and
service account) and varseld with a generated config; registers a
few guardians' devices in tenant "oslo"; publishes sample events (and one
malformed one); waits until every delivery has a final receipt; then prints
what each "phone" received, the receipts and the dead letter. Everything it
started is stopped by PID before it exits (0 on success, 1 on failure, with
the files kept and the logs' tails printed).
"""

import argparse
import json
import shutil
import sys
import tempfile
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h  # noqa: E402

DEVICES = [
    # user, device, label, locale, environment (APNs) or "fcm" (Android)
    ("kari", "kari-iphone", "iPhone", "nb", "production"),
    ("kari", "kari-ipad", "iPad", "nb", "sandbox"),
    ("ola", "ola-iphone", "iPhone", "nn", "production"),
    ("ola", "ola-pixel", "Android", "nn", "fcm"),
    ("emma", "emma-galaxy", "Android", "en", "fcm"),
]


def hhmmss(ms):
    t = datetime.fromtimestamp(ms / 1000)
    return t.strftime("%H:%M:%S.") + f"{int(ms) % 1000:03d}"


def section(title):
    print()
    print(title)
    print("-" * len(title))


def build_events():
    msg = h.message_new([{"user": "kari", "badge": 2}, "ola", {"user": "emma", "badge": 1}],
                        thread="7B-foreldre", sender_name="Lærer Hansen",
                        school_name="Bjølsen skole",
                        subject="Tur til Frognerseteren fredag", id="msg-7b-0042")
    rep = h.absence_reported(["kari", "ola"], student="s-nora", student_name="Nora",
                             reported_by="kari", date="2026-11-30", kind="day",
                             id="absence-nora-2026-11-30")
    alert = h.absence_alert(["kari", "ola"], student="s-nora", student_name="Nora",
                            date="2026-12-01", priority="high",
                            id="alert-nora-2026-12-01")
    return [msg, rep, alert]


def expected_deliveries(events, devices):
    """(event id, 'user:device') for every delivery the events should cause."""
    out = set()
    for ev in events:
        for rcp in ev["recipients"]:
            user = rcp if isinstance(rcp, str) else rcp["user"]
            if user == ev.get("reported_by"):
                continue  # the guardian who reported it is not told
            for u, dev, *_ in devices:
                if u == user:
                    out.add((ev["id"], f"{u}:{dev}"))
    return out


def run(build, root):
    rs = h.RedisServer(root / "redis").start()
    sb = h.Sandbox(build / "varsel-sandbox", root / "sandbox", fcm=True).start()
    d = h.Daemon(build / "varseld", root, rs.url, sb, consumer="demo-1",
                 log_level="info",
                 overrides={f"app {h.APP}": {
                     "fcm_service_account_file": str(sb.service_account),
                     "fcm_url": sb.fcm_url, "fcm_token_url": sb.token_url}})
    procs = [d, sb, rs]
    r = None
    try:
        d.start()
        r = rs.client()
        print(f"redis-server   127.0.0.1:{rs.port} (pid {rs.proc.pid})")
        print(f"varsel-sandbox APNs production :{sb.ports['apns']}, "
              f"sandbox :{sb.ports['apns_sandbox']}, FCM + OAuth :{sb.ports['fcm']} "
              f"(pid {sb.proc.pid})")
        print(f"varseld        consumer demo-1 (pid {d.proc.pid}), config {d.config_path}")

        section("1. Guardians log in (device.register)")
        tokens = {}
        regs = []
        for user, dev, label, loc, env in DEVICES:
            if env == "fcm":
                tok = h.new_fcm_token()
                regs.append(h.device_register(user, dev, tok, locale=loc, platform="android"))
            else:
                tok = h.new_token()
                regs.append(h.device_register(user, dev, tok, locale=loc, environment=env))
            tokens[tok] = (user, dev)
        h.publish_many(r, regs)
        h.wait_for(lambda: all(dev in h.devices(r, "oslo", u) for u, dev, *_ in DEVICES),
                   20, what="the devices in the registry")
        for user, dev, label, loc, env in DEVICES:
            e = h.devices(r, "oslo", user)[dev]
            where = "FCM" if e.get("platform") == "android" else f"APNs {e.get('environment')}"
            print(f"  {user:<5} {dev:<12} {label:<8} locale {e.get('locale')}  "
                  f"{where:<16}  token {h.short(e.get('token'))}")

        section("2. The school's systems publish events (XADD varsel:events; the "
                "unreported-absence alert to varsel:urgent, served first)")
        events = build_events()
        malformed = h.message_new("ola", thread="x", sender_name="Feil", school_name="Feil",
                                  id="msg-broken-1")
        bulk = [ev for ev in events if ev["type"] != "absence.alert"] + [malformed]
        urgent = [ev for ev in events if ev["type"] == "absence.alert"]
        ids = dict(zip((ev["id"] for ev in bulk), h.publish_many(r, bulk)))
        ids.update(zip((ev["id"] for ev in urgent),
                       (f"{x} (urgent)" for x in h.publish_many(r, urgent,
                                                                stream="varsel:urgent"))))
        for ev, eid in ((ev, ids[ev["id"]]) for ev in events + [malformed]):
            rcp = ev["recipients"]
            who = ", ".join(x if isinstance(x, str) else x["user"] for x in rcp) \
                if isinstance(rcp, list) else repr(rcp)
            extra = f", reported by {ev['reported_by']}" if ev.get("reported_by") else ""
            bad = "   (malformed: recipients is a string)" if ev is malformed else ""
            print(f"  {eid:<16} {ev['type']:<17} to {who}{extra}{bad}")

        want = expected_deliveries(events, DEVICES)
        ev_ids = {ev["id"] for ev in events}

        def final():
            got = {(x.get("event"), f"{x.get('user')}:{x.get('device')}")
                   for x in h.receipts(r)
                   if x.get("event") in ev_ids and x.get("status") in h.FINAL_STATUSES}
            return want <= got and r.xpending()["count"] == 0 and h.dead_letters(r)
        h.wait_for(final, 60, interval=0.1,
                   what=lambda: f"final receipts for {len(want)} deliveries")

        section("3. What the phones received (from the fake APNs and FCM)")
        reg = {}
        for user in sorted({u for u, *_ in DEVICES}):
            for dev, e in h.devices(r, "oslo", user).items():
                reg[e.get("token")] = (user, dev, e)
        recs = sorted([x for x in sb.records() if x.get("provider") in ("apns", "fcm")],
                      key=lambda x: x.get("at", 0))
        for user, dev, label, loc, env in DEVICES:
            mine = [x for x in recs if reg.get(x.get("token"), (None, None))[:2] == (user, dev)]
            via = "FCM" if env == "fcm" else f"{env} APNs"
            print(f"  {user} · {label} ({dev}, {loc}, {via})")
            if not mine:
                print("      (nothing)")
            for x in mine:
                tags = []
                if x.get("provider") == "fcm":
                    m = (x.get("payload") or {}).get("message") or {}
                    alert = m.get("notification") or {}
                    a = m.get("android") or {}
                    tags.append(f"priority {a.get('priority')}")
                    an = a.get("notification") or {}
                    if an.get("channel_id"):
                        tags.append(f"channel {an['channel_id']}")
                    if an.get("tag"):
                        tags.append(f"tag {an['tag']}")
                else:
                    aps = (x.get("payload") or {}).get("aps") or {}
                    alert = aps.get("alert") or {}
                    if isinstance(alert, str):
                        alert = {"body": alert}
                    if "badge" in aps:
                        tags.append(f"badge {aps['badge']}")
                    if aps.get("thread-id"):
                        tags.append(f"thread {aps['thread-id']}")
                    if aps.get("interruption-level"):
                        tags.append(aps["interruption-level"])
                status = "" if x.get("status") == 200 else f"  [HTTP {x.get('status')} {x.get('reason')}]"
                print(f"    {hhmmss(x.get('at', 0))}  {alert.get('title', '')}{status}")
                print(f"                  {alert.get('body', '')}")
                if tags:
                    print(f"                  ({', '.join(tags)})")

        section("4. Receipts (varsel:receipts)")
        rcpts = [x for x in h.receipts(r) if x.get("event") in ev_ids]
        types = {ev["id"]: ev["type"] for ev in events}
        counts = {}
        for x in rcpts:
            counts[x.get("status")] = counts.get(x.get("status"), 0) + 1
            ud = f"{x.get('user')}:{x.get('device')}"
            print(f"  {types.get(x.get('event'), '?'):<17} {ud:<18}"
                  f" {x.get('status'):<13} HTTP {x.get('http_status') or '-':<4}"
                  f" {x.get('latency_ms') or '-':>5} ms  {x.get('platform'):<8}"
                  f" id {(x.get('provider_id') or '-').split('/')[-1][:14]}")
        print("  total: " + ", ".join(f"{n} {st}" for st, n in sorted(counts.items())))
        for ev in events:
            st = h.status_of(r, ev["tenant"], ev["id"])
            print(f"  status {h.status_key(ev['tenant'], ev['id'])}: "
                  + ", ".join(f"{k}={v}" for k, v in sorted(st.items())))

        section("5. Dead letters (varsel:dead)")
        for x in h.dead_letters(r):
            print(f"  {x['_id']}  code {x.get('code')}: {x.get('reason')}")
            print(f"      from {x.get('source_stream')} entry {x.get('source_id')}")
        print()
        print(f"pending in group {h.GROUP}: {r.xpending()['count']}")
        ok = True
    finally:
        if r is not None:
            r.close()
        rc = None
        for p in procs:
            try:
                if p is d:
                    rc = p.stop()
                else:
                    p.stop()
            except Exception as e:  # noqa: BLE001
                print(f"demo: stopping {type(p).__name__}: {e}", file=sys.stderr)
    if rc not in (0, None):
        print(f"demo: varseld exited {rc} on SIGTERM", file=sys.stderr)
        return False
    print("stopped varseld, varsel-sandbox and redis-server")
    return ok


def main():
    ap = argparse.ArgumentParser(description="varsel demo")
    ap.add_argument("--build", default="build")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    build = Path(args.build)
    if not build.is_absolute():
        build = (h.REPO / build).resolve()
    for b in ("varseld", "varsel-sandbox"):
        if not (build / b).exists():
            print(f"demo: {build / b} is not built (run make)", file=sys.stderr)
            return 1
    root = Path(tempfile.mkdtemp(prefix="varsel-demo-"))
    print("varsel demo: school-home notifications through a fake APNs")
    print(f"files in {root}")
    ok = False
    try:
        ok = run(build, root)
    except Exception as e:  # noqa: BLE001
        print(f"\ndemo failed: {e}", file=sys.stderr)
        for name in ("varseld.log", "sandbox/sandbox.log"):
            lines = h.tail(root / name, 25)
            if lines:
                print(f"--- last lines of {root / name}", file=sys.stderr)
                for line in lines:
                    print(f"  | {line}", file=sys.stderr)
    finally:
        h.stop_all_processes()
    if ok and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    elif not ok:
        print(f"demo: files kept in {root}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
