#!/usr/bin/env bash
# Runs every end-to-end test, tests/*/test-*.sh, in sorted order, and prints PASS, FAIL or SKIP
# for each, then `N passed, M failed, K skipped`. Exits 1 if any failed (scripts/test.sh also
# fails a run with skips under CI=true).
#
# A test exiting 77 is a skip; under CI=true tests/lib.sh turns a missing client into a failure.
# A failing test's output is printed after its FAIL line; a passing test's lines that start
# with `REPORT ` (counts worth seeing, such as the conformance suite's) after its PASS line.
#
#   STRATA=PATH          the strata binary (default: .build/debug/strata, built when missing)
#   E2E_TIMEOUT=SECONDS  per-test limit (default 240); a test that needs more says so in a line
#                        `# e2e-timeout: SECONDS` of its own, and gets the larger of the two
#   E2E_FILTER=WORD      only the tests whose path contains WORD
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export STRATA=${STRATA:-$ROOT/.build/debug/strata}
TIMEOUT=${E2E_TIMEOUT:-240}

if [ ! -x "$STRATA" ]; then
    echo "run-e2e: building strata (debug)"
    [ -x /opt/swift/usr/bin/swift ] && export PATH=/opt/swift/usr/bin:$PATH
    swift build --product strata >/dev/null || { echo "run-e2e: build failed" >&2; exit 1; }
fi

passed=0
failed=0
skipped=0
failures=()
LOGDIR=$(mktemp -d /tmp/strata-e2e.XXXXXX)
trap 'rm -rf "$LOGDIR"' EXIT

# Every test runs the same binary: a rebuild during the run ("Text file busy") cannot reach it.
cp "$STRATA" "$LOGDIR/strata" || { echo "run-e2e: cannot copy $STRATA" >&2; exit 1; }
export STRATA="$LOGDIR/strata"

mapfile -t tests < <(printf '%s\n' tests/*/test-*.sh | LC_ALL=C sort)
for test in "${tests[@]}"; do
    [ -f "$test" ] || continue
    case "$test" in *"${E2E_FILTER:-}"*) ;; *) continue ;; esac
    name=${test#tests/}
    name=${name%.sh}
    log="$LOGDIR/${name//\//_}.log"
    start=$SECONDS
    limit=$TIMEOUT
    own=$(sed -n 's/^# e2e-timeout: *\([0-9][0-9]*\) *$/\1/p' "$test" | head -1)
    [ -n "$own" ] && [ "$own" -gt "$limit" ] && limit=$own
    timeout -k 10 "$limit" bash "$test" >"$log" 2>&1
    status=$?
    elapsed=$((SECONDS - start))
    if [ $status -eq 0 ]; then
        echo "PASS $name (${elapsed}s)"
        sed -n 's/^REPORT /    /p' "$log"
        passed=$((passed + 1))
    elif [ $status -eq 77 ]; then
        echo "SKIP $name: $(grep -m1 '^SKIP' "$log" | sed 's/^SKIP [^:]*: //')"
        skipped=$((skipped + 1))
    else
        [ $status -eq 124 ] && echo "(timed out after ${limit}s)" >>"$log"
        echo "FAIL $name (exit $status, ${elapsed}s)"
        sed 's/^/    | /' "$log"
        failed=$((failed + 1))
        failures+=("$name")
    fi
done

[ $failed -gt 0 ] && echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
