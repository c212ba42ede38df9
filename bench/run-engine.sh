#!/usr/bin/env bash
# Engine benchmarks (see bench/README.md). Builds StrataBench in release mode; runs the fio
# baselines on a plain file in BENCH_DIR interleaved with StrataBench's engine and pwrite-loop
# runs of the same patterns (goal 4), then StrataBench's other benchmarks (goals 1-3); prints
# one markdown report on stdout (progress goes to stderr). Reports medians and ratios; never
# fails on a timing. Takes about 5-6 minutes on a 2-core VM.
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

if [[ " ${BENCHMARKS[*]} " == *" rawfile "* ]] && ! command -v fio >/dev/null; then
    say "fio is missing; install it (Debian: apt-get install -y fio)"
    exit 2
fi

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
echo "- fio: $(fio --version 2>/dev/null || echo 'not installed')"
echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other processes on the machine add noise; the ratios are paired to limit that)"
echo

STEP=(--fio "$FIO_DIR" --rand-mib "$RAND_MIB" --seq-mib "$SEQ_MIB")
REST=()
for b in "${BENCHMARKS[@]}"; do [ "$b" = rawfile ] || REST+=("$b"); done

# One side of one repetition of goal 4: fio, or StrataBench's engine or pwrite-loop side.
run_side() { # pattern side repetition
    local pattern=$1 side=$2 i=$3 prefill
    if [ "$side" != fio ]; then
        BENCH_DIR=$BENCH_DIR "$BIN" rawfile-step "$pattern" --side "$side" --rep "$i" "${STEP[@]}"
        return
    fi
    if [ "$pattern" = random ]; then
        # 64 KiB prefill matches how the engine writes its pool file; 1 MiB for comparison.
        for prefill in 64k 1m; do
            local report=$FIO_DIR/random-fio-$i.json
            [ "$prefill" = 1m ] && report=$FIO_DIR/random1m-fio-$i.json
            rm -f "$FIO_DIR/rand.dat"
            say "fio: 4 KiB random writes (file prefilled with ${prefill} writes), run $i"
            fio --name=prefill --filename="$FIO_DIR/rand.dat" --rw=write --bs="$prefill" --size="${RAND_MIB}M" \
                "${COMMON[@]}" >/dev/null
            sync
            fio --name=rand --filename="$FIO_DIR/rand.dat" --rw=randwrite --bs=4k --size="${RAND_MIB}M" \
                --randrepeat=1 "${COMMON[@]}" >"$report"
        done
        rm -f "$FIO_DIR/rand.dat"
    else
        rm -f "$FIO_DIR/seq.dat"
        sync
        say "fio: 1 MiB sequential writes into a new file, run $i"
        fio --name=seq --filename="$FIO_DIR/seq.dat" --rw=write --bs=1M --size="${SEQ_MIB}M" \
            --fallocate=none "${COMMON[@]}" >"$FIO_DIR/sequential-fio-$i.json"
        rm -f "$FIO_DIR/seq.dat"
    fi
}

if [[ " ${BENCHMARKS[*]} " == *" rawfile "* ]]; then
    mkdir -p "$FIO_DIR"
    COMMON=(--ioengine=psync --direct=0 --end_fsync=1 --numjobs=1 --invalidate=0 --output-format=json)
    # The order of the three sides rotates each repetition, so none always runs first.
    SIDES=(fio engine pwrite)
    for i in $(seq 1 "$REPS"); do
        for pattern in random sequential; do
            for k in 0 1 2; do
                run_side "$pattern" "${SIDES[$(((i - 1 + k) % 3))]}" "$i"
            done
        done
    done
    BENCH_DIR=$BENCH_DIR "$BIN" rawfile "${STEP[@]}"
fi

if [ ${#REST[@]} -gt 0 ]; then
    say "StrataBench ${REST[*]}"
    BENCH_DIR=$BENCH_DIR "$BIN" "${REST[@]}" --seconds "$SECONDS_PER"
fi

echo "- load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
