#!/usr/bin/env bash
# Run unit-test binaries and add up their results.
#
#   scripts/run-unit.sh [BINARY|DIR]...     (default: build/tests)
#
# A DIR stands for every executable file in it. Each binary's output is
# echoed; its closing "N passed, N failed" line is added to the totals. A
# binary that dies without that line, or whose exit status disagrees with
# it (crash, sanitizer abort, leak report at exit), counts one failure
# more. Each binary gets UNIT_TIMEOUT seconds (default 600).
#
# With VALGRIND=1 every binary runs under valgrind (memcheck, leaks,
# errors make the binary fail).
#
# Ends with "unit: N passed, N failed"; exits 1 if anything failed or no
# test ran.
set -uo pipefail

timeout_s=${UNIT_TIMEOUT:-600}
args=("$@")
[[ ${#args[@]} -eq 0 ]] && args=(build/tests)

bins=()
for a in "${args[@]}"; do
    if [[ -d "$a" ]]; then
        while IFS= read -r f; do
            bins+=("$f")
        done < <(find "$a" -maxdepth 1 -type f -perm -u+x ! -name '*.*' | sort)
    elif [[ -f "$a" && -x "$a" ]]; then
        bins+=("$a")
    elif [[ ! -e "$a" && "$a" == */tests ]]; then
        echo "run-unit: no directory $a: no unit-test binaries built" >&2
    else
        echo "run-unit: not an executable or directory: $a" >&2
        bins+=("$a") # counted as a failure below
    fi
done

wrap=()
if [[ "${VALGRIND:-0}" == 1 ]]; then
    export TEST_TIMEOUT_S=${TEST_TIMEOUT_S:-600} # a test's alarm: valgrind is 10-50x slower
    wrap=(valgrind -q --error-exitcode=99 --leak-check=full
          --errors-for-leak-kinds=definite --trace-children=yes
          --child-silent-after-fork=no)
fi

total_pass=0
total_fail=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT

for b in "${bins[@]}"; do
    name=$(basename "$b")
    echo "== unit $name"
    if [[ ! -x "$b" ]]; then
        echo "FAIL $name (missing)"
        total_fail=$((total_fail + 1))
        continue
    fi
    timeout --kill-after=10 "$timeout_s" "${wrap[@]}" "$b" </dev/null >"$out" 2>&1
    rc=$?
    cat "$out"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out" | tail -n 1 || true)
    if [[ -z "$line" ]]; then
        echo "FAIL $name (exit $rc, no summary line)"
        total_fail=$((total_fail + 1))
        continue
    fi
    p=$(sed -E 's/^([0-9]+) passed, ([0-9]+) failed.*/\1/' <<<"$line")
    f=$(sed -E 's/^([0-9]+) passed, ([0-9]+) failed.*/\2/' <<<"$line")
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    if [[ $rc -ne 0 && $f -eq 0 ]]; then
        [[ $rc -eq 124 ]] && why="timeout after ${timeout_s}s" || why="exit $rc"
        echo "FAIL $name ($why although every test passed: sanitizer or leak report?)"
        total_fail=$((total_fail + 1))
    fi
done

echo "unit: $total_pass passed, $total_fail failed"
if [[ $total_fail -ne 0 || $total_pass -eq 0 ]]; then
    exit 1
fi
exit 0
