#!/usr/bin/env bash
# Mirror benchmark (issue 12): a release build of Strata, two daemons started by this script
# (the second holds remote legs, over loopback), every number from the same run. Medians of
# REPEAT runs; prints markdown tables.
#   - fio's nbd engine, 4 KiB random writes at depth 32 and 1 MiB sequential writes, on a
#     volume with a connected local leg (`mirror add --to-pool`), on one with a connected leg on
#     the second daemon (`mirror add --to 127.0.0.1:PORT`), and on the same volume unmirrored;
#     each volume written in full first, the three taking turns run by run;
#   - resync after changing 1% of the volume's chunks (`detach`, writes, `attach`) vs a full
#     resync (`attach --full`) of the same volume: the daemon's own time of each copy
#     (`copySeconds` in `mirror status --json`, from the attach to `connected`), and the wall
#     time from the command to a status poll that sees `connected` (coarser: 50 ms polls and a
#     CLI start-up each, which weigh on the short resync);
#   - the initial full sync (`mirror add --wait`) vs `strata send | strata receive` of the same
#     volume into another pool.
#
#   BENCH_DIR  scratch directory (default /work/bench-tmp)   SIZE  volume size (default 1G)
#   RUNTIME    seconds per fio job (default 6)               REPEAT  runs per job (default 3)
#   STRATA     a strata binary to use instead of building a release one (a quick check that
#              the script works, e.g. with .build/debug/strata; its figures mean nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/toolchain.sh
for tool in fio qemu-io; do
    command -v $tool >/dev/null || { echo "run-mirror: $tool is missing (apt-get install fio qemu-utils)" >&2; exit 1; }
done
source bench/lib.sh
bench_init mirror
SIZE=${SIZE:-1G}
RUNTIME=${RUNTIME:-6}
REPEAT=${REPEAT:-3}
if [ -n "${STRATA:-}" ]; then echo "using $STRATA (not a release build: a check run only)" >&2; else build_strata; fi
BYTES=$(numfmt --from=iec "$SIZE")

export STRATA_POOL=$BENCH_DIR/strata
PORT=$(free_port)
"$STRATA" serve --iscsi off --nbd 127.0.0.1:$PORT --create-size 16G --log-level warning &
PIDS+=($!)
wait_daemon $PORT
URI=nbd://127.0.0.1:$PORT
# The leg daemon: a second pool, its replication port on loopback.
SECRET=$BENCH_DIR/secret
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$SECRET"
LEG_PORT=$(free_port)
REPLICATION_PORT=$(free_port)
STRATA_POOL=$BENCH_DIR/legd "$STRATA" serve --iscsi off --http off --nbd 127.0.0.1:$LEG_PORT --create-size 16G \
    --replication 127.0.0.1:$REPLICATION_PORT --replication-secret-file "$SECRET" --log-level warning &
PIDS+=($!)
STRATA_POOL=$BENCH_DIR/legd wait_daemon $LEG_PORT
legpool() { "$STRATA" pool init --pool "$BENCH_DIR/$1" --size 16G >/dev/null; echo "$BENCH_DIR/$1"; }
now() { date +%s.%N; }
# wait_connected VOLUME: polls `mirror status` until the volume's leg is connected.
wait_connected() {
    until "$STRATA" mirror status "$1" --json | grep -q '"state" : "connected"'; do sleep 0.05; done
}

declare -A RESULT
JOBS=("randwrite-4k-qd32:randwrite:4k:32" "seqwrite-1M:write:1M:8")
"$STRATA" volume create plain --size "$SIZE" >/dev/null
"$STRATA" volume create mirrored --size "$SIZE" >/dev/null
"$STRATA" mirror add mirrored --to-pool "$(legpool leg1)" --wait >/dev/null
"$STRATA" volume create remote --size "$SIZE" >/dev/null
"$STRATA" mirror add remote --to 127.0.0.1:$REPLICATION_PORT --secret-file "$SECRET" --wait >/dev/null
# Each volume written in full first, so every run measures the steady state of a written volume
# (a thin volume's first writes allocate, on both copies, and on this VM touch new pages).
for volume in plain mirrored remote; do
    fio --name=fill --ioengine=nbd --uri="$URI/$volume" --rw=write --bs=1M --iodepth=8 --size="$SIZE" >/dev/null 2>&1
done
# The three volumes take turns run by run (run_rotated), so the machine's drift weighs on each alike.
echo "== no mirror, connected local leg, connected leg on a second daemon (loopback), in turn" >&2
run_rotated plain="$URI/plain" mirrored="$URI/mirrored" remote="$URI/remote" -- "${JOBS[@]}"

echo "== resync: 1% of the chunks vs --full" >&2
"$STRATA" volume create sync --size "$SIZE" >/dev/null
qemu-io -f raw -c "write -P 0x5a 0 $((BYTES / 2))" "$URI/sync" >/dev/null
"$STRATA" mirror add sync --to-pool "$(legpool leg2)" --wait >/dev/null
CHUNKS=$((BYTES / 65536))
# copy_seconds VOLUME: the leg's copySeconds (`mirror status --json`: the daemon's own time of
# the last copy, from the attach to connected, the search for changes included).
copy_seconds() {
    "$STRATA" mirror status "$1" --json | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["copySeconds"])'
}
# All 1% resyncs first, then the full ones, each after `sync`: a full copy leaves 1 GiB in the
# page cache, and the next copy's flushes would pay for writing it back (a 1% resync after a
# full one took 0.4-0.8 s instead of about 0.01 s when the two alternated).
resync_small=() resync_full=() wall_small=() wall_full=()
for run in $(seq 1 "$REPEAT"); do
    "$STRATA" mirror detach sync >/dev/null
    fio --name=change --ioengine=nbd --uri="$URI/sync" --rw=randwrite --bs=64k --number_ios=$((CHUNKS / 100)) \
        --size="$SIZE" --randseed=$run >/dev/null 2>&1
    sync
    start=$(now); "$STRATA" mirror attach sync >/dev/null; wait_connected sync; end=$(now)
    wall_small+=("$(awk "BEGIN {print $end - $start}")")
    resync_small+=("$(copy_seconds sync)")
done
for run in $(seq 1 "$REPEAT"); do
    "$STRATA" mirror detach sync >/dev/null
    sync
    start=$(now); "$STRATA" mirror attach sync --full >/dev/null; wait_connected sync; end=$(now)
    wall_full+=("$(awk "BEGIN {print $end - $start}")")
    resync_full+=("$(copy_seconds sync)")
done
SMALL=$(printf '%s\n' "${resync_small[@]}" | median)
FULL=$(printf '%s\n' "${resync_full[@]}" | median)
WALL_SMALL=$(printf '%s\n' "${wall_small[@]}" | median)
WALL_FULL=$(printf '%s\n' "${wall_full[@]}" | median)

echo "== initial sync vs send | receive" >&2
sync_add=() sync_stream=()
"$STRATA" snapshot create sync@bench >/dev/null
for run in $(seq 1 "$REPEAT"); do
    "$STRATA" volume create "copy$run" --size "$SIZE" >/dev/null
    qemu-io -f raw -c "write -P 0x5a 0 $((BYTES / 2))" "$URI/copy$run" >/dev/null
    start=$(now); "$STRATA" mirror add "copy$run" --to-pool "$(legpool "add$run")" --wait >/dev/null; end=$(now)
    sync_add+=("$(awk "BEGIN {print $end - $start}")")
    target=$(legpool "recv$run")
    start=$(now); "$STRATA" send sync@bench | "$STRATA" receive --pool "$target" sync >/dev/null; end=$(now)
    sync_stream+=("$(awk "BEGIN {print $end - $start}")")
done
ADD=$(printf '%s\n' "${sync_add[@]}" | median)
STREAM=$(printf '%s\n' "${sync_stream[@]}" | median)

echo
echo "| job (unit) | no mirror | connected local leg | local / none | connected remote leg | remote / none |"
echo "|---|---:|---:|---:|---:|---:|"
for spec in "${JOBS[@]}"; do
    IFS=: read -r job _ bs _ <<<"$spec"
    unit=IOPS; [ "$bs" = 1M ] && unit=MiB/s
    a=${RESULT[plain,$job]}; b=${RESULT[mirrored,$job]}; c=${RESULT[remote,$job]}
    echo "| $job ($unit) | $a | $b | $(ratio "$b" "$a") | $c | $(ratio "$c" "$a") |"
done
echo
echo "| resync of a $SIZE volume (seconds) | 1% of chunks changed | --full | full / 1% |"
echo "|---|---:|---:|---:|"
echo "| the daemon's copySeconds (attach to connected) | $SMALL | $FULL | $(ratio "$FULL" "$SMALL") |"
echo "| wall time: attach command to a status poll seeing connected (50 ms polls, CLI start-up) | $WALL_SMALL | $WALL_FULL | $(ratio "$WALL_FULL" "$WALL_SMALL") |"
echo
echo "| first copy of $SIZE, half written (seconds) | mirror add --wait | send \\| receive | stream / add |"
echo "|---|---:|---:|---:|"
echo "| median of $REPEAT | $ADD | $STREAM | $(ratio "$STREAM" "$ADD") |"
