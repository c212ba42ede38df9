#!/usr/bin/env bash
# Two daemons on loopback replicate a volume that fio writes to over NBD. Replication cycles run
# under the load; after the load stops and one more cycle runs, the replica's newest snapshot
# equals the source's snapshot of the same name, byte for byte, and both pools check clean.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/replication-lib.sh"
requires fio
fio --enghelp 2>/dev/null | grep -w nbd >/dev/null || requires fio-with-nbd-engine
start_source
start_replica
on_source volume create vm1 --size 256M >/dev/null
on_source replicate start vm1 --to "127.0.0.1:$REPLICATION_PORT" --secret-file "$SECRET" --every 1s --keep 3 >/dev/null
cat >"$WORKDIR/load.fio" <<JOB
[global]
ioengine=nbd
uri=$SOURCE_URI/vm1
rw=randwrite
bsrange=4k-128k
size=64m
offset_increment=64m
numjobs=4
iodepth=8
time_based=1
runtime=8
randseed=7

[load]
JOB
(cd "$WORKDIR" && fio --output=load.out load.fio) >"$WORKDIR/load.stderr" 2>&1 || {
    cat "$WORKDIR/load.out" "$WORKDIR/load.stderr" >&2
    fail "fio"
}
during=$(job_field cycles)
# The load has stopped: wait for two more cycles (the first may have started before the end).
wait_until 180 "cycles after the load" bash -c "[ \$(STRATA_POOL=$SOURCE_POOL $STRATA replicate status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0][\"cycles\"])') -ge $((during + 2)) ]"
on_source replicate stop vm1 >/dev/null
newest=$(newest_replicated)
source_newest=$(on_source snapshot list vm1 --json | python3 -c "import json,sys; print(json.load(sys.stdin)[-1]['name'])")
[ "$newest" = "$source_newest" ] || fail "replica's newest $newest, source's $source_newest"
same_snapshot "$newest"
# The newest snapshot holds the final state: the source volume equals it.
on_source export vm1 "$WORKDIR/volume.raw" >/dev/null
on_replica export "vm1@$newest" "$WORKDIR/replica.raw" >/dev/null
cmp "$WORKDIR/volume.raw" "$WORKDIR/replica.raw" || fail "the replica's newest snapshot is not the source's final state"
on_source check >/dev/null || fail "source check"
on_replica check >/dev/null || fail "replica check"
echo "PASS $TEST_NAME"
