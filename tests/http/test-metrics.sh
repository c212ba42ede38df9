#!/usr/bin/env bash
# /metrics against a known fio job: the page parses with prometheus_client's text parser
# (python3-prometheus-client), and after fio writes exactly 300 blocks of 4 KiB through NBD
# (sequential, queue depth 8), vm1's NBD write counter moved by exactly 300 and its bytes by
# 300 × 4096; after fio reads 200 blocks, the read counter moved by 200 and its bytes by
# 200 × 4096; the latency histogram's +Inf bucket equals its count and covers those requests;
# one qemu-io READ whose structured reply has two data extents counts once, with its length.
# The pool gauges equal `strata pool status --json`, the volume and snapshot gauges the
# listings, and the NBD connection gauge the open connections. A second daemon with
# --metrics off serves the pool's numbers but no I/O series.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/http-lib.sh"
requires fio curl qemu-io
fio --enghelp 2>/dev/null | grep -w nbd >/dev/null || requires fio-with-nbd-engine
/usr/bin/python3 -c 'import prometheus_client' 2>/dev/null || requires python3-prometheus-client
CHECK="/usr/bin/python3 $HTTP_DIR/metrics_check.py"

start_daemon
wait_http
strata volume create vm1 --size 64M >/dev/null
strata snapshot create vm1@empty >/dev/null

scrape() { http_get /metrics >"$WORKDIR/$1.prom"; $CHECK parse "$WORKDIR/$1.prom" >/dev/null || fail "$1: /metrics does not parse"; }
value() { $CHECK value "$WORKDIR/$1.prom" "${@:2}" 2>/dev/null || echo 0; }

# fio_job NAME RW BLOCKS: BLOCKS requests of 4 KiB, each block once.
fio_job() {
    (cd "$WORKDIR" && fio --name="$1" --ioengine=nbd --uri="$URI/vm1" --rw="$2" --bs=4k --size=$(($3 * 4096)) \
        --iodepth=8 --output="$1.out") >"$WORKDIR/$1.stderr" 2>&1 || fail "fio $1: $(cat "$WORKDIR/$1.out" "$WORKDIR/$1.stderr")"
}

scrape before
WRITES=(strata_io_operations_total volume=vm1 protocol=nbd op=write)
WRITE_BYTES=(strata_io_bytes_total volume=vm1 protocol=nbd op=write)
READS=(strata_io_operations_total volume=vm1 protocol=nbd op=read)
READ_BYTES=(strata_io_bytes_total volume=vm1 protocol=nbd op=read)
fio_job writes write 300
scrape written
[ $(($(value written "${WRITES[@]}") - $(value before "${WRITES[@]}"))) -eq 300 ] \
    || fail "write ops moved by $(($(value written "${WRITES[@]}") - $(value before "${WRITES[@]}"))), not 300"
[ $(($(value written "${WRITE_BYTES[@]}") - $(value before "${WRITE_BYTES[@]}"))) -eq $((300 * 4096)) ] \
    || fail "write bytes moved by $(($(value written "${WRITE_BYTES[@]}") - $(value before "${WRITE_BYTES[@]}")))"
fio_job reads read 200
scrape read
[ $(($(value read "${READS[@]}") - $(value written "${READS[@]}"))) -eq 200 ] \
    || fail "read ops moved by $(($(value read "${READS[@]}") - $(value written "${READS[@]}"))), not 200"
[ $(($(value read "${READ_BYTES[@]}") - $(value written "${READ_BYTES[@]}"))) -eq $((200 * 4096)) ] \
    || fail "read bytes moved by $(($(value read "${READ_BYTES[@]}") - $(value written "${READ_BYTES[@]}")))"
[ "$(value read "${WRITES[@]}")" -eq "$(value written "${WRITES[@]}")" ] || fail "a read job moved the write counter"
[ "$(value read strata_io_errors_total volume=vm1 protocol=nbd op=write)" -eq 0 ] || fail "write errors counted"
count=$($CHECK histogram "$WORKDIR/read.prom" strata_io_latency_seconds volume=vm1 protocol=nbd op=read) \
    || fail "read latency histogram: $count"
[ "$count" -eq "$(value read "${READS[@]}")" ] || fail "read latency count $count != read ops $(value read "${READS[@]}")"
$CHECK histogram "$WORKDIR/read.prom" strata_pool_commit_duration_seconds >/dev/null || fail "commit histogram"
[ "$(value read strata_io_in_flight_requests volume=vm1 protocol=nbd)" -eq 0 ] || fail "requests in flight after fio"
echo "REPORT metrics: fio wrote 300 and read 200 blocks of 4 KiB; the NBD counters moved by exactly that"

# One structured READ whose reply is data, hole, data (qemu-io: data below 1.2 MiB and at 2 MiB,
# a hole between) is one read of its whole length, however many extents the engine read.
qemu-io -f raw -c 'write -P 0x5a 2M 64k' "$URI/vm1" >/dev/null || fail "qemu-io write at 2M"
scrape extents-before
qemu-io -f raw -c 'read 1M 1088k' "$URI/vm1" >/dev/null || fail "qemu-io read 1M 1088k"
scrape extents-after
[ $(($(value extents-after "${READS[@]}") - $(value extents-before "${READS[@]}"))) -eq 1 ] \
    || fail "a READ over data, hole and data counted $(($(value extents-after "${READS[@]}") - $(value extents-before "${READS[@]}"))) reads"
[ $(($(value extents-after "${READ_BYTES[@]}") - $(value extents-before "${READ_BYTES[@]}"))) -eq $((1088 * 1024)) ] \
    || fail "a READ of 1088 KiB counted $(($(value extents-after "${READ_BYTES[@]}") - $(value extents-before "${READ_BYTES[@]}"))) bytes"

# Pool, volume and snapshot gauges against the CLI's --json. The commit timer may change the
# metadata figures between two reads: take the first scrape the CLI agreed with before and after.
for _ in 1 2 3 4 5; do
    strata pool status --json | grep -v '"generation"' >"$WORKDIR/pool.json"
    scrape gauges
    strata pool status --json | grep -v '"generation"' >"$WORKDIR/pool.after.json"
    cmp -s "$WORKDIR/pool.json" "$WORKDIR/pool.after.json" && break
done
for field in capacityBytes:strata_pool_capacity_bytes dataUsedBytes:strata_pool_data_used_bytes \
    dataFreeBytes:strata_pool_data_free_bytes metadataBytes:strata_pool_metadata_bytes \
    metadataUsedBytes:strata_pool_metadata_used_bytes volumes:strata_pool_volumes snapshots:strata_pool_snapshots; do
    expected=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$WORKDIR/pool.json" "${field%%:*}")
    [ "$(value gauges "${field#*:}")" = "$expected" ] || fail "${field#*:} = $(value gauges "${field#*:}"), pool status says $expected"
done
allocated=$(strata volume list --json | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)[0]['allocatedBytes'])")
[ "$(value gauges strata_volume_allocated_bytes volume=vm1)" = "$allocated" ] || fail "vm1 allocated bytes"
[ "$(value gauges strata_volume_size_bytes volume=vm1)" = $((64 << 20)) ] || fail "vm1 size"
exclusive=$(strata snapshot list --json | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)[0]['exclusiveBytes'])")
[ "$(value gauges strata_snapshot_exclusive_bytes volume=vm1 snapshot=empty)" = "$exclusive" ] || fail "snapshot exclusive bytes"
[ "$(value gauges strata_pool_commits_total)" -ge 1 ] || fail "no commit counted"
# The daemon's memory: its resident set agrees with the kernel's (within 2x: both move), the heap
# in use is some of it, the metadata cache within its bound.
resident=$(value gauges strata_process_resident_bytes | cut -d. -f1)
kernel=$(( $(awk '/^VmRSS:/ {print $2}' "/proc/$DAEMON_PID/status") * 1024 ))
[ "$resident" -gt $((kernel / 2)) ] && [ "$resident" -lt $((kernel * 2)) ] || fail "strata_process_resident_bytes $resident, VmRSS $kernel"
[ "$(value gauges strata_process_heap_in_use_bytes | cut -d. -f1)" -gt 0 ] || fail "no heap in use reported"
grep -q "^strata_process_heap_free_bytes " "$WORKDIR/gauges.prom" || fail "no strata_process_heap_free_bytes"
[ "$(value gauges strata_metadata_cache_pages | cut -d. -f1)" -le 16384 ] || fail "metadata cache over its bound"

# Connections by protocol: one NBD client held open.
hold_nbd "$URI/vm1"
scrape connected
[ "$(value connected strata_connections protocol=nbd)" = 1 ] || fail "strata_connections{protocol=nbd} = $(value connected strata_connections protocol=nbd)"
[ "$(value connected strata_connections protocol=iscsi)" = 0 ] || fail "iscsi connections"
release_nbd
stop_daemon

# --metrics off: no I/O series, the pool's numbers still there.
start_daemon --metrics off
wait_http
fio_job off write 16
scrape off
$CHECK absent "$WORKDIR/off.prom" strata_io_operations_total || fail "--metrics off still counts I/O"
[ "$(value off strata_pool_volumes)" = 1 ] || fail "--metrics off: pool gauges missing"
stop_daemon
echo "PASS $TEST_NAME"
