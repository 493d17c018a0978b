#!/usr/bin/env bash
# The test tiers. With no arguments: the CI tier.
#
#   scripts/run-tests.sh            set up, build with ASan+UBSan into
#                                   build-asan/, run unit + integration tests
#   scripts/run-tests.sh --plain    same on a plain build (build/)
#   scripts/run-tests.sh --long     long tier: plain build, unit tests under
#                                   valgrind, integration tests incl. long ones
#   scripts/run-tests.sh DIR        no set-up, no build: test the binaries
#                                   already in DIR (what `make test` does)
#   -k PATTERN                      only integration tests matching PATTERN
#
# Prints every stage's output and ends with one line "N passed, N failed"
# (totals over all stages; a failed set-up or build counts as a failure).
# Exits non-zero if anything failed or no test ran. Needs no stdin.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2

mode=asan
build_dir=
kpat=
while [[ $# -gt 0 ]]; do
    case "$1" in
    --plain) mode=plain ;;
    --long) mode=long ;;
    -k) kpat=${2:?-k needs a pattern}; shift ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "run-tests.sh: unknown option '$1'" >&2; exit 2 ;;
    *) build_dir=$1 ;;
    esac
    shift
done

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export PYTHONDONTWRITEBYTECODE=1

passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

finish() {
    echo
    echo "$passed passed, $failed failed"
    if [[ $failed -ne 0 || $passed -eq 0 ]]; then
        exit 1
    fi
    exit 0
}

# Add the last "[word:] N passed, N failed" line of $log to the totals;
# a stage without one counts as one failure.
add_counts() {
    local stage=$1 rc=$2 line p f
    line=$(grep -E '^([A-Za-z-]+: )?[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1 || true)
    if [[ -z "$line" ]]; then
        echo "run-tests: $stage printed no summary (exit $rc): counted as 1 failure"
        failed=$((failed + 1))
        return
    fi
    line=${line#*: }
    p=$(sed -E 's/^([0-9]+) passed, ([0-9]+) failed.*/\1/' <<<"$line")
    f=$(sed -E 's/^([0-9]+) passed, ([0-9]+) failed.*/\2/' <<<"$line")
    passed=$((passed + p))
    failed=$((failed + f))
    if [[ $rc -ne 0 && $f -eq 0 && $p -ne 0 ]]; then
        echo "run-tests: $stage exited $rc with no failed test: counted as 1 failure"
        failed=$((failed + 1))
    fi
}

if [[ -z "$build_dir" ]]; then
    setup_args=()
    [[ $mode == long ]] && setup_args=(--long)
    echo "== setup"
    if ! bash scripts/setup.sh "${setup_args[@]}" </dev/null; then
        echo "run-tests: setup failed"
        failed=$((failed + 1))
        finish
    fi

    case $mode in
    asan) build_dir=build-asan; make_args=("SANITIZER=address,undefined" BUILD=build-asan) ;;
    *) build_dir=build; make_args=(BUILD=build) ;;
    esac
    echo "== build ($mode): make -j2 ${make_args[*]}"
    start=$SECONDS
    if ! make -j2 "${make_args[@]}" </dev/null; then
        echo "run-tests: build failed"
        failed=$((failed + 1))
        finish
    fi
    echo "== build took $((SECONDS - start))s"
fi

echo "== unit tests ($build_dir/tests)"
unit_env=()
[[ $mode == long ]] && unit_env=(VALGRIND=1)
env "${unit_env[@]}" bash scripts/run-unit.sh "$build_dir/tests" </dev/null 2>&1 | tee "$log"
add_counts unit "${PIPESTATUS[0]}"

echo "== config keys documented"
if bash scripts/check-config-docs.sh </dev/null; then
    passed=$((passed + 1))
else
    echo "run-tests: a config key is missing from the example or docs/configuration.md"
    failed=$((failed + 1))
fi

echo "== event schema (docs/events.schema.json vs docs/events.md examples)"
python3 tests/schema/test_schema.py </dev/null 2>&1 | tee "$log"
add_counts schema "${PIPESTATUS[0]}"

if [[ $mode != long ]]; then
    echo "== fuzzing (short run per target; the long tier runs 10 minutes each)"
    bash scripts/fuzz.sh "${FUZZ_SECONDS:-10}" </dev/null 2>&1 | tee "$log"
    add_counts fuzz "${PIPESTATUS[0]}"
else
    echo "== fuzzing (10 minutes per target)"
    bash scripts/fuzz.sh "${FUZZ_SECONDS:-600}" </dev/null 2>&1 | tee "$log"
    add_counts fuzz "${PIPESTATUS[0]}"
fi

echo "== integration tests"
it_args=(--build "$build_dir")
[[ $mode == long ]] && it_args+=(--long)
[[ -n "$kpat" ]] && it_args+=(-k "$kpat")
python3 tests/integration/run.py "${it_args[@]}" </dev/null 2>&1 | tee "$log"
add_counts integration "${PIPESTATUS[0]}"

if [[ $mode == long ]]; then
    # varseld under valgrind memcheck for the end-to-end paths (10-30x slower).
    echo "== integration tests with varseld under valgrind"
    VARSEL_VALGRIND=1 python3 tests/integration/run.py --build "$build_dir" \
        -k "test_skeleton|test_retry|test_fcm|test_reload|test_queue.test_redis_restart" \
        </dev/null 2>&1 | tee "$log"
    add_counts valgrind "${PIPESTATUS[0]}"
fi

finish
