#!/usr/bin/env bash
# Detach under write load with a leg on another daemon holds exactly the acknowledged writes:
# test-mirror-detach.sh's recorded-pattern technique (tests/nbd/nbdload.py snapwriter) across
# two hosts in network namespaces (mirror-lib.sh's two_hosts). vm1 on the primary has a local
# leg s0 (a second pool) and a leg s1 on the leg daemon. The writer, in the primary's
# namespace, writes numbered, self-describing 16 KiB blocks with 8 writes in flight (every third
# FUA). At K=0 (quiesced) leg s0 is detached; at K=1 (live: writes keep flowing while the detach
# runs, each one waiting on the remote leg) leg s1. `snapcheck --copies` then reads the local
# copy (vm1@mirror-s0) and the leg daemon's (vm1 there, read-only): the quiesced one holds
# exactly the acknowledged state, the live one every block acknowledged before the detach began
# (or a version issued during it) and no version issued after it returned; the volume holds the
# last acknowledged version of every block. Both legs are attached again and compare equal to
# the volume, and `check` is clean on both pools.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/mirror-lib.sh"
requires ip /usr/bin/python3 qemu-img
[ "$(id -u)" = 0 ] || requires root-for-ip-netns
detach_load_setup

two_hosts
start_leg
start_primary
strata volume create vm1 --size $((NBLOCKS * BS)) >/dev/null
strata mirror add vm1 --to-pool "$(leg_pool leg0 1G)" --name s0 --timeout 60s --wait >/dev/null || fail "mirror add s0"
strata mirror add vm1 --to "$LEG_IP:10810" --secret-file "$SECRET" --name s1 --timeout 60s --wait >/dev/null ||
    fail "mirror add s1"
[ "$(mirror_field vm1 s1 location)" = "$LEG_IP:10810" ] || fail "leg s1 is at $(mirror_field vm1 s1 location)"

detach_under_load "$PRIMARY_URI/vm1" in_primary
[ "$(mirror_field vm1 s1 state)" = detached ] || fail "leg s1 is $(mirror_field vm1 s1 state), not detached"

in_primary $LOAD snapcheck "$PRIMARY_URI/vm1" $NBLOCKS $BS "$SIG" $NSNAPS \
    --copies "$PRIMARY_URI/vm1@mirror-s0,$LEG_URI/vm1" ||
    fail "a detached copy does not hold exactly the acknowledged data"

for k in 0 1; do
    strata mirror attach vm1 "s$k" --wait >/dev/null || fail "attach s$k"
done
in_primary qemu-img compare -f raw -F raw "$PRIMARY_URI/vm1" "$PRIMARY_URI/vm1@mirror-s0" >"$WORKDIR/compare.out" 2>&1 ||
    fail "vm1 and its local leg differ: $(cat "$WORKDIR/compare.out")"
same_remote vm1
strata check >/dev/null || fail "strata check on the primary"
on_leg check >/dev/null || fail "strata check on the leg daemon"
stop_host "$PRIMARY_PID"
stop_host "$LEG_PID"
echo "PASS $TEST_NAME"
