#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer and AddressSanitizer and runs them (docs/TESTING.md,
# "Fuzzing").
#
#   scripts/fuzz.sh [TARGET...] [--runs N | --time SECONDS] [--no-build]
#
# With no TARGET, every target runs, one after the other (`strata-fuzz list` in an ordinary
# build names them; so does this script's error for an unknown name). Each starts from its
# checked-in corpus, Fuzz/corpus/TARGET (seeds from real traffic and files; scripts/fuzz-corpus.sh
# made them), plus what earlier long runs found, kept in .build-fuzz/corpus/TARGET.
#   --runs N       stop each target after N executions (the README's test command: 20000)
#   --time S       stop each target after S seconds (a long run; new inputs are kept)
#   --no-build     use the binary already in .build-fuzz
# A --runs run keeps no new inputs (it leaves the corpora as they were); a --time run adds to
# .build-fuzz/corpus/TARGET. A crash, a sanitizer report, a leak, a timeout (10 s on one input)
# or an allocation over 512 MiB is a finding: the input is written to .build-fuzz/findings/ and
# the target fails. Prints one line per target with its executions and coverage, then
# `N passed, M failed`; exits 1 when any target failed.
#
# The build is separate from the ordinary one (.build-fuzz, its own flags), so `swift build`
# is untouched; the first build compiles the package once more with the sanitizers.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/toolchain.sh

runs=""
seconds=""
build=1
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
    --runs) runs=${2:?--runs needs a count}; shift 2 ;;
    --time) seconds=${2:?--time needs seconds}; shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
    esac
done
if [ -n "$runs" ] && [ -n "$seconds" ]; then
    echo "fuzz: give --runs or --time, not both" >&2
    exit 2
fi
[ -n "$runs" ] || [ -n "$seconds" ] || runs=20000

SCRATCH=$ROOT/.build-fuzz
BINARY=$SCRATCH/debug/strata-fuzz
if [ "$build" -eq 1 ]; then
    echo "== fuzz: building strata-fuzz (libFuzzer, AddressSanitizer) into .build-fuzz"
    start=$SECONDS
    swift build --scratch-path "$SCRATCH" --product strata-fuzz \
        -Xswiftc -sanitize=fuzzer,address -Xswiftc -DSTRATA_LIBFUZZER || {
        echo "fuzz: the sanitizer build failed" >&2
        echo "0 passed, 1 failed"
        exit 1
    }
    echo "fuzz: built in $((SECONDS - start)) s"
fi
[ -x "$BINARY" ] || { echo "fuzz: no $BINARY; run without --no-build" >&2; exit 1; }

# The targets: one Fuzz/corpus directory each (StrataFuzzTests checks the directories against
# the binary's list of targets, so a new target cannot be left out here).
mapfile -t all < <(find "$ROOT/Fuzz/corpus" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | LC_ALL=C sort)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for target in "${targets[@]}"; do
    case " ${all[*]} " in *" $target "*) ;; *)
        echo "fuzz: no target $target; the targets are: ${all[*]}" >&2
        exit 2
        ;;
    esac
done

WORK=$(mktemp -d /tmp/strata-fuzz.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$SCRATCH/findings"
passed=0
failed=0
for target in "${targets[@]}"; do
    seeds=$ROOT/Fuzz/corpus/$target
    [ -d "$seeds" ] || { echo "fuzz: no corpus $seeds" >&2; failed=$((failed + 1)); continue; }
    kept=$SCRATCH/corpus/$target
    mkdir -p "$kept"
    if [ -n "$runs" ]; then
        # New inputs go to a scratch directory that is thrown away; the corpora stay as they were.
        fresh=$WORK/$target
        mkdir -p "$fresh"
        limit=(-runs="$runs")
    else
        fresh=$kept
        limit=(-max_total_time="$seconds")
    fi
    log=$WORK/$target.log
    start=$SECONDS
    # The Swift runtime's backtracer is off: libFuzzer and ASan report the trap themselves.
    STRATA_FUZZ_TARGET=$target SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$BINARY" "${limit[@]}" \
        -timeout=10 -malloc_limit_mb=512 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$SCRATCH/findings/$target-" "$fresh" "$kept" "$seeds" >"$log" 2>&1
    status=$?
    elapsed=$((SECONDS - start))
    # libFuzzer's last status line (`#N DONE cov: C ft: F corp: …`) and its final stats.
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    coverage=$(grep -oE '^#[0-9]+[[:space:]]+[A-Z]+[[:space:]]+cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 | sed -E 's/.*cov: ([0-9]+) ft: ([0-9]+)/cov \1, ft \2/')
    if [ "$status" -eq 0 ]; then
        echo "PASS fuzz $target: ${executions:-?} executions, ${coverage:-no coverage line}, ${elapsed} s"
        passed=$((passed + 1))
    else
        echo "FAIL fuzz $target (exit $status): ${executions:-?} executions, ${coverage:-no coverage line}, ${elapsed} s"
        grep -E '^(==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written|Fatal error|.*fuzz invariant)' "$log" | sed 's/^/    | /'
        tail -40 "$log" | sed 's/^/    | /'
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
