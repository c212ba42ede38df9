#!/usr/bin/env bash
# Object-store tier benchmark (issue 11): a release build of Strata against a real OpenStack
# Swift that this script starts (scripts/objectstore.sh, on loopback), each Strata figure next
# to a plain client's (bench/objectstore_peer.py: python http.client) in the same run. Medians
# of REPEAT runs; prints a markdown table with ratios.
#   (a) push of a SIZE volume of random data vs uploading the same bytes as 8 MiB objects with
#       8 parallel PUTs (a fresh container each run, so nothing is deduplicated), by two clients:
#       the plain one, which checks nothing, and `swift upload --object-threads 8`
#       (python-swiftclient, the CLI a Swift user reaches for), which by default computes each
#       object's MD5 while sending it and fails on an ETag Swift returns that differs (Strata's
#       push sends the MD5 as the ETag, so Swift refuses such a body instead of storing it);
#   (b) the first 4 KiB read of a `--from` volume over NBD (a never-fetched object) vs one
#       ranged GET of 4 KiB on an open connection, each IDLE seconds after the client's last
#       request: Swift answers a request that follows another at once faster than one after a
#       pause (by hand, 2.3-3.0 ms against 4.5-5.5 ms after 1 s, the same python client), and
#       the daemon's first read comes after `volume create` and a client's start;
#   (c) a boot-like read: fio over NBD, 64 KiB reads at depth 8 totalling BOOT (64M) scattered
#       over the volume, on a fresh `--from --hydrate off` volume vs fetching the objects those
#       reads cover directly, 8 at a time;
#   (d) an incremental push after rewriting 1% of the volume in 1 MiB pieces: bytes uploaded vs
#       the changed objects' size, and time vs the full push (REPEAT pushes, each of a new 1%).
# Each run of (b) and (c) starts a fresh daemon, so no object is cached from an earlier run.
# Where the time of (a) goes: the CPU seconds of the client (Strata's push, or the plain client)
# and of the Swift servers during each upload, medians printed under the table. On a machine
# of 2 cores the servers' CPU is shared with the client's, so a client that hashes (Strata:
# SHA-256 of each object and of its parts, MD5 for Swift's ETag check) pays for it in time.
#
#   BENCH_DIR  scratch directory (default /work/bench-tmp)   SIZE  volume size (default 1G)
#   BOOT       bytes read in (c) (default 64M)                REPEAT  runs per figure (default 3)
#   IDLE       seconds both sides of (b) wait after their last request (default 1)
#   BENCH_SKIP_BUILD  1 uses .build/release/strata as it is (default 0: build it first)
#   PROFILE_BOOT      1 samples the daemon with `perf record -g` during the first boot-like read
#                     and prints where its time went (the figure of that run is then not clean)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/toolchain.sh
for tool in fio curl; do
    command -v $tool >/dev/null || { echo "run-objectstore: $tool is missing (apt-get install fio curl)" >&2; exit 1; }
done
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "run-objectstore: python3-nbd is missing (apt-get install python3-nbd)" >&2; exit 1; }
source bench/lib.sh
bench_init objectstore
SIZE=${SIZE:-1G}
BOOT=${BOOT:-64M}
IDLE=${IDLE:-1}
REPEAT=${REPEAT:-3}
MiB=$((1 << 20))
OBJECT=$((8 * MiB))
SIZE_BYTES=$(numfmt --from=iec "$SIZE")
BOOT_BYTES=$(numfmt --from=iec "$BOOT")
if [ "${BENCH_SKIP_BUILD:-0}" = 1 ]; then
    STRATA=$ROOT/.build/release/strata
    [ -x "$STRATA" ] || { echo "run-objectstore: $STRATA is missing; run without BENCH_SKIP_BUILD" >&2; exit 1; }
else
    build_strata
fi

STORE=$BENCH_DIR/store
scripts/objectstore.sh start "$STORE" >&2
trap 'scripts/objectstore.sh stop "$STORE" >/dev/null 2>&1 || true; bench_cleanup' EXIT
source "$STORE/objectstore.env"
printf '%s\n' "$STRATA_SWIFT_KEY" >"$BENCH_DIR/swift.key"
peer() { /usr/bin/python3 "$ROOT/bench/objectstore_peer.py" "$@"; }
# server_ticks: CPU clock ticks (user + system) the Swift servers used so far.
server_ticks() {
    local entry total=0
    for entry in $STRATA_OBJECTSTORE_PIDS; do  # NAME=PID
        total=$((total + $(awk '{print $14 + $15}' "/proc/${entry#*=}/stat")))
    done
    echo $total
}
TICKS=$(getconf CLK_TCK)
# cpu_of OUT COMMAND...: runs COMMAND (stdout to OUT); prints "CLIENT_CPU SERVER_CPU" seconds.
cpu_of() {
    local out=$1 before
    shift
    before=$(server_ticks)
    /usr/bin/time -f "%U %S" -o "$BENCH_DIR/time.out" "$@" >"$out"
    echo "$(awk '{print $1 + $2}' "$BENCH_DIR/time.out") $(echo "scale=2; ($(server_ticks) - $before) / $TICKS" | bc)"
}
json_field() { /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
add_remote() {  # add_remote CONTAINER
    "$STRATA" remote add r1 --swift "$STRATA_SWIFT_AUTH_URL" --user "$STRATA_SWIFT_USER" \
        --key-file "$BENCH_DIR/swift.key" --container "$1" --create >/dev/null
}

echo "making a $SIZE volume of random data" >&2
head -c "$SIZE_BYTES" /dev/urandom >"$BENCH_DIR/image.raw"
export STRATA_POOL=$BENCH_DIR/source
"$STRATA" pool init --size $((SIZE_BYTES * 3 / MiB + 256))M >/dev/null
"$STRATA" volume create vm1 --size "$SIZE" >/dev/null
"$STRATA" import "$BENCH_DIR/image.raw" vm1 >/dev/null
"$STRATA" snapshot create vm1@s1 >/dev/null

# (a) full push vs the plain client's parallel PUTs and `swift upload`'s; each run into a fresh
# container. `swift upload` uploads files: the image cut into 8 MiB files, before any timing.
SWIFT_CLI=/usr/bin/swift.openstack  # python-swiftclient's `swift`, diverted by scripts/objectstore.sh
[ -x "$SWIFT_CLI" ] || { echo "run-objectstore: $SWIFT_CLI is missing (python3-swiftclient)" >&2; exit 1; }
mkdir -p "$BENCH_DIR/parts"
(cd "$BENCH_DIR/parts" && split -b $OBJECT -d -a 5 "$BENCH_DIR/image.raw" o)
# swift_upload CONTAINER: prints the seconds `swift upload` took for every part.
swift_upload() {
    local start
    start=$(date +%s.%N)
    (cd "$BENCH_DIR/parts" && "$SWIFT_CLI" -q upload --object-threads 8 "$1" o*) >&2
    echo "$(date +%s.%N) - $start" | bc
}
push_s=() peer_s=() push_client=() push_server=() peer_client=() peer_server=()
cli_s=() cli_client=() cli_server=()
for run in $(seq 1 "$REPEAT"); do
    "$STRATA" remote remove r1 >/dev/null 2>&1 || true
    add_remote "push$run"
    read -r client server < <(cpu_of "$BENCH_DIR/push.json" "$STRATA" push vm1@s1 r1 --json)
    push_s+=("$(json_field seconds <"$BENCH_DIR/push.json")") push_client+=("$client") push_server+=("$server")
    read -r client server < <(cpu_of "$BENCH_DIR/peer.out" /usr/bin/python3 "$ROOT/bench/objectstore_peer.py" put \
        "$BENCH_DIR/image.raw" "peer$run" $OBJECT 8)
    peer_s+=("$(cat "$BENCH_DIR/peer.out")") peer_client+=("$client") peer_server+=("$server")
    read -r client server < <(cpu_of "$BENCH_DIR/cli.out" bash -c "$(declare -f swift_upload); BENCH_DIR=$BENCH_DIR SWIFT_CLI=$SWIFT_CLI swift_upload cli$run")
    cli_s+=("$(cat "$BENCH_DIR/cli.out")") cli_client+=("$client") cli_server+=("$server")
    echo "   push run $run: strata ${push_s[-1]} s (CPU: strata ${push_client[-1]} s, Swift ${push_server[-1]} s)," \
        "peer ${peer_s[-1]} s (CPU: peer ${peer_client[-1]} s, Swift ${peer_server[-1]} s)," \
        "swift upload ${cli_s[-1]} s (CPU: client ${cli_client[-1]} s, Swift ${cli_server[-1]} s)" >&2
done
cli_median=$(printf '%s\n' "${cli_s[@]}" | median)
cli_mibs=$(echo "scale=1; $SIZE_BYTES / $MiB / $cli_median" | bc)
push_median=$(printf '%s\n' "${push_s[@]}" | median)
peer_median=$(printf '%s\n' "${peer_s[@]}" | median)
push_mibs=$(echo "scale=1; $SIZE_BYTES / $MiB / $push_median" | bc)
peer_mibs=$(echo "scale=1; $SIZE_BYTES / $MiB / $peer_median" | bc)
CONTAINER=push$REPEAT  # r1 now points at it, holding vm1@s1

# start_daemon: `strata serve` on $STRATA_POOL, NBD only, on a free port (PORT); stop_daemon.
start_daemon() {
    PORT=$(free_port)
    "$STRATA" serve --iscsi off --http off --nbd 127.0.0.1:$PORT --log-level warning &
    DAEMON=$!
    PIDS+=($DAEMON)
    wait_daemon $PORT
}
stop_daemon() { kill "$DAEMON"; wait "$DAEMON" || true; }

# (d) incremental push: 1% of the volume rewritten in 1 MiB pieces at random object-aligned
# offsets plus 1 MiB, so each piece changes one object; REPEAT times, each a new snapshot pushed
# against the one before (s1, then s2, ...), medians.
pieces=$((SIZE_BYTES / 100 / MiB))
[ "$pieces" -ge 1 ] || pieces=1
objects=$((SIZE_BYTES / OBJECT))
incr_bytes_runs=() incr_s_runs=()
for run in $(seq 1 "$REPEAT"); do
    changed=$(/usr/bin/python3 -c "import random; random.seed($((6 + run))); print(' '.join(map(str, sorted(random.sample(range($objects), min($pieces, $objects))))))")
    start_daemon
    /usr/bin/python3 -c "
import nbd, os
h = nbd.NBD()
h.connect_uri('nbd://127.0.0.1:$PORT/vm1')
for object in map(int, '$changed'.split()):
    h.pwrite(os.urandom($MiB), object * $OBJECT + $MiB)
h.flush()"
    stop_daemon
    "$STRATA" snapshot create "vm1@s$((run + 1))" >/dev/null
    incr=$("$STRATA" push "vm1@s$((run + 1))" r1 --json)
    incr_bytes_runs+=("$(echo "$incr" | json_field bytesUploaded)")
    incr_s_runs+=("$(echo "$incr" | json_field seconds)")
    echo "   incremental push $run: $(echo "$incr" | json_field seconds) s, $(echo "$incr" | json_field bytesUploaded) bytes" >&2
done
incr_bytes=$(printf '%s\n' "${incr_bytes_runs[@]}" | median)
incr_s=$(printf '%s\n' "${incr_s_runs[@]}" | median)
changed_count=$(echo "$changed" | wc -w)
changed_bytes=$((changed_count * OBJECT))

# (b) and (c) on a second pool served by a daemon started fresh for every run.
export STRATA_POOL=$BENCH_DIR/target
"$STRATA" pool init --size $((SIZE_BYTES * 2 / MiB + 256))M >/dev/null
add_remote "$CONTAINER"
key_of() { /usr/bin/python3 "$ROOT/tests/objectstore/store.py" key-of "$CONTAINER" manifests/vm1/s1 "$1"; }
first_s=() range_s=() boot_s=() direct_s=() boot_daemon=() boot_servers=() boot_fetched=()
for run in $(seq 1 "$REPEAT"); do
    start_daemon
    "$STRATA" volume create "first$run" --from r1:vm1@s1 --hydrate off >/dev/null
    object=$(((run * 37) % objects))
    offset=$((object * OBJECT + 12288))
    first_s+=("$(/usr/bin/python3 -c "
import nbd, time
h = nbd.NBD()
h.connect_uri('nbd://127.0.0.1:$PORT/first$run')
time.sleep($IDLE)
started = time.monotonic()
h.pread(4096, $offset)
print('%.6f' % (time.monotonic() - started))")")
    range_s+=("$(peer range "$CONTAINER" "$(key_of $(((object + 1) % objects)))" 12288 4096 "$IDLE")")

    "$STRATA" volume create "boot$run" --from r1:vm1@s1 --hydrate off >/dev/null
    daemon_before=$(awk '{print $14 + $15}' "/proc/$DAEMON/stat") servers_before=$(server_ticks)
    if [ "${PROFILE_BOOT:-0}" = 1 ] && [ "$run" = 1 ]; then
        perf record -g -p "$DAEMON" -o "$BENCH_DIR/boot.perf" >/dev/null 2>&1 &
        PERF=$!
        sleep 0.5
    fi
    started=$(date +%s%N)
    fio --name=boot --ioengine=nbd --uri="nbd://127.0.0.1:$PORT/boot$run" --rw=randread --bs=64k --iodepth=8 \
        --size="$SIZE" --io_size="$BOOT_BYTES" --randseed=$((run + 100)) --norandommap \
        --write_iolog="$BENCH_DIR/boot$run.log" >/dev/null 2>&1
    boot_s+=("$(echo "scale=6; ($(date +%s%N) - $started) / 1000000000" | bc)")
    boot_daemon+=("$(echo "scale=2; ($(awk '{print $14 + $15}' "/proc/$DAEMON/stat") - $daemon_before) / $TICKS" | bc)")
    boot_servers+=("$(echo "scale=2; ($(server_ticks) - $servers_before) / $TICKS" | bc)")
    boot_fetched+=("$("$STRATA" volume status "boot$run" --json | json_field bytesFetched)")
    if [ -n "${PERF:-}" ]; then
        kill -INT "$PERF"; wait "$PERF" || true; PERF=
        echo "   where the daemon's time went in boot run 1 (perf record -g, self time by thread, then by symbol):" >&2
        perf report -i "$BENCH_DIR/boot.perf" --no-children --stdio --sort comm 2>/dev/null | grep -E '^ +[0-9]' | head -8 >&2 || true
        perf report -i "$BENCH_DIR/boot.perf" --no-children --stdio --sort sym 2>/dev/null | grep -E '^ +[0-9]' | head -25 >&2 || true
    fi
    stop_daemon
    # The fills stored most of the volume: delete both, or the third run fills the pool.
    "$STRATA" volume delete "first$run" >/dev/null
    "$STRATA" volume delete "boot$run" >/dev/null
    keys=()
    # fio's iolog: "FILE read OFFSET LENGTH" (version 2) or "TIME FILE read OFFSET LENGTH" (3).
    for index in $(awk '{ for (i = 1; i < NF; i++) if ($i == "read") { print int($(i + 1) / '$OBJECT'); break } }' \
        "$BENCH_DIR/boot$run.log" | sort -un); do
        keys+=("$(key_of "$index")")
    done
    direct_s+=("$(peer fetch "$CONTAINER" 8 "${keys[@]}")")
    echo "   run $run: first read ${first_s[-1]} s vs ranged GET ${range_s[-1]} s; boot ${boot_s[-1]} s vs ${#keys[@]} objects ${direct_s[-1]} s" \
        "(boot: daemon CPU ${boot_daemon[-1]} s, Swift CPU ${boot_servers[-1]} s, ${boot_fetched[-1]} bytes fetched)" >&2
done
first_median=$(printf '%s\n' "${first_s[@]}" | median)
range_median=$(printf '%s\n' "${range_s[@]}" | median)
boot_median=$(printf '%s\n' "${boot_s[@]}" | median)
direct_median=$(printf '%s\n' "${direct_s[@]}" | median)
ms() { echo "scale=2; $1 * 1000 / 1" | bc; }

cat <<EOF

Object store, $SIZE volume, Swift on loopback, medians of $REPEAT (Strata release build)

| figure | Strata | plain client | ratio | goal |
|---|---|---|---|---|
| (a) push, MiB/s | $push_mibs | $peer_mibs (8 MiB objects, 8 parallel PUTs) | $(ratio "$push_mibs" "$peer_mibs") | ≥ 0.8 |
| (a) push, MiB/s, against \`swift upload\` | $push_mibs | $cli_mibs (8 MiB files, --object-threads 8, MD5 checked) | $(ratio "$push_mibs" "$cli_mibs") | ≥ 0.8 |
| (b) first 4 KiB read, ms | $(ms "$first_median") | $(ms "$range_median") (one ranged GET; both ${IDLE} s after their last request) | $(ratio "$first_median" "$range_median") | ≤ 2 |
| (c) $BOOT boot-like read at depth 8, s | $boot_median | $direct_median (covering objects, 8 parallel GETs) | $(ratio "$boot_median" "$direct_median") | ≤ 1.5 |
| (d) incremental push (1%), bytes uploaded | $incr_bytes | $changed_bytes (the $changed_count changed objects) | $(ratio "$incr_bytes" "$changed_bytes") | ≤ 1.1 |
| (d) incremental push, s vs full push | $incr_s | $push_median (full push) | $(ratio "$incr_s" "$push_median") | ≤ 0.1 |

Where the time of (a) goes, CPU seconds per upload of $SIZE (medians; the client's include its start-up):

| side | client CPU, s | Swift servers' CPU, s | wall, s |
|---|---|---|---|
| Strata push | $(printf '%s\n' "${push_client[@]}" | median) | $(printf '%s\n' "${push_server[@]}" | median) | $push_median |
| plain client | $(printf '%s\n' "${peer_client[@]}" | median) | $(printf '%s\n' "${peer_server[@]}" | median) | $peer_median |
| swift upload | $(printf '%s\n' "${cli_client[@]}" | median) | $(printf '%s\n' "${cli_server[@]}" | median) | $cli_median |

Where the time of (c) goes (medians): the daemon's CPU seconds during the read (its fetches, SHA-256
checks, fills and NBD replies), the Swift servers' CPU seconds, and the bytes the daemon fetched
against the covering objects' size:

| daemon CPU, s | Swift servers' CPU, s | bytes fetched | covering objects, bytes | wall, s |
|---|---|---|---|---|
| $(printf '%s\n' "${boot_daemon[@]}" | median) | $(printf '%s\n' "${boot_servers[@]}" | median) | $(printf '%s\n' "${boot_fetched[@]}" | median) | $((${#keys[@]} * OBJECT)) (last run) | $boot_median |
EOF
