#!/usr/bin/env bash
# Daemon-to-daemon replication on loopback: a wrong secret is refused and logged; the right one
# replicates the volume (full, then incremental) keeping --keep snapshots on both sides; the
# replica is read-only over NBD until `replicate promote`; status reports peer, last snapshot,
# lag, bytes sent and errors.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/replication-lib.sh"
requires qemu-io
start_source
start_replica
on_source volume create vm1 --size 64M >/dev/null
head -c 8M /dev/urandom >"$WORKDIR/a.raw"
on_source import "$WORKDIR/a.raw" vm1 >/dev/null

echo "not-the-secret" >"$WORKDIR/wrong"
on_source replicate start vm1 --to "127.0.0.1:$REPLICATION_PORT" --secret-file "$WORKDIR/wrong" --every 1s >/dev/null
wait_until 30 "a refused attempt" grep -q "wrong secret" "$WORKDIR/daemon.log"
[ "$(job_field errors)" != "0" ] || fail "a wrong secret counted no error"
on_replica volume list | grep -q '^vm1 ' && fail "a wrong secret replicated"

# Hourly at first, so no later cycle prunes the first snapshot while both exports read it (a
# job cycling every second with --keep 2 did once on a loaded machine).
on_source replicate start vm1 --to "127.0.0.1:$REPLICATION_PORT" --secret-file "$SECRET" --every 1h --keep 2 >/dev/null
wait_until 60 "the first replicated snapshot" on_replica snapshot list vm1
first=$(newest_replicated)
same_snapshot "$first"
# Every second from here (`start` replaces the job): a change on the source arrives at the next cycle.
on_source replicate start vm1 --to "127.0.0.1:$REPLICATION_PORT" --secret-file "$SECRET" --every 1s --keep 2 >/dev/null
head -c 1M /dev/urandom >"$WORKDIR/b.raw"
on_source import "$WORKDIR/b.raw" vm1 >/dev/null
wait_until 60 "a newer replicated snapshot" bash -c "[ \"\$(STRATA_POOL=$REPLICA_POOL $STRATA snapshot list vm1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1][\"name\"])')\" != $first ]"
wait_until 60 "a later cycle" bash -c "[ \$(STRATA_POOL=$SOURCE_POOL $STRATA replicate status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0][\"cycles\"])') -ge 3 ]"
status=$(on_source replicate status --json)
for field in peer lastReplicated lagSeconds bytesSent errors; do
    echo "$status" | grep -q "\"$field\"" || fail "status lacks $field: $status"
done
# Stopped before comparing: a running job keeps cycling every second and prunes to --keep 2,
# so on a loaded machine the newest snapshot could be gone before both exports have read it.
on_source replicate stop vm1 >/dev/null
newest=$(newest_replicated)
same_snapshot "$newest"
[ "$(on_replica snapshot list vm1 --json | grep -c '"name"')" -le 2 ] || fail "the replica keeps more than --keep 2"
[ "$(on_source snapshot list vm1 --json | grep -c '"name"')" -le 2 ] || fail "the source keeps more than --keep 2"

# The replica is read-only until promoted.
if qemu-io -f raw -c 'write -P 0x55 0 4k' "$REPLICA_URI/vm1" >"$WORKDIR/qemu-io.out" 2>&1 &&
    ! grep -qi "error\|failed" "$WORKDIR/qemu-io.out"; then
    fail "a write to the replica succeeded: $(cat "$WORKDIR/qemu-io.out")"
fi
on_replica replicate promote vm1 >/dev/null
qemu-io -f raw -c 'write -P 0x55 0 4k' "$REPLICA_URI/vm1" >"$WORKDIR/qemu-io.out" 2>&1 || fail "write after promote: $(cat "$WORKDIR/qemu-io.out")"
grep -qi "error\|failed" "$WORKDIR/qemu-io.out" && fail "write after promote: $(cat "$WORKDIR/qemu-io.out")"
on_replica check >/dev/null || fail "replica check"
on_source check >/dev/null || fail "source check"
echo "PASS $TEST_NAME"
