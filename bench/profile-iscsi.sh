#!/usr/bin/env bash
# Where the time goes in Strata's iSCSI target at depth DEPTH (default 1, the jobs that miss
# issue 9's 1.2x tgtd; 32 for the depth-32 writes): a release `strata serve` with a 1 GiB volume
# written in full, then (1) libiscsi's iscsi-perf, 4 KiB random reads with DEPTH in flight, and
# (2) qemu-img bench, 4 KiB writes with DEPTH in flight, each sampled by `perf record -g` on the daemon for a few seconds. For each: the
# run's figure, the daemon's CPU per request (user + system time from /proc over the run), its
# samples by thread (NIO-ELT event loops, TP pool threads) and the symbols with the most
# samples. Markdown on stdout, progress on stderr.
#
#   BENCH_DIR  scratch directory (default /work/bench-tmp; not inside the repository)
#   RUNTIME    seconds of the iscsi-perf run (default 8)    COUNT  qemu-img bench writes (default
#   DEPTH      requests in flight (default 1)                      60000, 300000 past depth 1)
#   TOP        symbols listed per job (default 12)          BENCH_SKIP_BUILD=1  use .build/release as it is
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/toolchain.sh
for tool in perf iscsi-perf qemu-img fio; do
    command -v $tool >/dev/null || { echo "profile-iscsi: $tool is missing (apt-get install linux-perf libiscsi-bin qemu-utils fio)" >&2; exit 1; }
done
source bench/lib.sh
bench_init profile-iscsi
RUNTIME=${RUNTIME:-8}
DEPTH=${DEPTH:-1}
COUNT=${COUNT:-$([ "$DEPTH" = 1 ] && echo 60000 || echo 300000)}
TOP=${TOP:-12}
build_strata

export STRATA_POOL=$BENCH_DIR/pool
PORT=$(free_port)
ISCSI=$(free_port)
"$STRATA" serve --http off --nbd 127.0.0.1:$PORT --iscsi 127.0.0.1:$ISCSI --create-size 4G --log-level warning &
PIDS+=($!)
DAEMON=$!
wait_daemon $PORT
"$STRATA" volume create bench --size 1G >/dev/null
echo "writing the volume in full" >&2
fio --name=fill --ioengine=nbd --uri="nbd://127.0.0.1:$PORT/bench" --rw=write --bs=1M --iodepth=8 --size=1G >/dev/null 2>&1
URL=iscsi://127.0.0.1:$ISCSI/iqn.2026-11.org.strata:bench/0
TICKS=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$DAEMON/stat"; }

# report NAME REQUESTS BEFORE_TICKS: the daemon's CPU per request and the profile's tables.
report() {
    local name=$1 requests=$2 before=$3
    echo "### $name: $4"
    echo
    echo "Daemon CPU: $(awk "BEGIN {printf \"%.1f\", ($(ticks) - $before) / $TICKS * 1e6 / $requests}") µs per request."
    echo
    echo '```'
    perf report -i "$BENCH_DIR/$name.perf" --no-children --stdio --sort comm 2>/dev/null | grep -E '^ +[0-9]' | head -5 || true
    echo
    perf report -i "$BENCH_DIR/$name.perf" --no-children --stdio --sort dso,sym 2>/dev/null | grep -E '^ +[0-9]' |
        head -"$TOP" | cut -c1-110 || true
    echo '```'
    echo
}

echo "# iSCSI depth-$DEPTH profiles ($(date -u '+%Y-%m-%d %H:%M') UTC, commit $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg))"
echo
echo "reads: iscsi-perf, ${RUNTIME} s" >&2
before=$(ticks)
iscsi-perf -m "$DEPTH" -b 8 -t "$RUNTIME" -r "$URL" >"$BENCH_DIR/read.out" 2>&1 &
job=$!
sleep 2
perf record -g -p "$DAEMON" -o "$BENCH_DIR/read-4k-qd$DEPTH.perf" -- sleep $((RUNTIME - 4)) >/dev/null 2>&1
wait $job
iops=$(tr '\r' '\n' <"$BENCH_DIR/read.out" | sed -n 's/^ *iops average \([0-9]*\) .*/\1/p' | tail -1)
[ -n "$iops" ] || { echo "iscsi-perf failed: $(tail -3 "$BENCH_DIR/read.out")" >&2; exit 1; }
report read-4k-qd$DEPTH $((iops * RUNTIME)) "$before" "$iops IOPS (iscsi-perf -m $DEPTH -b 8 -t $RUNTIME -r)"

echo "writes: qemu-img bench, $COUNT requests" >&2
before=$(ticks)
qemu-img bench -f raw -t none -c "$COUNT" -d "$DEPTH" -s 4096 -S 4096 -w "$URL" >"$BENCH_DIR/write.out" 2>&1 &
job=$!
sleep 1
perf record -g -p "$DAEMON" -o "$BENCH_DIR/write-4k-qd$DEPTH.perf" -- sleep 3 >/dev/null 2>&1
wait $job
seconds=$(sed -n 's/.*Run completed in \([0-9.]*\) seconds.*/\1/p' "$BENCH_DIR/write.out")
[ -n "$seconds" ] || { echo "qemu-img bench failed: $(tail -3 "$BENCH_DIR/write.out")" >&2; exit 1; }
report write-4k-qd$DEPTH "$COUNT" "$before" "$(awk "BEGIN {printf \"%.0f\", $COUNT / $seconds}") IOPS (qemu-img bench -c $COUNT -d $DEPTH -s 4096 -S 4096 -w)"
