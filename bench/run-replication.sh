#!/usr/bin/env bash
# Replication benchmark (issue 5), one run, release build, every peer started here:
#   1. full: `strata send vol@full | strata receive` of a fully written 4 GiB volume through a
#      pipe, against `cat` of a 4 GiB file through the same pipe into a file (fsync at the end),
#      and `qemu-img convert` from one Strata NBD export to another;
#   2. incremental: send | receive of a 10% change (random 64 KiB chunks), against the full;
#   3. diff: `strata diff` of the same fixed change in a 4 GiB and a 256 GiB thin volume.
# Prints a markdown table. Seconds are wall clock from `date +%s.%N` around each command; the
# full copies run REPEAT rounds in turn (cat, strata, qemu-img) and report medians, since the
# disk is shared and one copy's time varies by 2x between runs.
#
#   BENCH_DIR  scratch directory (default /work/bench-tmp; not inside the repository)
#   SIZE_MIB   volume size in MiB (default 4096)    REPEAT  rounds of the full copies (default 3; medians)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/toolchain.sh
for tool in fio qemu-img; do
    command -v $tool >/dev/null || { echo "run-replication: $tool is missing (apt-get install fio qemu-utils)" >&2; exit 1; }
done
source bench/lib.sh
bench_init replication
SIZE_MIB=${SIZE_MIB:-4096}
REPEAT=${REPEAT:-3}
build_strata
A=$BENCH_DIR/a
B=$BENCH_DIR/b

# serve POOL: starts a daemon on a free port; sets PORT and DAEMON.
serve() {
    PORT=$(free_port)
    STRATA_POOL=$1 "$STRATA" serve --nbd "127.0.0.1:$PORT" --iscsi off --http off >>"$BENCH_DIR/daemon.log" 2>&1 &
    DAEMON=$!
    PIDS+=("$DAEMON")
    for _ in $(seq 1 200); do
        [ -S "$1/control.sock" ] && (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "daemon on $1 did not start" >&2; exit 1
}
unserve() { kill "$DAEMON"; wait "$DAEMON" || true; }
# timed CMD...: runs CMD and prints its wall-clock seconds.
timed() {
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l | xargs printf '%.2f'
}
# change POOL VOLUME BYTES: random 64 KiB writes covering BYTES of VOLUME (no chunk twice), over NBD.
change() {
    serve "$1"
    fio --name=change --ioengine=nbd --uri="nbd://127.0.0.1:$PORT/$2" --rw=randwrite --bs=64k --iodepth=16 \
        --io_size="$3" --randrepeat=0 --output=/dev/null >/dev/null 2>&1
    unserve
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

"$STRATA" pool init --pool "$A" --size "$((SIZE_MIB * 3 / 1024 + 300))G" >/dev/null
"$STRATA" pool init --pool "$B" --size "$((SIZE_MIB * 3 / 1024 + 4))G" >/dev/null
echo "writing a ${SIZE_MIB} MiB random image" >&2
head -c "$((SIZE_MIB << 20))" /dev/urandom >"$BENCH_DIR/image.raw"
"$STRATA" volume create vol --pool "$A" --size "${SIZE_MIB}M" >/dev/null
"$STRATA" import --pool "$A" "$BENCH_DIR/image.raw" vol >/dev/null
"$STRATA" snapshot create --pool "$A" vol@full >/dev/null
sync

echo "full: cat, send | receive, qemu-img convert, $REPEAT rounds in turn" >&2
cat_runs=(); full_runs=(); qemu_runs=()
for round in $(seq 1 "$REPEAT"); do
    sync
    cat_runs+=("$(timed bash -c "cat '$BENCH_DIR/image.raw' | dd of='$BENCH_DIR/copy.raw' bs=1M iflag=fullblock conv=fsync status=none")")
    rm -f "$BENCH_DIR/copy.raw"
    "$STRATA" volume delete --pool "$B" vol -r >/dev/null 2>&1 || true
    sync
    full_runs+=("$(timed bash -c "'$STRATA' send --pool '$A' vol@full | '$STRATA' receive --pool '$B' vol")")
    serve "$A"; PORT_A=$PORT; DAEMON_A=$DAEMON
    serve "$B"; PORT_B=$PORT; DAEMON_B=$DAEMON
    "$STRATA" volume delete --pool "$B" qcopy >/dev/null 2>&1 || true
    "$STRATA" volume create --pool "$B" qcopy --size "${SIZE_MIB}M" >/dev/null
    sync
    qemu_runs+=("$(timed qemu-img convert -n -f raw -O raw "nbd://127.0.0.1:$PORT_A/vol@full" "nbd://127.0.0.1:$PORT_B/qcopy")")
    DAEMON=$DAEMON_B; unserve
    DAEMON=$DAEMON_A; unserve
done
"$STRATA" volume delete --pool "$B" qcopy >/dev/null
cat_s=$(printf '%s\n' "${cat_runs[@]}" | median)
full_s=$(printf '%s\n' "${full_runs[@]}" | median)
qemu_s=$(printf '%s\n' "${qemu_runs[@]}" | median)

echo "incremental: a 10% change" >&2
change "$A" vol "$((SIZE_MIB / 10))m"
"$STRATA" snapshot create --pool "$A" vol@ten >/dev/null
inc_s=$(timed bash -c "'$STRATA' send --pool '$A' vol@ten --from vol@full | '$STRATA' receive --pool '$B' vol")
inc_bytes=$("$STRATA" send --pool "$A" vol@ten --from vol@full 2>/dev/null | wc -c)
"$STRATA" export --pool "$A" vol@ten "$BENCH_DIR/src.raw" >/dev/null
"$STRATA" export --pool "$B" vol@ten "$BENCH_DIR/dst.raw" >/dev/null
cmp "$BENCH_DIR/src.raw" "$BENCH_DIR/dst.raw" || { echo "vol@ten differs after receive" >&2; exit 1; }
rm -f "$BENCH_DIR/src.raw" "$BENCH_DIR/dst.raw" "$BENCH_DIR/image.raw"

echo "diff: the same 64 MiB change in a 4 GiB and a 256 GiB thin volume" >&2
for size in 4G 256G; do
    "$STRATA" volume create --pool "$A" "thin$size" --size "$size" >/dev/null
    serve "$A"
    fio --name=fill --ioengine=nbd --uri="nbd://127.0.0.1:$PORT/thin$size" --rw=randwrite --bs=64k --iodepth=16 \
        --io_size=256m --randrepeat=0 --output=/dev/null >/dev/null 2>&1
    unserve
    "$STRATA" snapshot create --pool "$A" "thin$size@a" >/dev/null
    change "$A" "thin$size" 64m
    "$STRATA" snapshot create --pool "$A" "thin$size@b" >/dev/null
    declare "diff_$size=$(timed "$STRATA" diff --pool "$A" "thin$size@a" "thin$size@b")"
    declare "send_$size=$(timed bash -c "'$STRATA' send --pool '$A' thin$size@b --from thin$size@a >/dev/null")"
done

size_bytes=$((SIZE_MIB << 20))
rate() { echo "scale=0; $1 / 1048576 / $2" | bc; }
cat <<TABLE
| measurement | seconds | MiB/s | ratio |
|---|---|---|---|
| cat ${SIZE_MIB} MiB file \| dd (fsync), median of $REPEAT (${cat_runs[*]}) | $cat_s | $(rate $size_bytes "$cat_s") | 1.00 |
| strata send vol@full \| strata receive (full), median of $REPEAT (${full_runs[*]}) | $full_s | $(rate $size_bytes "$full_s") | $(echo "scale=2; $cat_s / $full_s" | bc) of cat |
| qemu-img convert nbd → nbd (full), median of $REPEAT (${qemu_runs[*]}) | $qemu_s | $(rate $size_bytes "$qemu_s") | $(echo "scale=2; $cat_s / $qemu_s" | bc) of cat |
| send \| receive, 10% change (stream $inc_bytes bytes) | $inc_s | $(rate "$inc_bytes" "$inc_s") | $(echo "scale=2; $inc_s / $full_s" | bc) of full time |
| strata diff, 64 MiB change, 4 GiB volume | $diff_4G | | 1.00 |
| strata diff, 64 MiB change, 256 GiB volume | $diff_256G | | $(echo "scale=2; $diff_256G / $diff_4G" | bc) of 4 GiB |
| send --from, 64 MiB change, 4 GiB volume | $send_4G | | 1.00 |
| send --from, 64 MiB change, 256 GiB volume | $send_256G | | $(echo "scale=2; $send_256G / $send_4G" | bc) of 4 GiB |
TABLE
