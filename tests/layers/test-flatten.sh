#!/usr/bin/env bash
# Flatten: under fio load (4 KiB random writes with verification over NBD) a flatten copies
# what the volume reads from its base, fio's verification passes and the volume reads as the
# base with fio's writes. Then a flatten killed with kill -9 mid-way resumes by itself when the
# daemon restarts, the data verifies, and the base file can be removed: the volume no longer
# needs it, and `strata check` is clean.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/layers-lib.sh"
requires qemu-img qemu-io fio nbdinfo /usr/bin/python3

cd "$WORKDIR"
qemu-img create -q -f raw base.raw 256M
qemu-io -f raw -c "write -P 0x3c 0 96M" -c "write -P 0x4d 128M 64M" base.raw >/dev/null
qemu-img convert -q -O qcow2 base.raw base.qcow2
start_daemon
strata volume create vm --base base.qcow2 >/dev/null

# fio writes and verifies [96M, 128M) while the flatten runs over the whole volume.
fio --name=load --ioengine=nbd --uri="$URI/vm" --rw=randwrite --bs=4k --iodepth=8 --offset=96M --size=32M \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --randrepeat=1 --output="$WORKDIR/fio.out" &
FIO_PID=$!
STRATA_PIDS+=("$FIO_PID")
strata volume flatten vm >flatten.out 2>&1 || fail "flatten under load: $(cat flatten.out)"
wait "$FIO_PID" || fail "fio verification under flatten: $(tail -20 "$WORKDIR/fio.out")"
strata volume list --json | /usr/bin/python3 -c 'import json,sys; v=json.load(sys.stdin)[0]; sys.exit(v.get("base") is not None)' \
    || fail "vm still has a base after flatten: $(strata volume list)"
# Outside fio's range the volume is the base; inside it, what fio wrote (and verified).
cp base.raw expect.raw
nbdcopy_range() { /usr/bin/python3 - "$@" <<'PY'
import nbd, sys
uri, start, length, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
h = nbd.NBD(); h.connect_uri(uri)
with open(out, "r+b") as f:
    f.seek(start)
    for offset in range(start, start + length, 1 << 20):
        f.write(h.pread(min(1 << 20, start + length - offset), offset))
PY
}
nbdcopy_range "$URI/vm" $((96 << 20)) $((32 << 20)) expect.raw
same_bytes expect.raw "$URI/vm" "vm after a flatten under load"

# kill -9 in the middle of a flatten of a second volume, then restart: it resumes by itself.
strata volume create vm2 --base base.qcow2 >/dev/null
# --rate keeps the copy slow enough (256 MiB of base range at 16 MiB/s) for the kill to land in it.
strata volume flatten vm2 --rate 16M >flatten2.out 2>&1 &
FLATTEN_PID=$!
STRATA_PIDS+=("$FLATTEN_PID")
allocated=0
for _ in $(seq 1 2000); do
    allocated=$(strata volume list --json | /usr/bin/python3 -c 'import json,sys; print([v for v in json.load(sys.stdin) if v["name"]=="vm2"][0]["allocatedBytes"])')
    [ "$allocated" -gt $((8 << 20)) ] && break
    sleep 0.01
done
[ "$allocated" -gt 0 ] || fail "the flatten of vm2 copied nothing"
[ "$allocated" -lt $((160 << 20)) ] || fail "the flatten of vm2 finished before the kill ($allocated bytes); make the base larger"
kill_daemon
wait "$FLATTEN_PID" 2>/dev/null && fail "the flatten command succeeded although its daemon was killed"
start_daemon
for _ in $(seq 1 600); do
    base=$(strata volume list --json | /usr/bin/python3 -c 'import json,sys; print([v for v in json.load(sys.stdin) if v["name"]=="vm2"][0].get("base") or "")')
    [ -z "$base" ] && break
    sleep 0.1
done
[ -z "$base" ] || fail "the flatten of vm2 did not resume and finish after the restart: $(tail -5 "$WORKDIR/daemon.log")"
grep -q "resuming the flatten of volume vm2" "$WORKDIR/daemon.log" || fail "the daemon did not say it resumed the flatten"
same_bytes base.raw "$URI/vm2" "vm2 after a resumed flatten"
rm base.qcow2 base.raw.unused 2>/dev/null || true
same_bytes expect.raw "$URI/vm" "vm with its base file removed"
same_bytes base.raw "$URI/vm2" "vm2 with its base file removed"
strata check >check.out 2>&1 || fail "strata check: $(cat check.out)"
stop_daemon
echo "REPORT flatten under fio load verified; a flatten killed at $((allocated >> 20)) MiB resumed and verified"
