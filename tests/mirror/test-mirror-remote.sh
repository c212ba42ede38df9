#!/usr/bin/env bash
# A mirror leg on another daemon (`mirror add --to HOST:PORT`), two hosts in network namespaces
# made by the test (a veth pair, link-local addresses; deleted by name on exit):
#   1. add under fio load: fio (nbd engine, 4 jobs, random writes, verify=crc32c) writes vm1
#      on the primary while the leg is added and copies; fio verifies; once connected the leg
#      daemon's vm1 compares equal to the volume (qemu-img compare, from the primary's
#      namespace) and refuses writes (exported read-only while the mirror owns it).
#   2. 1% of a 1 GiB volume changed after a detach (--as vm2-copy: the leg daemon's volume is
#      renamed and still reads as the split): attach resyncs at most 1.1x the changed chunks
#      (bytesResynced from `mirror status --json`), and the leg compares equal.
#   3. the link cut (`ip link set down` in the primary's namespace) during a fio write load:
#      fio's writes go on and verify (each waits at most the leg's --timeout), the leg goes
#      degraded, and after the link is back it resyncs by itself only what changed (at most the
#      load's region plus one split-point window), then compares equal.
#   4. refusals: a wrong secret, a second leg to the same daemon, a volume of that name on the
#      leg daemon, resizing a mirrored volume: each names the fix and changes nothing.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/mirror-lib.sh"
requires ip fio qemu-img qemu-io
fio --enghelp 2>/dev/null | grep -w nbd >/dev/null || requires fio-with-nbd-engine
[ "$(id -u)" = 0 ] || requires root-for-ip-netns

two_hosts
start_leg
start_primary

# 1. add under fio load
strata volume create vm1 --size 64M >/dev/null
load_job "$PRIMARY_URI/vm1" >"$WORKDIR/load.fio"
in_primary fio "$WORKDIR/load.fio" >"$WORKDIR/fio.out" 2>&1 &
FIO=$!
STRATA_PIDS+=("$FIO")
wait_started "$WORKDIR/fio.out" "$FIO" || fail "fio did not start: $(cat "$WORKDIR/fio.out")"
strata mirror add vm1 --to "$LEG_IP:10810" --secret-file "$SECRET" --timeout 60s >/dev/null || fail "mirror add vm1"
wait "$FIO" || fail "fio failed: $(tail -20 "$WORKDIR/fio.out")"
forget "$FIO"
wait_state vm1 leg1 connected
[ "$(mirror_field vm1 leg1 location)" = "$LEG_IP:10810" ] || fail "the leg's location is $(mirror_field vm1 leg1 location)"
same_remote vm1
in_primary qemu-io -f raw -c 'write 0 4k' "$LEG_URI/vm1" >/dev/null 2>&1 && fail "the connected leg's copy accepted a write"
on_leg volume list | grep -q '^vm1 ' || fail "the leg daemon does not list vm1: $(on_leg volume list)"
echo "1: added under fio load, leg equal"

# 2. 1% of a 1 GiB volume after the split
strata volume create vm2 --size 1G >/dev/null
in_primary qemu-io -f raw -c 'write -P 0x11 0 96M' -c 'write -P 0x22 512M 32M' "$PRIMARY_URI/vm2" >/dev/null || fail "fill vm2"
strata mirror add vm2 --to "$LEG_IP:10810" --secret-file "$SECRET" --timeout 5s --wait >/dev/null || fail "mirror add vm2"
same_remote vm2
in_primary qemu-img convert -f raw -O raw "$PRIMARY_URI/vm2" "$WORKDIR/at-split.raw"
strata mirror detach vm2 --as vm2-copy >/dev/null || fail "detach vm2"
# 164 writes of 4 KiB, one in each of 164 distinct 64 KiB chunks: 1% of the volume's chunks.
args=()
for i in $(seq 0 163); do args+=(-c "write -P 0x$(printf %02x $((i % 200 + 40))) $((i * 6247 * 65536 % (1 << 30) / 65536 * 65536 + 4096)) 4k"); done
in_primary qemu-io -f raw "${args[@]}" "$PRIMARY_URI/vm2" >/dev/null || fail "write 1% of vm2"
changed=$((164 * 65536))
in_primary qemu-img compare -f raw -F raw "$WORKDIR/at-split.raw" "$LEG_URI/vm2-copy" >/dev/null ||
    fail "the detached copy vm2-copy is not the volume at the split"
in_primary qemu-io -f raw -c 'write 0 4k' "$LEG_URI/vm2-copy" >/dev/null 2>&1 && fail "a read-only detached copy accepted a write"
strata mirror attach vm2 --wait >/dev/null || fail "attach vm2"
resynced=$(mirror_field vm2 leg1 bytesResynced)
[ "$resynced" -le $((changed * 11 / 10)) ] || fail "attach resynced $resynced bytes for $changed changed"
[ "$resynced" -ge "$changed" ] || fail "attach resynced $resynced bytes, less than the $changed changed"
same_remote vm2
on_leg volume list | grep -q '^vm2-copy ' && fail "the leg daemon still has vm2-copy after attach"
echo "REPORT remote leg, 1% of 1 GiB changed ($changed bytes of chunks): attach resynced $resynced bytes"

# 3. the link cut during a write load
cat >"$WORKDIR/cut.fio" <<JOB
[global]
ioengine=nbd
uri=$PRIMARY_URI/vm2
rw=randwrite
bs=64k
offset=256m
size=32m
iodepth=8
randseed=7
verify=crc32c
verify_fatal=1
verify_state_save=0
do_verify=1
loops=4
[cut]
JOB
in_primary fio "$WORKDIR/cut.fio" >"$WORKDIR/cut.out" 2>&1 &
FIO=$!
STRATA_PIDS+=("$FIO")
wait_started "$WORKDIR/cut.out" "$FIO" || fail "fio did not start: $(cat "$WORKDIR/cut.out")"
ip -n "$PRIMARY_NS" link set "$VETH_PRIMARY" down
wait_state vm2 leg1 degraded 60
wait "$FIO" || fail "fio failed while the link was down: $(tail -20 "$WORKDIR/cut.out")"
forget "$FIO"
ip -n "$PRIMARY_NS" link set "$VETH_PRIMARY" up
wait_state vm2 leg1 connected 120
resynced=$(mirror_field vm2 leg1 bytesResynced)
# fio wrote only within its 32 MiB; the window adds what changed since the last split point.
[ "$resynced" -le $((32 << 20)) ] || fail "after the link came back the leg resynced $resynced bytes, more than the load's 32 MiB"
same_remote vm2
echo "REPORT link cut under load: degraded, then resynced $resynced bytes"

# 4. refusals
strata volume create vm3 --size 16M >/dev/null
echo wrong-secret-wrong >"$WORKDIR/wrong"
strata mirror add vm3 --to "$LEG_IP:10810" --secret-file "$WORKDIR/wrong" 2>"$WORKDIR/err" && fail "a wrong secret was accepted"
grep -q "secret" "$WORKDIR/err" || fail "the wrong-secret refusal does not say so: $(cat "$WORKDIR/err")"
on_leg volume list | grep -q '^vm3 ' && fail "a refused add left vm3 on the leg daemon"
strata mirror add vm2 --to "$LEG_IP:10810" --secret-file "$SECRET" --name other 2>"$WORKDIR/err" && fail "a second leg to the same daemon succeeded"
grep -q "already mirrored" "$WORKDIR/err" || fail "refusal does not name the leg: $(cat "$WORKDIR/err")"
on_leg volume create vm3 --size 1M >/dev/null
strata mirror add vm3 --to "$LEG_IP:10810" --secret-file "$SECRET" 2>"$WORKDIR/err" && fail "a leg over an existing volume succeeded"
grep -q "delete or rename it" "$WORKDIR/err" || fail "refusal does not name the fix: $(cat "$WORKDIR/err")"
strata mirror status vm3 --json | /usr/bin/python3 -c 'import json, sys; sys.exit(len(json.load(sys.stdin)))' ||
    fail "a refused add left a leg: $(strata mirror status vm3)"
strata volume resize vm2 --size 2G 2>"$WORKDIR/err" && fail "resizing a mirrored volume succeeded"
grep -q "strata mirror remove vm2" "$WORKDIR/err" || fail "resize refusal does not name the fix: $(cat "$WORKDIR/err")"
on_leg volume delete vm2 2>"$WORKDIR/err" && fail "the leg daemon deleted a mirror's copy"
grep -q "copy of mirror leg leg1 of volume vm2" "$WORKDIR/err" || fail "leg-side refusal does not name the mirror: $(cat "$WORKDIR/err")"

# remove: the copy stays on the leg daemon as an ordinary, writable volume
strata mirror remove vm1 >/dev/null || fail "mirror remove vm1"
in_primary qemu-io -f raw -c 'write 0 4k' "$LEG_URI/vm1" >/dev/null || fail "the removed leg's copy is not writable"
stop_host "$PRIMARY_PID"
stop_host "$LEG_PID"
strata check >/dev/null || fail "strata check on the primary's pool"
on_leg check >/dev/null || fail "strata check on the leg daemon's pool"
echo "4: refusals, remove, both pools check clean"
