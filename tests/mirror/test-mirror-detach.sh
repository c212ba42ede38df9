#!/usr/bin/env bash
# Detach under write load holds exactly the acknowledged writes: the live-snapshot test's
# recorded-pattern technique (tests/nbd/nbdload.py snapwriter) with `strata mirror detach` in
# place of `snapshot create`. vm1 has two connected legs, s0 and s1, in two pools; the writer
# writes numbered, self-describing 16 KiB blocks with 8 writes in flight (every third FUA).
# At K=0 (quiesced: nothing in flight) leg s0 is detached, at K=1 (live: writes keep flowing
# while the detach runs) leg s1. `snapcheck --copies` then reads each detached copy over NBD
# (vm1@mirror-sK, read-only): the quiesced one holds exactly the acknowledged state, the live
# one every block acknowledged before the detach began (or a version issued during it) and no
# version issued after it returned; the volume holds the last acknowledged version of every
# block. Both legs are then attached, and compare equal to the volume; `check` is clean.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/mirror-lib.sh"
requires /usr/bin/python3 qemu-img
detach_load_setup

start_daemon
strata volume create vm1 --size $((NBLOCKS * BS)) >/dev/null
for k in 0 1; do
    strata mirror add vm1 --to-pool "$(leg_pool "leg$k" 1G)" --name "s$k" --timeout 60s --wait >/dev/null || fail "mirror add s$k"
done

detach_under_load "$URI/vm1"
$LOAD snapcheck "$URI/vm1" $NBLOCKS $BS "$SIG" $NSNAPS --copies "$URI/vm1@mirror-s{k}" ||
    fail "a detached copy does not hold exactly the acknowledged data"

for k in 0 1; do
    strata mirror attach vm1 "s$k" --wait >/dev/null || fail "attach s$k"
    same "$URI/vm1" "$URI/vm1@mirror-s$k"
done
strata check >/dev/null || fail "strata check"
stop_daemon
strata check >/dev/null || fail "strata check after shutdown"
echo "PASS $TEST_NAME"
