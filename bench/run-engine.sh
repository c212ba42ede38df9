#!/usr/bin/env bash
# Engine benchmarks (see bench/README.md). Builds StrataBench in release mode, runs the fio
# baselines on a plain file in BENCH_DIR, then StrataBench itself, and prints one markdown
# report on stdout (progress goes to stderr). Reports medians and ratios; never fails on a timing.
#
# Environment:
#   BENCH_DIR       where pools and fio files go (default /work/bench-tmp; must be outside the repo)
#   BENCH_SECONDS   seconds per timed IOPS measurement (default 5)
#   BENCH_RAND_MIB  bytes of the 4 KiB random-write comparison, MiB (default 1024)
#   BENCH_SEQ_MIB   bytes of the 1 MiB sequential-write comparison, MiB (default 2048)
#   BENCH_REPS      repetitions of each fio / engine comparison run (default 3)
#   BENCH_SKIP_BUILD=1  reuse an existing .build-release/release/StrataBench
# Arguments, if any, choose StrataBench benchmarks (snapshot-io snapshot-create diff rawfile);
# fio runs only when rawfile is among them (the default is all four).
set -euo pipefail

export PATH=/opt/swift/usr/bin:$PATH
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/work/bench-tmp}
SECONDS_PER=${BENCH_SECONDS:-5}
RAND_MIB=${BENCH_RAND_MIB:-1024}
SEQ_MIB=${BENCH_SEQ_MIB:-2048}
REPS=${BENCH_REPS:-3}
SCRATCH=$ROOT/.build-release
BENCHMARKS=("$@")
[ ${#BENCHMARKS[@]} -eq 0 ] && BENCHMARKS=(rawfile snapshot-io snapshot-create diff)

say() { echo "[run-engine] $*" >&2; }

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
case "$BENCH_DIR/" in
"$ROOT"/*) say "BENCH_DIR ($BENCH_DIR) is inside the repository; choose a directory outside it"; exit 2 ;;
esac
# The largest pool is a 20 GiB sparse file holding about 17 GiB of data.
FREE_GIB=$(df --output=avail -B1G "$BENCH_DIR" | tail -1 | tr -d ' ')
if [ "$FREE_GIB" -lt 24 ]; then
    say "only ${FREE_GIB} GiB free in $BENCH_DIR; the benchmarks need about 24 GiB"
    exit 2
fi

FIO_DIR=$BENCH_DIR/fio
cleanup() { rm -rf "$FIO_DIR"; rmdir "$BENCH_DIR" 2>/dev/null || true; }
trap cleanup EXIT

BIN=$SCRATCH/release/StrataBench
if [ "${BENCH_SKIP_BUILD:-0}" = 1 ] && [ -x "$BIN" ]; then
    say "reusing $BIN (BENCH_SKIP_BUILD=1)"
else
    say "building StrataBench (release)"
    # Other work may touch sources during the build; retry once if SwiftPM reports that.
    swift build -c release --scratch-path "$SCRATCH" --product StrataBench >&2 ||
        swift build -c release --scratch-path "$SCRATCH" --product StrataBench >&2
fi

echo "## Strata engine benchmarks"
echo
echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "- commit: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- Sources || echo ' (with uncommitted changes under Sources/)')"
echo "- toolchain: $(swift --version 2>/dev/null | head -1)"
echo "- nproc: $(nproc); memory: $(free -g | awk '/^Mem:/ {print $2 " GiB total, " $7 " GiB available"}')"
echo "- BENCH_DIR: $BENCH_DIR on $(df -T "$BENCH_DIR" | awk 'NR == 2 {print $2 " (" $1 ")"}')"
echo "- fio: $(fio --version)"
echo

if [[ " ${BENCHMARKS[*]} " == *" rawfile "* ]]; then
    command -v fio >/dev/null || { say "fio is missing: apt-get install -y fio"; exit 2; }
    mkdir -p "$FIO_DIR"
    COMMON=(--ioengine=psync --direct=0 --end_fsync=1 --numjobs=1 --invalidate=0 --output-format=json)
    say "fio: prefilling ${RAND_MIB} MiB for 4 KiB random writes"
    fio --name=prefill --filename="$FIO_DIR/rand.dat" --rw=write --bs=1M --size="${RAND_MIB}M" \
        "${COMMON[@]}" >/dev/null
    for i in $(seq 1 "$REPS"); do
        sync
        say "fio: 4 KiB random writes, run $i"
        fio --name=rand --filename="$FIO_DIR/rand.dat" --rw=randwrite --bs=4k --size="${RAND_MIB}M" \
            --randrepeat=1 "${COMMON[@]}" >"$FIO_DIR/rand-$i.json"
    done
    rm -f "$FIO_DIR/rand.dat"
    for i in $(seq 1 "$REPS"); do
        rm -f "$FIO_DIR/seq.dat"
        sync
        say "fio: 1 MiB sequential writes into a new file, run $i"
        fio --name=seq --filename="$FIO_DIR/seq.dat" --rw=write --bs=1M --size="${SEQ_MIB}M" \
            --fallocate=none "${COMMON[@]}" >"$FIO_DIR/seq-$i.json"
    done
    rm -f "$FIO_DIR/seq.dat"
fi

say "StrataBench ${BENCHMARKS[*]}"
BENCH_DIR=$BENCH_DIR "$BIN" "${BENCHMARKS[@]}" --seconds "$SECONDS_PER" --fio "$FIO_DIR" \
    --rand-mib "$RAND_MIB" --seq-mib "$SEQ_MIB" --reps "$REPS"
