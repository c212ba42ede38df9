#!/usr/bin/env bash
# NBD benchmark: fio's nbd engine against Strata, nbdkit's file plugin, qemu-nbd (raw) and
# qemu-nbd (qcow2), all serving images on the same filesystem, all started by this script in
# the same run, with a release build of Strata. Prints a markdown table of medians and ratios,
# and each server's CPU time per request beside each job.
#
#   BENCH_DIR  where images live (default /work/bench-tmp; not inside the repository)
#   SIZE       image size (default 2G)    RUNTIME  seconds per job (default 8)    REPEAT  runs per job (default 3)
#   BEFORE     another strata binary (a release build of an older commit) run through the same
#              jobs after this one, on a pool of its own; adds a before/after table
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/toolchain.sh
for tool in fio nbdkit qemu-nbd qemu-img nbdinfo; do
    command -v $tool >/dev/null || { echo "run-nbd: $tool is missing (apt-get install fio nbdkit qemu-utils libnbd-bin)" >&2; exit 1; }
done

source bench/lib.sh
bench_init nbd
SIZE=${SIZE:-2G}
RUNTIME=${RUNTIME:-8}
REPEAT=${REPEAT:-3}
build_strata

JOBS=("seqwrite-1M:write:1M:8" "seqread-1M:read:1M:8" "randwrite-4k-qd1:randwrite:4k:1" "randwrite-4k-qd32:randwrite:4k:32"
      "randread-4k-qd1:randread:4k:1" "randread-4k-qd32:randread:4k:32")
declare -A RESULT CPU

# run_peer NAME URI: the thin first-touch random write, then every job REPEAT times (medians).
run_peer() {
    local peer=$1 uri=$2
    echo "== $peer" >&2
    # First touch on the empty image: allocation cost (thin for Strata and qcow2).
    read -r iops _ < <(fio_job "$uri" fresh randwrite 4k 32 --runtime=5)
    RESULT[$peer,fresh-randwrite-4k-qd32]=$iops
    # Fill the whole image so reads read data and random writes overwrite.
    fio --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=1M --iodepth=8 --size="$SIZE" >/dev/null 2>&1
    run_jobs "$peer" "$uri" "${JOBS[@]}"
}

# Strata
export STRATA_POOL=$BENCH_DIR/strata
PORT=$(free_port)
"$STRATA" serve --iscsi off --http off --nbd 127.0.0.1:$PORT --create-size 16G --log-level warning &
PIDS+=($!)
SERVER_PID=$!
wait_daemon $PORT
"$STRATA" volume create vm1 --size "$SIZE" >/dev/null
run_peer strata "nbd://127.0.0.1:$PORT/vm1"

# Random writes with 100 snapshots taken during the run: every snapshot makes the whole volume
# shared again, so writes copy chunks until the next one (a 4 KiB write copies its 64 KiB chunk).
snapshots_during() {
    sleep 1
    for i in $(seq 1 100); do "$STRATA" snapshot create "vm1@bench$i" >/dev/null; sleep "$(awk "BEGIN{print ($RUNTIME-2)/100}")"; done
}
# snapshot_runs TAG URI: medians of random writes without and with 100 snapshots during each run.
# All runs without snapshots come first: after snapshots are deleted, chunks mapped before them
# are still copied once on their next write (the copy-on-write test is by epoch, as dm-thin's),
# which would otherwise leak into the figure without snapshots.
snapshot_runs() {
    local tag=$1 uri=$2 plain=() snapped=()
    for _ in $(seq 1 "$REPEAT"); do
        read -r iops _ < <(fio_job "$uri" plain-randwrite randwrite 4k 32)
        plain+=("$iops")
    done
    for _ in $(seq 1 "$REPEAT"); do
        snapshots_during &
        local snapper=$!
        read -r iops _ < <(fio_job "$uri" snap-randwrite randwrite 4k 32)
        wait $snapper
        snapped+=("$iops")
        for i in $(seq 1 100); do "$STRATA" snapshot delete "vm1@bench$i" >/dev/null; done
    done
    RESULT[$tag,plain]=$(printf '%s\n' "${plain[@]}" | median)
    RESULT[$tag,snapped]=$(printf '%s\n' "${snapped[@]}" | median)
    echo "   $tag randwrite-4k-qd32: ${RESULT[$tag,plain]} without, ${RESULT[$tag,snapped]} with 100 snapshots (runs: ${plain[*]} / ${snapped[*]})" >&2
}
snapshot_runs chunk64k "nbd://127.0.0.1:$PORT/vm1"
"$STRATA" check >/dev/null
kill ${PIDS[0]}; wait ${PIDS[0]} || true

# An older build of Strata, for the before/after table (its `serve` may predate `--http`).
if [ -n "${BEFORE:-}" ]; then
    export STRATA_POOL=$BENCH_DIR/strata-before
    PORT=$(free_port)
    http=(); "$BEFORE" serve --help 2>&1 | grep -q -- '--http' && http=(--http off)
    "$BEFORE" serve --iscsi off "${http[@]}" --nbd 127.0.0.1:$PORT --create-size 16G --log-level warning &
    PIDS+=($!)
    SERVER_PID=$!
    wait_daemon $PORT
    "$BEFORE" volume create vm1 --size "$SIZE" >/dev/null
    run_peer strata-before "nbd://127.0.0.1:$PORT/vm1"
    kill $SERVER_PID; wait $SERVER_PID || true
fi

# nbdkit file plugin
truncate -s "$SIZE" "$BENCH_DIR/nbdkit.raw"
PORT=$(free_port)
nbdkit -f -i 127.0.0.1 -p $PORT file "$BENCH_DIR/nbdkit.raw" &
PIDS+=($!)
SERVER_PID=$!
wait_port $PORT
run_peer nbdkit-file "nbd://127.0.0.1:$PORT/"

# qemu-nbd raw and qcow2
truncate -s "$SIZE" "$BENCH_DIR/qemu.raw"
PORT=$(free_port)
qemu-nbd -f raw -b 127.0.0.1 -p $PORT -t --shared=8 "$BENCH_DIR/qemu.raw" &
PIDS+=($!)
SERVER_PID=$!
wait_port $PORT
run_peer qemu-nbd-raw "nbd://127.0.0.1:$PORT/"
qemu-img create -q -f qcow2 "$BENCH_DIR/qemu.qcow2" "$SIZE"
PORT=$(free_port)
qemu-nbd -f qcow2 -b 127.0.0.1 -p $PORT -t --shared=8 "$BENCH_DIR/qemu.qcow2" &
PIDS+=($!)
SERVER_PID=$!
wait_port $PORT
run_peer qemu-nbd-qcow2 "nbd://127.0.0.1:$PORT/"

echo
echo "| job (unit) | Strata | nbdkit file | qemu-nbd raw | qemu-nbd qcow2 | Strata / nbdkit | Strata / qcow2 |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for job in fresh-randwrite-4k-qd32 seqwrite-1M seqread-1M randwrite-4k-qd1 randwrite-4k-qd32 randread-4k-qd1 randread-4k-qd32; do
    unit=IOPS; [[ $job == seq* ]] && unit=MiB/s
    s=${RESULT[strata,$job]}; k=${RESULT[nbdkit-file,$job]}; r=${RESULT[qemu-nbd-raw,$job]}; q=${RESULT[qemu-nbd-qcow2,$job]}
    echo "| $job ($unit) | $s | $k | $r | $q | $(ratio "$s" "$k") | $(ratio "$s" "$q") |"
done
echo
echo "Server CPU per request, µs (user + system time of the server process over each fio run, ramp included, / (IOPS x run seconds); medians):"
echo
echo "| job | Strata | nbdkit file | qemu-nbd raw | qemu-nbd qcow2 | Strata / nbdkit |"
echo "|---|---:|---:|---:|---:|---:|"
for job in seqwrite-1M seqread-1M randwrite-4k-qd1 randwrite-4k-qd32 randread-4k-qd1 randread-4k-qd32; do
    s=${CPU[strata,$job]}; k=${CPU[nbdkit-file,$job]}
    echo "| $job | $s | $k | ${CPU[qemu-nbd-raw,$job]} | ${CPU[qemu-nbd-qcow2,$job]} | $(ratio "$s" "$k") |"
done
echo
echo "| Strata randwrite-4k-qd32, IOPS (median of $REPEAT) | without snapshots | with 100 snapshots during the run | ratio |"
echo "|---|---:|---:|---:|"
for tag in chunk64k; do
    echo "| pool chunk ${tag#chunk} | ${RESULT[$tag,plain]} | ${RESULT[$tag,snapped]} | $(ratio "${RESULT[$tag,snapped]}" "${RESULT[$tag,plain]}") |"
done
if [ -n "${BEFORE:-}" ]; then
    echo
    echo "Before and after: \`$BEFORE\` (before) and this build (after), each against nbdkit's file plugin in this run:"
    echo
    echo "| job (unit) | before | after | after / before | before / nbdkit | after / nbdkit | CPU µs/request before | after |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for job in fresh-randwrite-4k-qd32 seqwrite-1M seqread-1M randwrite-4k-qd1 randwrite-4k-qd32 randread-4k-qd1 randread-4k-qd32; do
        unit=IOPS; [[ $job == seq* ]] && unit=MiB/s
        b=${RESULT[strata-before,$job]}; a=${RESULT[strata,$job]}; k=${RESULT[nbdkit-file,$job]}
        echo "| $job ($unit) | $b | $a | $(ratio "$a" "$b") | $(ratio "$b" "$k") | $(ratio "$a" "$k") | ${CPU[strata-before,$job]:--} | ${CPU[strata,$job]:--} |"
    done
fi
