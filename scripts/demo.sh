#!/usr/bin/env bash
# The varsel demo, from a fresh Debian 12 machine:
#   installs what is missing (scripts/setup.sh), builds (make -j2, plain
#   build in build/), then runs tests/integration/demo.py: redis-server,
#   varsel-sandbox (fake APNs) and varseld on free loopback ports, sample
#   guardians and events, and a printout of what the phones received.
# Everything started is stopped by PID before it exits. Options are passed
# to demo.py (--keep keeps the temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh </dev/null
echo "== make -j2"
if ! make -j2 </dev/null >/tmp/varsel-demo-build.$$.log 2>&1; then
    tail -n 40 /tmp/varsel-demo-build.$$.log >&2
    echo "demo: build failed (full log: /tmp/varsel-demo-build.$$.log)" >&2
    exit 1
fi
rm -f /tmp/varsel-demo-build.$$.log
echo "== build ok"
exec python3 tests/integration/demo.py --build build "$@"
