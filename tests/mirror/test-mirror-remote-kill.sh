#!/usr/bin/env bash
# Crashes with a mirror leg on another daemon, two hosts in network namespaces (see
# test-mirror-remote.sh), vm1 a 1 GiB volume with 64 MiB of data:
#   1. kill -9 of the primary while connected: the write flushed before the kill is on the
#      volume after the restart, the leg reconnects and resyncs by itself less than the volume
#      (what changed since the newest split-point pair: the bounded window), and compares equal.
#   2. kill -9 of the primary during a resync (attach at 4 MiB/s after 32 MiB changed while
#      detached): after the restart the resync goes on by itself and copies at most the
#      changed chunks plus the window, and the leg compares equal.
#   3. kill -9 of the leg daemon during a resync: the leg goes degraded on the primary, which
#      keeps serving; the leg daemon restarts and the leg resyncs by itself at most the changed
#      chunks plus the window, and compares equal.
#   4. both daemons stopped: `strata check` is clean on both pools.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/mirror-lib.sh"
requires ip qemu-img qemu-io
[ "$(id -u)" = 0 ] || requires root-for-ip-netns

two_hosts
start_leg
start_primary
strata volume create vm1 --size 1G >/dev/null
in_primary qemu-io -f raw -c 'write -P 0x11 0 64M' "$PRIMARY_URI/vm1" >/dev/null || fail "fill vm1"
strata mirror add vm1 --to "$LEG_IP:10810" --secret-file "$SECRET" --timeout 10s --wait >/dev/null || fail "mirror add vm1"
same_remote vm1

# 1. kill -9 of the primary while connected
in_primary qemu-io -f raw -c 'write -P 0x33 300M 2M' -c flush "$PRIMARY_URI/vm1" >/dev/null || fail "write before kill"
kill9 "$PRIMARY_PID" "$PRIMARY_POOL"
start_primary
wait_state vm1 leg1 connected 120
resynced=$(mirror_field vm1 leg1 bytesResynced)
[ "$resynced" -lt $((1 << 30)) ] || fail "restart while connected resynced the whole volume"
in_primary qemu-io -f raw -c 'read -P 0x33 300M 2M' "$PRIMARY_URI/vm1" >/dev/null || fail "a flushed write was lost (connected)"
same_remote vm1
echo "REPORT kill -9 of the primary while connected: restart resynced $resynced bytes"

# changes MB PATTERN OFFSET: MB MiB written on the primary while the leg is detached.
changes() {
    strata mirror detach vm1 >/dev/null || fail "detach"
    in_primary qemu-io -f raw -c "write -P $2 $3 $1M" -c flush "$PRIMARY_URI/vm1" >/dev/null || fail "write while detached"
    strata mirror attach vm1 --rate 4M >/dev/null || fail "attach"
    [ "$(mirror_field vm1 leg1 state)" = resyncing ] || fail "the resync (at 4 MiB/s) ended before the kill"
}

# 2. kill -9 of the primary during a resync
changes 32 0x44 400M
kill9 "$PRIMARY_PID" "$PRIMARY_POOL"
start_primary
wait_state vm1 leg1 connected 120
resynced=$(mirror_field vm1 leg1 bytesResynced)
# The 32 MiB changed, plus the chunks the interrupted resync had copied to the leg (a leg-side
# change since the pair): never more than twice the change, never the volume.
[ "$resynced" -le $((64 << 20)) ] || fail "restart during a resync copied $resynced bytes for 32 MiB changed"
in_primary qemu-io -f raw -c 'read -P 0x44 400M 32M' "$PRIMARY_URI/vm1" >/dev/null || fail "a flushed write was lost (resyncing)"
same_remote vm1
echo "REPORT kill -9 of the primary during a resync: restart resynced $resynced bytes (32 MiB changed)"

# 3. kill -9 of the leg daemon during a resync
changes 32 0x55 600M
kill9 "$LEG_PID" "$LEG_POOL"
in_primary qemu-io -f raw -c 'write -P 0x66 700M 1M' -c flush "$PRIMARY_URI/vm1" >/dev/null || fail "write while the leg daemon is down"
wait_state vm1 leg1 degraded 60
start_leg
wait_state vm1 leg1 connected 120
resynced=$(mirror_field vm1 leg1 bytesResynced)
[ "$resynced" -le $((66 << 20)) ] || fail "after the leg daemon's restart the leg resynced $resynced bytes for 33 MiB changed"
in_primary qemu-io -f raw -c 'read -P 0x55 600M 32M' -c 'read -P 0x66 700M 1M' "$PRIMARY_URI/vm1" >/dev/null ||
    fail "a flushed write was lost (leg daemon killed)"
same_remote vm1
echo "REPORT kill -9 of the leg daemon during a resync: resynced $resynced bytes (33 MiB changed)"

# 4. both pools check clean
stop_host "$PRIMARY_PID"
stop_host "$LEG_PID"
strata check >/dev/null || fail "strata check on the primary's pool"
on_leg check >/dev/null || fail "strata check on the leg daemon's pool"
echo "4: both pools check clean"
