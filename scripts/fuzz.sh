#!/usr/bin/env bash
# Build the libFuzzer targets (clang, ASan+UBSan) and run each for a while.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 15; the long tier uses 600)
# Prints one "ok/FAIL fuzz_NAME (N execs)" line per target and ends with
# "N passed, N failed". A crash leaves its input in build-fuzz/crashes/.
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
make -s -j2 fuzz CC=clang BUILD=build-fuzz SANITIZER=fuzzer-no-link,address,undefined >/dev/null || {
    echo "fuzz build failed"; echo "0 passed, 1 failed"; exit 1; }
passed=0; failed=0
mkdir -p build-fuzz/crashes
for bin in build-fuzz/fuzz/fuzz_*; do
    name=$(basename "$bin"); seeds=tests/fuzz/corpus/${name#fuzz_}
    work=build-fuzz/corpus/$name; mkdir -p "$work"
    log=build-fuzz/$name.log
    args=("$work"); [ -d "$seeds" ] && args+=("$seeds")
    if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix=build-fuzz/crashes/"$name"- "${args[@]}" >"$log" 2>&1; then
        execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' ||
                grep -oE '#[0-9]+' "$log" | tail -1 | tr -d '#')
        echo "ok   $name (${execs:-?} execs in ${secs}s)"; passed=$((passed+1))
    else
        echo "FAIL $name"; tail -30 "$log"; failed=$((failed+1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
