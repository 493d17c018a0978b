"""Back-pressure (issue #4, long tier): a backlog of 1,000,000 stream
entries queued before varseld starts. Intake reads only while the in-flight
window has room, so peak memory follows the window, not the backlog.

Run with a plain build (sanitizers distort memory):
    scripts/run-tests.sh --long -k backlog
"""

import time

import harness as h
from harness import check, wait_for

ENTRIES = 1_000_000
USERS = 1000

# Fill the stream inside Redis: one EVAL per 50,000 entries.
FILL = """
local n = tonumber(ARGV[1])
local base = tonumber(ARGV[2])
for i = 0, n - 1 do
  local k = base + i
  local u = 'bl' .. (k % tonumber(ARGV[3]))
  redis.call('XADD', KEYS[1], '*', 'event',
    '{"v":1,"id":"bl-' .. k .. '","type":"message.new","tenant":"oslo",' ..
    '"occurred_at":"2026-11-30T08:00:00Z","recipients":["' .. u .. '"],' ..
    '"thread":"t","sender_name":"Rektor","school_name":"Skolen"}')
end
return n
"""


def vm_hwm_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


@h.long_test
@h.timeout(1800)
def test_backlog_million(ctx):
    rs = ctx.redis_server()
    sb = ctx.sandbox(extra=["--bench"])
    r = ctx.client(rs)
    users = [f"bl{i}" for i in range(USERS)]
    h.publish_many(r, [h.device_register(u, "phone", h.new_token()) for u in users])
    window = 2000
    d = ctx.daemon(rs, sb, log_level="warn",
                   overrides={"delivery": {"inflight_window": str(window)},
                              "redis": {"batch_size": "200",
                                        "receipts_maxlen": "2000000"}})
    wait_for(lambda: h.devices(r, h.TENANT, users[-1]), 60, what="registrations")
    d.stop()
    t0 = time.monotonic()
    for base in range(0, ENTRIES, 50_000):
        r.call("EVAL", FILL, "1", h.STREAM, "50000", str(base), str(USERS))
    fill_s = time.monotonic() - t0
    d.start(wait_ready=False)
    pid = d.proc.pid
    t1 = time.monotonic()
    samples = []

    def done():
        samples.append(vm_hwm_kb(pid))
        return r.xlen(h.PREFIX + "receipts") >= ENTRIES and r.xpending()["count"] == 0
    wait_for(done, 1500, interval=2.0, what="1,000,000 receipts")
    took = time.monotonic() - t1
    peak_mb = max(samples) / 1024
    d.stop()
    ctx.note(f"{ENTRIES} entries preloaded in {fill_s:.0f}s; delivered in {took:.0f}s "
             f"({ENTRIES / took:.0f}/s); peak RSS {peak_mb:.1f} MB with a window of {window}")
    # Budget: the process baseline plus a few KiB per in-flight delivery and
    # per job; far below what a million entries would take.
    check(peak_mb < 64, f"peak RSS {peak_mb:.1f} MB exceeds the window's budget")
