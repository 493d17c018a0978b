#!/bin/sh
# varsel benchmark suite (issue #7).
#
#   bench/run.sh list                 the benches and what they measure
#   bench/run.sh throughput [opts]    one bench; --help lists its options
#   bench/run.sh all [--quick]        every bench but soak, then a side-by-side table
#   bench/run.sh soak                 1,000,000 notifications (long)
#
# Results: bench/results/NAME-YYYYmmdd-HHMMSS.json (+ .svg charts); the
# summary goes to stdout, progress to stderr. Uses the plain build in
# build/ (built with `make -j2` if varseld or varsel-sandbox is missing;
# --build DIR for another one). Everything listens on 127.0.0.1 only.
set -eu
cd "$(dirname "$0")/.."

need_build=1
for a in "$@"; do
    case "$a" in --build|--build=*) need_build=0 ;; esac
done
case "${1:-list}" in list|-h|--help) need_build=0 ;; esac
if [ "$need_build" = 1 ] && { [ ! -x build/varseld ] || [ ! -x build/varsel-sandbox ]; }; then
    echo "bench: building build/ (make -j2)" >&2
    make -j2 >&2
fi
for tool in redis-server h2load; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "bench: $tool is missing (apt-get install redis-server nghttp2-client)" >&2
        exit 1
    }
done
exec python3 bench/suite.py "$@"
