#!/usr/bin/env python3
"""First rough throughput figure of the demo path (issue #2's closing note).

Preloads EVENTS message.new events, each to RECIPIENTS guardians with one
iPhone, into the stream; starts varsel-sandbox and varseld (plain build,
log level warn, ONE APNs connection); measures the time from varseld's start
until every delivery has a receipt, and reports notifications per second.

    python3 bench/demo_rate.py [--events 2000] [--recipients 5] [--build build]

The full benchmark suite (h2load ceiling, node-apn peer, callgrind cost)
is bench/run.sh (docs/performance.md); this is the walking skeleton's first
number, on loopback, registrations included.
"""
import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))
import harness as h  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--recipients", type=int, default=5)
    ap.add_argument("--build", default="build")
    ap.add_argument("--connections", type=int, default=1)
    a = ap.parse_args()
    build = (REPO / a.build).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="varsel-bench-"))
    redis = h.RedisServer(tmp)
    redis.start()
    sbx = h.Sandbox(build / "varsel-sandbox", tmp)
    sbx.gen_certs()
    sbx.gen_apns_key()
    sbx.start()
    try:
        r = redis.client()
        users = [f"g{i}" for i in range(a.events * a.recipients)]
        regs = [h.device_register(u, "phone", h.new_token()) for u in users]
        h.publish_many(r, regs)
        evs = []
        for e in range(a.events):
            rcpt = users[e * a.recipients:(e + 1) * a.recipients]
            evs.append(h.message_new(rcpt, f"t{e}", "Lærer Hansen", "Bakken skole",
                                     subject="Foreldremøte"))
        h.publish_many(r, evs)
        total = a.events * a.recipients
        d = h.Daemon(build / "varseld", tmp, redis.url, sandbox=sbx, log_level="warn",
                     overrides={"app demo": {"apns_max_connections": str(a.connections)},
                                "redis": {"batch_size": "200"}})
        t0 = time.monotonic()
        d.start(wait_ready=False)
        h.wait_for(lambda: r.xlen(h.PREFIX + "receipts") >= total, timeout=600,
                   interval=0.05, what="all receipts")
        dt = time.monotonic() - t0
        d.stop()
        sent = sum(1 for rc in h.receipts(r) if rc.get("status") == "sent")
        result = {"events": a.events, "recipients_per_event": a.recipients,
                  "notifications": total, "sent": sent, "connections": a.connections,
                  "seconds": round(dt, 3), "notifications_per_s": round(total / dt, 1)}
        print(json.dumps(result))
        print(f"{total} notifications over {a.connections} APNs connection(s) in "
              f"{dt:.2f} s: {total / dt:.0f}/s (includes start-up and registry reads)")
    finally:
        h.stop_all_processes()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
