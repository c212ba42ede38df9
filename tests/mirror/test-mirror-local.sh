#!/usr/bin/env bash
# A local mirror leg (`mirror add --to-pool`) end to end, on one host:
#   1. add under fio load: fio (nbd engine, 4 jobs, random writes, verify=crc32c) writes vm1
#      while the leg is added and copies; fio verifies; once connected the leg's copy
#      (nbd .../vm1@mirror-leg1, read-only, and the iSCSI target ...:vm1:mirror-leg1) compares
#      equal to the volume (qemu-img compare); the detached copy's own name (--as) too.
#   2. 1% of a 1 GiB volume changed after a detach: the detached copy still equals the state at
#      the split; attach resyncs at most 1.1x the changed chunks (bytesResynced from
#      `mirror status --json`) and the leg compares equal.
#   3. a writable detached copy written over NBD, then attached: its writes are discarded, the
#      leg equals the volume.
#   4. kill -9 of the daemon while connected, while detached and while resyncing (an
#      `attach --full`): after each restart no flushed write is lost (the volume still holds the
#      pattern written before the kill), a connected or resyncing leg resyncs by itself and a
#      detached one stays detached until attached; each resync copies less than the volume
#      (only what changed, plus the window), the leg compares equal, and `strata check` is clean
#      on both pools after a clean stop.
#   5. refusals: deleting, resizing or rolling back a mirrored volume, adding a leg in a pool
#      that is not empty: each names the fix and changes nothing.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/mirror-lib.sh"
# Every leg gets a 60 s deadline (--timeout): a loaded test machine can take longer than the
# default 5 s for a leg's fsync, and these steps are not about a leg that stops answering
# (MirrorDegradedTests are).
requires fio qemu-img qemu-io
fio --enghelp 2>/dev/null | grep -w nbd >/dev/null || requires fio-with-nbd-engine

start_daemon
L1=$(leg_pool leg1)
L2=$(leg_pool leg2)

# 1. add under fio load
strata volume create vm1 --size 64M >/dev/null
load_job "$URI/vm1" >"$WORKDIR/load.fio"
fio "$WORKDIR/load.fio" >"$WORKDIR/fio.out" 2>&1 &
FIO=$!
STRATA_PIDS+=("$FIO")
sleep 0.5
strata mirror add vm1 --to-pool "$L1" --timeout 60s >/dev/null || fail "mirror add vm1"
wait "$FIO" || fail "fio failed: $(tail -20 "$WORKDIR/fio.out")"
forget "$FIO"
wait_state vm1 leg1 connected
same "$URI/vm1" "$URI/vm1@mirror-leg1"
same "$URI/vm1" "iscsi://$ISCSI_PORTAL/iqn.2026-11.org.strata:vm1:mirror-leg1/0"
qemu-io -f raw -c 'write 0 4k' "$URI/vm1@mirror-leg1" >/dev/null 2>&1 && fail "the connected leg's copy accepted a write"
echo "1: added under fio load, leg equal"

# 2. 1% of a 1 GiB volume after the split
strata volume create vm2 --size 1G >/dev/null
qemu-io -f raw -c 'write -P 0x11 0 96M' -c 'write -P 0x22 512M 32M' "$URI/vm2" >/dev/null || fail "fill vm2"
strata mirror add vm2 --to-pool "$L2" --timeout 60s --wait >/dev/null || fail "mirror add vm2"
same "$URI/vm2" "$URI/vm2@mirror-leg1"
qemu-img convert -f raw -O raw "$URI/vm2" "$WORKDIR/at-split.raw"
strata mirror detach vm2 --as vm2-copy >/dev/null || fail "detach vm2"
# 164 writes of 4 KiB, one in each of 164 distinct 64 KiB chunks: 1% of the volume's chunks.
args=()
for i in $(seq 0 163); do args+=(-c "write -P 0x$(printf %02x $((i % 200 + 40))) $((i * 6247 * 65536 % (1 << 30) / 65536 * 65536 + 4096)) 4k"); done
qemu-io -f raw "${args[@]}" "$URI/vm2" >/dev/null || fail "write 1% of vm2"
changed=$((164 * 65536))
same "$WORKDIR/at-split.raw" "$URI/vm2-copy"
same "$WORKDIR/at-split.raw" "iscsi://$ISCSI_PORTAL/iqn.2026-11.org.strata:vm2-copy/0"
strata mirror attach vm2 --wait >/dev/null || fail "attach vm2"
resynced=$(mirror_field vm2 leg1 bytesResynced)
[ "$resynced" -le $((changed * 11 / 10)) ] || fail "attach resynced $resynced bytes for $changed changed"
[ "$resynced" -ge "$changed" ] || fail "attach resynced $resynced bytes, less than the $changed changed"
same "$URI/vm2" "$URI/vm2@mirror-leg1"
echo "REPORT 1% of 1 GiB changed ($changed bytes of chunks): attach resynced $resynced bytes"

# 3. a writable detached copy's writes are discarded
strata mirror detach vm2 --writable >/dev/null || fail "detach vm2 --writable"
qemu-io -f raw -c 'write -P 0x99 100M 8M' "$URI/vm2@mirror-leg1" >/dev/null || fail "write the writable copy"
qemu-io -f raw -c 'write -P 0x77 200M 1M' "$URI/vm2" >/dev/null || fail "write vm2"
strata mirror attach vm2 --wait >/dev/null || fail "attach vm2 after writable"
resynced=$(mirror_field vm2 leg1 bytesResynced)
[ "$resynced" -eq $((9 << 20)) ] || fail "attach after a writable detach resynced $resynced, not 9 MiB"
same "$URI/vm2" "$URI/vm2@mirror-leg1"
echo "3: writable copy's writes discarded"

# 4a. kill -9 while connected
qemu-io -f raw -c 'write -P 0x33 300M 2M' -c flush "$URI/vm2" >/dev/null || fail "write before kill"
kill9_daemon
start_daemon
wait_state vm2 leg1 connected
resynced=$(mirror_field vm2 leg1 bytesResynced)
[ "$resynced" -lt $((1 << 30)) ] || fail "restart while connected resynced the whole volume"
qemu-io -f raw -c 'read -P 0x33 300M 2M' "$URI/vm2" >/dev/null || fail "a flushed write was lost (connected)"
same "$URI/vm2" "$URI/vm2@mirror-leg1"
echo "REPORT kill -9 while connected: restart resynced $resynced bytes"

# 4b. kill -9 while detached
strata mirror detach vm2 >/dev/null || fail "detach before kill"
qemu-io -f raw -c 'write -P 0x44 400M 3M' -c flush "$URI/vm2" >/dev/null || fail "write while detached"
kill9_daemon
start_daemon
[ "$(mirror_field vm2 leg1 state)" = detached ] || fail "a detached leg is $(mirror_field vm2 leg1 state) after restart"
strata mirror attach vm2 --wait >/dev/null || fail "attach after kill while detached"
resynced=$(mirror_field vm2 leg1 bytesResynced)
[ "$resynced" -eq $((3 << 20)) ] || fail "attach after a kill while detached resynced $resynced, not 3 MiB"
qemu-io -f raw -c 'read -P 0x44 400M 3M' "$URI/vm2" >/dev/null || fail "a flushed write was lost (detached)"
same "$URI/vm2" "$URI/vm2@mirror-leg1"

# 4c. kill -9 while resyncing
strata mirror detach vm2 >/dev/null || fail "detach before full attach"
strata mirror attach vm2 --full --rate 64M >/dev/null || fail "attach --full"
# The kill lands once 256 MiB are copied: a full copy checkpoints every 2 s (a split-point pair
# and the chunk it has reached, fullCopyFrom in mirrors.json), so at least 128 MiB of progress
# is durable, and the restart copies the rest plus what changed since the checkpoint. (An earlier version of this step killed at once and read a restart
# resync of 0 bytes in one run and 36 MiB in another: the restart copied only the split
# point's diff, whose leg side held whatever the interrupted copy had committed, and the rest
# of the --full copy was silently dropped.)
for _ in $(seq 1 600); do
    [ "$(mirror_field vm2 leg1 bytesResynced)" -ge $((256 << 20)) ] && break
    sleep 0.1
done
[ "$(mirror_field vm2 leg1 state)" = resyncing ] || fail "the full copy (at 64 MiB/s) ended before the kill"
copied=$(mirror_field vm2 leg1 bytesResynced)
[ "$copied" -ge $((256 << 20)) ] || fail "the full copy reached only $copied bytes in 60 s"
kill9_daemon
start_daemon
wait_state vm2 leg1 connected 300
resynced=$(mirror_field vm2 leg1 bytesResynced)
[ "$resynced" -le $(((1 << 30) - (64 << 20))) ] || fail "restart during a full copy started it over ($resynced bytes)"
# The rest of the full copy is copied, not only the split point's diff.
[ "$resynced" -ge $(((1 << 30) - copied - (16 << 20))) ] || fail "restart during a full copy resynced $resynced bytes: the rest of the copy ($((1 << 30) - copied) bytes) was dropped"
same "$URI/vm2" "$URI/vm2@mirror-leg1"
same "$URI/vm1" "$URI/vm1@mirror-leg1"
echo "REPORT kill -9 while resyncing ($copied bytes of the full copy done): restart resynced $resynced bytes"

# 5. refusals
strata volume delete vm2 2>"$WORKDIR/err" && fail "deleting a mirrored volume succeeded"
grep -q "strata mirror remove vm2" "$WORKDIR/err" || fail "delete refusal does not name the fix: $(cat "$WORKDIR/err")"
strata volume resize vm2 --size 2G 2>"$WORKDIR/err" && fail "resizing a mirrored volume succeeded"
strata snapshot create vm2@s1 >/dev/null
strata snapshot rollback vm2@s1 2>"$WORKDIR/err" && fail "rolling back a mirrored volume succeeded"
strata mirror add vm1 --to-pool "$L2" --name other 2>"$WORKDIR/err" && fail "a second mirror into a leg pool succeeded"
grep -q "leg1 of volume vm2" "$WORKDIR/err" || fail "refusal does not name the owner: $(cat "$WORKDIR/err")"
[ "$(strata snapshot list vm2 --json | /usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 1 ] ||
    fail "hidden split points show in snapshot list"

strata check >/dev/null || fail "strata check (daemon)"
stop_daemon
strata check >/dev/null || fail "strata check of the volume pool"
strata check --pool "$L1" >/dev/null || fail "strata check of leg pool 1"
strata check --pool "$L2" >/dev/null || fail "strata check of leg pool 2"
echo "PASS $TEST_NAME"
