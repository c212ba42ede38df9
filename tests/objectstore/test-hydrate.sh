#!/usr/bin/env bash
# Background hydration (issue 11): a 64 MiB snapshot pushed as 1 MiB objects (data in most,
# holes in some) is the base of volumes on a fresh pool.
# - `--hydrate off`: reads fetch only the objects they cover (from the Swift proxy's access
#   log), and nothing runs in the background.
# - `volume hydrate --rate`: the daemon fetches the rest in the background while a client
#   writes; kill -9 mid-way; `volume status` on the offline pool counts what the engine holds;
#   the restarted daemon resumes by itself, at the --rate given before the kill (it used to
#   forget it and take the default), and fetches exactly the objects not yet local, drops
#   the base, and the volume equals the snapshot plus the writes; `strata check` is clean.
# - The store stopped during a hydration: it pauses with an error naming an object in
#   `volume status` (and `pool status`); local data reads over NBD and iSCSI; an unfetched
#   range fails with EIO over NBD and MEDIUM ERROR (sense key 03h) over iSCSI, logged naming
#   the object; with the store back both reads succeed and the hydration finishes by itself.
# - `--hydrate lazy` (the default) hydrates with no further command.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/lib-objectstore.sh"
source "$(dirname "$0")/../iscsi/iscsi-lib.sh"
requires_objectstore
requires qemu-img qemu-io nbdsh  # nbdsh: its python3-nbd module, used directly

MiB=$((1 << 20))
OBJECTS=64
# Random data everywhere except objects 5, 17-19 and 40: holes of the snapshot.
head -c $((OBJECTS * MiB)) /dev/urandom >"$WORKDIR/image.raw"
for object in 5 17 18 19 40; do
    dd if=/dev/zero of="$WORKDIR/image.raw" bs=1M seek=$object count=1 conv=notrunc status=none
done
DATA_OBJECTS=$((OBJECTS - 5))

container=$(unique_container hydrate)
src pool init --size 1G >/dev/null
STRATA_POOL="$SOURCE" add_remote swift r1 "$container" --create --object-size 1M >/dev/null
src volume create vm1 --size 64M >/dev/null
src import "$WORKDIR/image.raw" vm1 >/dev/null
src snapshot create vm1@s1 >/dev/null
src push vm1@s1 r1 >/dev/null

PROXY_LOG="$STRATA_OBJECTSTORE_DIR/log/proxy.log"
[ -f "$PROXY_LOG" ] || fail "no proxy log at $PROXY_LOG"
gets() { object_gets "$container"; }  # whole-object GETs
# The object keys fetched whole more than once (after line $1 of the log).
refetched() {
    tail -n +"$1" "$PROXY_LOG" | grep -o "GET /v1/AUTH_test/$container/objects/[0-9a-f]* HTTP/1.[01] 200 " | sort | uniq -d
}
status_field() { strata volume status "$1" --json | json "$2"; }

# iscsi_read VOLUME OFFSET LENGTH FILE: same, differ, or `sense KEY/ASC/ASCQ` (READ(10) over a
# raw iSCSI session, tests/iscsi/iscsi_raw.py).
iscsi_read() {
    /usr/bin/python3 -c "
import sys
sys.path.insert(0, '$ROOT/tests/iscsi')
import iscsi_raw
# A read of an unfetched range with the store down answers after the client's retries (~12 s).
s = iscsi_raw.Session('$ISCSI_PORTAL', '$IQN:$1', timeout=60.0)
s.login()
s.read_capacity16()
with open('$4', 'rb') as f:
    f.seek($2)
    want = f.read($3)
status, sense, data = s.scsi_once(bytes([0x28, 0]) + ($2 // s.block_size).to_bytes(4, 'big') + bytes([0]) + ($3 // s.block_size).to_bytes(2, 'big') + bytes([0]), read_length=$3)
if status != 0:
    key, asc, ascq = iscsi_raw.sense_key(sense)
    print('sense %02x/%02x/%02x' % (key, asc or 0, ascq or 0))
else:
    print('same' if data == want else 'differ')
s.logout()"
}
# wait_state VOLUME STATE SECONDS: polls `volume status` until its state is STATE.
wait_state() {
    local state=""
    for _ in $(seq 1 $(($3 * 5))); do
        state=$(status_field "$1" state)
        [ "$state" = "$2" ] && return 0
        sleep 0.2
    done
    fail "volume $1 stayed $state for $3 s, expected $2: $(strata volume status "$1")"
}
# wait_fetched VOLUME N: polls until at least N objects are local.
wait_fetched() {
    for _ in $(seq 1 300); do
        [ "$(status_field "$1" objectsFetched)" -ge "$2" ] && return 0
        sleep 0.1
    done
    fail "volume $1 did not reach $2 local objects: $(strata volume status "$1")"
}

start_daemon
add_remote swift r1 "$container" --object-size 1M >/dev/null

# --- off: reads fetch only what they cover; nothing in the background ---------------------
strata volume create h1 --from r1:vm1@s1 --hydrate off >/dev/null
before=$(gets)
expect_read same h1 $((3 * MiB + 4096)) 8192 "$WORKDIR/image.raw"
expect_read same h1 $((41 * MiB)) $MiB "$WORKDIR/image.raw"
expect_read same h1 $((40 * MiB)) $MiB "$WORKDIR/image.raw"  # a hole: no request
settle_gets "$container"
[ "$(($(gets) - before))" = 2 ] || fail "with --hydrate off, 3 reads fetched $(($(gets) - before)) objects, expected 2"
[ "$(status_field h1 hydration)" = off ] || fail "status: $(strata volume status h1)"
[ "$(status_field h1 state)" = idle ] || fail "status: $(strata volume status h1)"
[ "$(status_field h1 objectsFetched)" = 2 ] || fail "status: $(strata volume status h1)"
[ "$(status_field h1 objectsTotal)" = $DATA_OBJECTS ] || fail "status: $(strata volume status h1)"
[ "$(status_field h1 base)" = "r1:vm1@s1" ] || fail "status: $(strata volume status h1)"

# --- background hydration with writes, kill -9, resume ----------------------------------
cp "$WORKDIR/image.raw" "$WORKDIR/expected.raw"
strata volume hydrate h1 --rate 4M >/dev/null
wait_fetched h1 8
[ "$(status_field h1 hydration)" = lazy ] || fail "status: $(strata volume status h1)"
strata pool status | grep -q "^hydrating: *h1 from r1:vm1@s1: running" || fail "pool status: $(strata pool status)"
# Writes during hydration: into an object not fetched yet (60), a hole (18), a fetched one (0).
for at in 60 18 0; do
    qemu-io -f raw -c "write -P 0x5a $((at * MiB + 4096)) $((256 << 10))" -c flush "nbd://127.0.0.1:$PORT/h1" >/dev/null
    qemu-io -f raw -c "write -P 0x5a $((at * MiB + 4096)) $((256 << 10))" "$WORKDIR/expected.raw" >/dev/null
done
[ "$(status_field h1 state)" = running ] || fail "not running before the kill: $(strata volume status h1)"
kill_daemon
forget "$DAEMON_PID"
# Offline, the engine's own tree says what is local (the committed part of the hydration).
local_after_crash=$(status_field h1 objectsFetched)
[ "$local_after_crash" -ge 3 ] || fail "after kill -9 only $local_after_crash objects are local"
[ "$local_after_crash" -lt $DATA_OBJECTS ] || fail "the hydration finished before the kill; slow it down"
[ "$(status_field h1 hydration)" = lazy ] || fail "the hydrate mark did not survive the kill"
log_line=$(($(wc -l <"$PROXY_LOG") + 1))
before=$(gets)
start_daemon
# The --rate given before the kill is kept (hydration-rates.json): the resumed hydration runs
# at 4 MiB/s, not at the default rate.
rate=""
for _ in $(seq 1 50); do
    rate=$(strata volume status h1 --json | json rateLimitBytesPerSecond 2>/dev/null || true)
    [ -n "$rate" ] && [ "$rate" != None ] && break
    sleep 0.1
done
[ "$rate" = $((4 << 20)) ] || fail "the resumed hydration's rate bound is '$rate', expected the --rate 4M given before the kill"
wait_state h1 done 120
fetched_after=$(($(gets) - before))
# Object 60 was written at 4096..+256K only: still pending, fetched. Nothing local is fetched again.
[ "$fetched_after" = $((DATA_OBJECTS - local_after_crash)) ] ||
    fail "the resumed hydration fetched $fetched_after objects, expected $((DATA_OBJECTS - local_after_crash)) (the ones not local)"
[ -z "$(refetched "$log_line")" ] || fail "objects fetched twice after the restart: $(refetched "$log_line")"
grep -q "resuming the hydration of volume h1" "$WORKDIR/daemon.log" || fail "no resume logged"
[ "$(status_field h1 objectsFetched)" = $DATA_OBJECTS ] || fail "status: $(strata volume status h1)"
if strata volume layers h1 --json | grep -q '"kind" *: *"base"'; then fail "h1 still has its base"; fi
qemu-img compare -q -f raw -F raw "$WORKDIR/expected.raw" "nbd://127.0.0.1:$PORT/h1" ||
    fail "after the resumed hydration h1 is not the snapshot plus the writes"
curl -sf "http://127.0.0.1:$HTTP_PORT/api/v1/volumes/h1" | json hydration.state | grep -qx done ||
    fail "HTTP API: $(curl -s "http://127.0.0.1:$HTTP_PORT/api/v1/volumes/h1")"

# --- the store stops during a hydration ---------------------------------------------------
strata volume create h2 --from r1:vm1@s1 --hydrate off >/dev/null
expect_read same h2 $((1 * MiB)) $MiB "$WORKDIR/image.raw"  # object 1 is now local
strata volume hydrate h2 --rate 2M >/dev/null
wait_fetched h2 4
key63=$(store key-of "$container" manifests/vm1/s1 63)
stop_store
wait_state h2 paused 60
status_field h2 lastError | grep -q "objects/[0-9a-f]\{64\}" || fail "the paused state names no object: $(strata volume status h2)"
strata pool status | grep -q "^hydrating: *h2 .*paused.*objects/" || fail "pool status: $(strata pool status)"
# Local data and holes keep working over NBD and iSCSI; object 63 is not fetched yet.
[ "$(status_field h2 objectsFetched)" -lt $((DATA_OBJECTS - 1)) ] || fail "h2 finished before the store stopped"
expect_read same h2 $((1 * MiB)) $MiB "$WORKDIR/image.raw"
expect_read same h2 $((5 * MiB)) $MiB "$WORKDIR/image.raw"
[ "$(iscsi_read h2 $((1 * MiB)) 65536 "$WORKDIR/image.raw")" = same ] || fail "iSCSI read of local data failed"
got=$(nbd_read h2 $((63 * MiB)) 4096 "$WORKDIR/image.raw")
case $got in *"error: "*"Input/output error"* | *"error: "*EIO*) ;; *) fail "NBD read of an unfetched object with the store down: $got" ;; esac
got=$(iscsi_read h2 $((63 * MiB)) 4096 "$WORKDIR/image.raw")
case $got in "sense 03/"*) ;; *) fail "iSCSI read of an unfetched object with the store down: $got (want MEDIUM ERROR)" ;; esac
grep -q "object 63 ($key63)" "$WORKDIR/daemon.log" || fail "the daemon did not log the object that failed"
start_store
[ "$(iscsi_read h2 $((63 * MiB)) 4096 "$WORKDIR/image.raw")" = same ] || fail "iSCSI read after the store came back"
expect_read same h2 $((63 * MiB)) 4096 "$WORKDIR/image.raw"
wait_state h2 done 120
qemu-img compare -q -f raw -F raw "$WORKDIR/image.raw" "nbd://127.0.0.1:$PORT/h2" || fail "h2 differs after the pause"

# --- lazy (the default) hydrates with no further command ----------------------------------
strata volume create h3 --from r1:vm1@s1 >/dev/null
wait_state h3 done 120
qemu-img compare -q -f raw -F raw "$WORKDIR/image.raw" "nbd://127.0.0.1:$PORT/h3" || fail "h3 differs"
strata volume hydrate h3 --wait >/dev/null  # already done: nothing to do, no error
stop_daemon
out=$(strata check) || fail "check: $out"
