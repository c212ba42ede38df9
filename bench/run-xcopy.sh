#!/usr/bin/env bash
# Copy offload benchmark: EXTENDED COPY (LID1) of SIZE between two volumes of one Strata daemon
# against reading and writing the same bytes through the host, `qemu-img convert` between the
# two iSCSI LUNs (qemu's libiscsi driver, iscsi:// URLs), with a release build, in one run.
#
# The source volume holds SIZE of random data (written once, over NBD). Each repetition copies
# it into a fresh destination volume (deleted and created again before each copy, so every
# copy starts from the same state): first EXTENDED COPY, sent by tests/iscsi/iscsi_raw.py
# (`xcopy`: chunk-aligned 16 MiB block-to-block segments, so the target shares the source's
# chunks copy-on-write), then `qemu-img convert -n`. EXTENDED COPY's time is the commands' own
# (after login, as iscsi_raw.py prints it); qemu-img's is its whole run. The pool's data used
# before and after the last EXTENDED COPY shows whether data moved. Prints markdown on stdout
# (progress on stderr): medians of REPEAT and the ratio (the goal is >= 20x).
#
#   BENCH_DIR   pool and scratch files (default /work/bench-tmp; not inside the repository)
#   SIZE        bytes copied (default 1G; a whole number of 16 MiB segments is not needed)
#   REPEAT      runs of each side (default 3)
#   BENCH_SKIP_BUILD=1  reuse .build/release/strata (the other benchmarks' release build)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/toolchain.sh
source bench/lib.sh
for tool in qemu-img numfmt; do
    command -v $tool >/dev/null || { echo "run-xcopy: $tool is missing (apt-get install qemu-utils qemu-block-extra coreutils)" >&2; exit 1; }
done
qemu-img --help | grep -A1 '^Supported formats:' | grep -qw iscsi ||
    { echo "run-xcopy: qemu-img has no iscsi driver (apt-get install qemu-block-extra)" >&2; exit 1; }

SIZE=${SIZE:-1G}
REPEAT=${REPEAT:-3}
BYTES=$(numfmt --from=iec "$SIZE")
[ $((BYTES % 512)) -eq 0 ] || { echo "run-xcopy: SIZE must be a multiple of 512 bytes" >&2; exit 1; }
BLOCKS=$((BYTES / 512))
RAW=$ROOT/tests/iscsi/iscsi_raw.py
START=$SECONDS
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
bench_init xcopy

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then build_strata; else STRATA=$ROOT/.build/release/strata; fi
export STRATA_POOL=$BENCH_DIR/pool
strata() { "$STRATA" "$@"; }

NBD_PORT=$(free_port)
ISCSI_PORT=$(free_port)
"$STRATA" serve --nbd 127.0.0.1:$NBD_PORT --iscsi 127.0.0.1:$ISCSI_PORT --create-size $((BYTES * 4 + (4 << 30))) \
    --log-level warning 2>"$BENCH_DIR/strata.log" &
PIDS+=($!)
wait_daemon $NBD_PORT
wait_port $ISCSI_PORT
IQN=iqn.2026-11.org.strata
strata volume create src --size "$BYTES" >/dev/null
echo "writing $SIZE of random data into src" >&2
head -c "$BYTES" /dev/urandom >"$BENCH_DIR/image.raw"
qemu-img convert -n -f raw -O raw "$BENCH_DIR/image.raw" "nbd://127.0.0.1:$NBD_PORT/src" >&2
rm -f "$BENCH_DIR/image.raw"

fresh() {  # fresh VOLUME: delete it if it exists, create it empty
    strata volume delete "$1" --force >/dev/null 2>&1 || true
    strata volume create "$1" --size "$BYTES" >/dev/null
}
used() { strata pool status --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["dataUsedBytes"])'; }
now() { date +%s.%N; }

XCOPY=()
CONVERT=()
for run in $(seq 1 "$REPEAT"); do
    fresh dst
    before=$(used)
    seconds=$(/usr/bin/python3 "$RAW" xcopy --portal 127.0.0.1:$ISCSI_PORT --target $IQN:src --dest $IQN:dst \
        --blocks $BLOCKS | sed -n 's/^EXTENDED COPY of [0-9]* blocks: \([0-9.]*\) s$/\1/p')
    [ -n "$seconds" ] || { echo "run-xcopy: EXTENDED COPY failed (see above)" >&2; exit 1; }
    XCOPY+=("$seconds")
    GROWN=$(($(used) - before))
    fresh dst
    started=$(now)
    qemu-img convert -n -f raw -O raw "iscsi://127.0.0.1:$ISCSI_PORT/$IQN:src/0" "iscsi://127.0.0.1:$ISCSI_PORT/$IQN:dst/0"
    CONVERT+=("$(awk "BEGIN {printf \"%.3f\", $(now) - $started}")")
    echo "run $run: EXTENDED COPY ${XCOPY[-1]} s (data used +$GROWN bytes), qemu-img convert ${CONVERT[-1]} s" >&2
done
xcopy_median=$(printf '%s\n' "${XCOPY[@]}" | median)
convert_median=$(printf '%s\n' "${CONVERT[@]}" | median)

commit=$(git rev-parse --short HEAD)
dirty=$(git status --porcelain -- Sources Package.swift | wc -l)
echo "# Copy offload benchmark"
echo
echo "- run: $(date -u +%Y-%m-%d), $((SECONDS - START)) s; commit $commit$([ "$dirty" -gt 0 ] && echo " with $dirty uncommitted changes under Sources/ or Package.swift")"
echo "- strata: release build; $(swift --version 2>/dev/null | head -1); $(qemu-img --version | head -1)"
echo "- load average (1, 5, 15 min) at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- nproc $(nproc); BENCH_DIR on $(df -T "$BENCH_DIR" | awk 'NR==2 {print $2 " (" $1 ")"}'); SIZE=$SIZE REPEAT=$REPEAT"
echo
echo "| copy of $SIZE between two volumes | median s (runs) | MiB/s |"
echo "|---|---:|---:|"
mibs() { awk "BEGIN { if ($1 > 0) printf \"%.0f\", $BYTES / 1048576 / $1; else print \"-\" }"; }
echo "| EXTENDED COPY (LID1), chunk-aligned | $xcopy_median (${XCOPY[*]}) | $(mibs "$xcopy_median") |"
echo "| qemu-img convert iscsi:// -> iscsi:// | $convert_median (${CONVERT[*]}) | $(mibs "$convert_median") |"
echo
echo "EXTENDED COPY is $(ratio "$convert_median" "$xcopy_median")x faster (goal: >= 20x). The pool's data used grew by $GROWN bytes over the last EXTENDED COPY of $BYTES bytes."
