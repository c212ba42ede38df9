#!/usr/bin/env bash
# Layered-image benchmark (issue 10): fio's nbd engine on a 2 GiB base image, all servers
# started by this script in the same run, with a release build of Strata. Medians of REPEAT
# runs; prints markdown tables with ratios.
#   - a fresh Strata overlay of the raw base vs nbdkit's file plugin on (a copy of) the raw file;
#   - a fresh Strata overlay of the same image as qcow2 vs qemu-nbd serving a new qcow2 overlay
#     whose backing file is that qcow2;
#   - Strata reads through a 10-layer stack vs a 1-layer stack over the raw base, both holding
#     the same writes.
# Reads run before writes on each target, so reads read through the base. Every server is up
# for the whole run and the two sides of each comparison alternate run by run (run_pair in
# bench/lib.sh).
#
#   BENCH_DIR  scratch directory (default /work/bench-tmp)    SIZE  base size (default 2G)
#   RUNTIME    seconds per job (default 6)                    REPEAT  runs per job (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/toolchain.sh
for tool in fio nbdkit qemu-nbd qemu-img qemu-io; do
    command -v $tool >/dev/null || { echo "run-layers: $tool is missing (apt-get install fio nbdkit qemu-utils)" >&2; exit 1; }
done
source bench/lib.sh
bench_init layers
SIZE=${SIZE:-2G}
RUNTIME=${RUNTIME:-6}
REPEAT=${REPEAT:-3}
build_strata

echo "making a $SIZE base of random data, and the same image as qcow2" >&2
head -c "$(numfmt --from=iec "$SIZE")" /dev/urandom >"$BENCH_DIR/base.raw"
qemu-img convert -O qcow2 "$BENCH_DIR/base.raw" "$BENCH_DIR/base.qcow2"
cp "$BENCH_DIR/base.raw" "$BENCH_DIR/nbdkit.raw"

JOBS=("randread-4k-qd32:randread:4k:32" "seqread-1M:read:1M:8" "randwrite-4k-qd32:randwrite:4k:32")
declare -A RESULT
# warm FILE...: reads files whole into the page cache, so every peer starts with its image cached
# (the kernel's reclaim can drop cold pages between peers; without this, the first run of a job
# measured the disk and the medians swung by several times).
warm() { cat "$@" >/dev/null; }

# Strata: overlays of the raw and the qcow2 base, and a 10-layer stack.
export STRATA_POOL=$BENCH_DIR/strata
PORT=$(free_port)
"$STRATA" serve --iscsi off --http off --nbd 127.0.0.1:$PORT --create-size 16G --log-level warning &
PIDS+=($!)
wait_daemon $PORT
"$STRATA" volume create raw1 --base "$BENCH_DIR/base.raw" >/dev/null
"$STRATA" volume create qcow1 --base "$BENCH_DIR/base.qcow2" >/dev/null
"$STRATA" volume create stack10 --base "$BENCH_DIR/base.raw" >/dev/null
"$STRATA" volume create stack1 --base "$BENCH_DIR/base.raw" >/dev/null
# Both stacks get the same ten batches of 64 scattered 4 KiB writes: stack10 freezes a layer
# after each batch, stack1 one layer after all ten, so the two differ only in depth.
for layer in $(seq 1 10); do
    for volume in stack10 stack1; do
        fio --name=layer --ioengine=nbd --uri="nbd://127.0.0.1:$PORT/$volume" --rw=randwrite --bs=4k --number_ios=64 \
            --size="$SIZE" --randseed=$layer >/dev/null 2>&1
    done
    "$STRATA" layer push stack10 >/dev/null
done
"$STRATA" layer push stack1 >/dev/null

# nbdkit's file plugin on the raw image itself (a copy, since the write job writes it), and
# qemu-nbd on a new qcow2 overlay backed by the qcow2 base, both up beside the daemon.
NBDKIT_PORT=$(free_port)
nbdkit -f -i 127.0.0.1 -p $NBDKIT_PORT file "$BENCH_DIR/nbdkit.raw" &
PIDS+=($!)
wait_port $NBDKIT_PORT
qemu-img create -q -f qcow2 -b "$BENCH_DIR/base.qcow2" -F qcow2 "$BENCH_DIR/overlay.qcow2"
QEMU_PORT=$(free_port)
qemu-nbd -f qcow2 -b 127.0.0.1 -p $QEMU_PORT -t --shared=8 "$BENCH_DIR/overlay.qcow2" &
PIDS+=($!)
wait_port $QEMU_PORT

# Each comparison alternates its two sides run by run (run_pair), so the machine's drift over
# the minutes of the run weighs on both alike.
warm "$BENCH_DIR/base.raw" "$BENCH_DIR/nbdkit.raw"
echo "== strata over raw, nbdkit file (runs alternating)" >&2
run_pair strata-raw "nbd://127.0.0.1:$PORT/raw1" nbdkit-file "nbd://127.0.0.1:$NBDKIT_PORT/" "${JOBS[@]}"
warm "$BENCH_DIR/base.qcow2"
echo "== strata over qcow2, qemu-nbd overlay (runs alternating)" >&2
run_pair strata-qcow2 "nbd://127.0.0.1:$PORT/qcow1" qemu-nbd-overlay "nbd://127.0.0.1:$QEMU_PORT/" "${JOBS[@]}"
warm "$BENCH_DIR/base.raw"
echo "== strata 1 and 10 layers (runs alternating)" >&2
run_pair strata-1layer "nbd://127.0.0.1:$PORT/stack1" strata-10layer "nbd://127.0.0.1:$PORT/stack10" "${JOBS[@]:0:2}"
"$STRATA" check >/dev/null

echo
echo "| job (unit) | Strata over raw | nbdkit file (raw) | Strata / nbdkit | Strata over qcow2 | qemu-nbd qcow2 overlay | Strata / qemu-nbd |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for spec in "${JOBS[@]}"; do
    job=${spec%%:*}
    unit=IOPS; [[ $job == seq* ]] && unit=MiB/s
    a=${RESULT[strata-raw,$job]}; b=${RESULT[nbdkit-file,$job]}; c=${RESULT[strata-qcow2,$job]}; d=${RESULT[qemu-nbd-overlay,$job]}
    echo "| $job ($unit) | $a | $b | $(ratio "$a" "$b") | $c | $d | $(ratio "$c" "$d") |"
done
echo
echo "| Strata reads (unit) | 1-layer stack | 10-layer stack | 10 / 1 |"
echo "|---|---:|---:|---:|"
for spec in "${JOBS[@]:0:2}"; do
    job=${spec%%:*}
    unit=IOPS; [[ $job == seq* ]] && unit=MiB/s
    a=${RESULT[strata-1layer,$job]}; b=${RESULT[strata-10layer,$job]}
    echo "| $job ($unit) | $a | $b | $(ratio "$b" "$a") |"
done
