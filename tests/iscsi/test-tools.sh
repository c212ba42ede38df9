#!/usr/bin/env bash
# libiscsi's tools and qemu-img through iscsi:// URLs, and NBD and iSCSI seeing the same bytes.
# A 64 MiB volume vm1 with an (empty) snapshot vm1@s1:
#  - iscsi-ls -s discovers both targets, iqn.2026-11.org.strata:vm1 and ...:vm1:s1, each with a
#    64 MiB direct-access LUN 0;
#  - iscsi-inq: the standard page names a direct-access device with vendor and product; VPD page
#    0x00 lists 0x00 0x80 0x83 0xb0 0xb1 0xb2; 0x80 has a serial number and 0x83 designators,
#    both different for the volume and its snapshot; 0xb0 allows UNMAP (maximum unmap LBA and
#    descriptor counts > 0); 0xb2 says thin provisioning: lbpu, lbpws and lbprz set; an
#    unsupported page (0x05) is refused;
#  - iscsi-readcapacity16: 64 MiB, LBPME and LBPRZ set, for the volume and the snapshot;
#  - qemu-img convert -n of a 64 MiB random raw image into iscsi://.../vm1/0, then qemu-img
#    compare of the image with vm1 over iSCSI and over NBD (nbd://.../vm1): identical; the empty
#    snapshot differs from the image (the comparison can fail);
#  - the snapshot reads as zeros over iSCSI; a write over NBD is read back over iSCSI and a write
#    over iSCSI over NBD (qemu-io); then the whole volume compares identical to the image (with
#    both writes applied) over both protocols, and converts back out over iSCSI byte-identical.
# `strata check` must be clean at the end.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/iscsi-lib.sh"
requires iscsi-ls iscsi-inq iscsi-readcapacity16 qemu-img qemu-io "$PYTHON"
qemu_has_iscsi || requires "qemu-block-extra(qemu-img iscsi:// support)"

SIZE=$((64 << 20))
start_daemon
wait_iscsi
strata volume create vm1 --size 64M >/dev/null
strata snapshot create vm1@s1 >/dev/null
VM1=$(iscsi_url vm1)
S1=$(iscsi_url vm1:s1)

# --- discovery -----------------------------------------------------------------------------
expect_ok "iscsi-ls -s" iscsi-ls -s "iscsi://$ISCSI_PORTAL"
cp "$WORKDIR/out" "$WORKDIR/ls.out"
cat "$WORKDIR/ls.out"
for target in vm1 vm1:s1; do
    grep -q "^Target:$IQN:$target Portal:$ISCSI_PORTAL," "$WORKDIR/ls.out" || fail "iscsi-ls does not list $IQN:$target at $ISCSI_PORTAL"
done
luns=$(grep -c '^Lun:0 *Type:DIRECT_ACCESS (Size:6[34]M)' "$WORKDIR/ls.out" || true)
[ "$luns" -eq 2 ] || fail "iscsi-ls: want LUN 0 DIRECT_ACCESS of 64 MiB on both targets, got $luns"
expect_ok "iscsi-ls --url" iscsi-ls --url "iscsi://$ISCSI_PORTAL"
grep -qx "$VM1" "$WORKDIR/out" || fail "iscsi-ls --url does not print $VM1: $(cat "$WORKDIR/out")"

# --- INQUIRY -------------------------------------------------------------------------------
# inq NAME URL [ARGS]: iscsi-inq output in $WORKDIR/NAME.
inq() {
    local name=$1 url=$2
    shift 2
    iscsi-inq "$@" "$url" >"$WORKDIR/$name" 2>&1 || fail "iscsi-inq $* $url: $(cat "$WORKDIR/$name")"
}
# field FILE KEY: the value after "KEY:" in iscsi-inq output.
field() { sed -n "s/^$2:\(.*\)$/\1/p" "$1" | head -1; }

inq std "$VM1"
cat "$WORKDIR/std"
[ "$(field "$WORKDIR/std" 'Peripheral Device Type')" = DIRECT_ACCESS ] || fail "standard INQUIRY: not DIRECT_ACCESS"
[ -n "$(field "$WORKDIR/std" Vendor | tr -d ' ')" ] || fail "standard INQUIRY: empty vendor"
[ -n "$(field "$WORKDIR/std" Product | tr -d ' ')" ] || fail "standard INQUIRY: empty product"
echo "ok: standard INQUIRY"

inq vpd00 "$VM1" -e 1 -c 0
for page in 0x00 0x80 0x83 0xb0 0xb1 0xb2; do
    grep -q "^Page:$page " "$WORKDIR/vpd00" || fail "VPD 0x00 does not list page $page: $(cat "$WORKDIR/vpd00")"
done
echo "ok: VPD 0x00 lists 0x00 0x80 0x83 0xb0 0xb1 0xb2"

inq vpd80 "$VM1" -e 1 -c 128
inq vpd80s "$S1" -e 1 -c 128
serial=$(sed -n 's/^Unit Serial Number:\[\(.*\)\]$/\1/p' "$WORKDIR/vpd80" | tr -d ' ')
serial_s=$(sed -n 's/^Unit Serial Number:\[\(.*\)\]$/\1/p' "$WORKDIR/vpd80s" | tr -d ' ')
[ -n "$serial" ] || fail "VPD 0x80: no serial number: $(cat "$WORKDIR/vpd80")"
[ "$serial" != "$serial_s" ] || fail "VPD 0x80: vm1 and vm1@s1 have the same serial number $serial"
echo "ok: VPD 0x80 serial numbers (vm1 $serial, vm1@s1 $serial_s)"

inq vpd83 "$VM1" -e 1 -c 131
inq vpd83s "$S1" -e 1 -c 131
grep -q '^DEVICE DESIGNATOR #0' "$WORKDIR/vpd83" || fail "VPD 0x83: no designator: $(cat "$WORKDIR/vpd83")"
cmp -s "$WORKDIR/vpd83" "$WORKDIR/vpd83s" && fail "VPD 0x83: vm1 and vm1@s1 have identical designators (multipath would merge them)"
echo "ok: VPD 0x83 designators, different for the volume and its snapshot"

inq vpdb0 "$VM1" -e 1 -c 176
cat "$WORKDIR/vpdb0"
[ "$(field "$WORKDIR/vpdb0" 'maximum unmap lba count')" -gt 0 ] || fail "VPD 0xb0: maximum unmap lba count is 0"
[ "$(field "$WORKDIR/vpdb0" 'maximum unmap block descriptor count')" -gt 0 ] || fail "VPD 0xb0: maximum unmap block descriptor count is 0"
echo "ok: VPD 0xb0 allows UNMAP"

inq vpdb1 "$VM1" -e 1 -c 177
inq vpdb2 "$VM1" -e 1 -c 178
cat "$WORKDIR/vpdb2"
for bit in lbpu lbpws lbprz; do
    [ "$(field "$WORKDIR/vpdb2" $bit)" = 1 ] || fail "VPD 0xb2: $bit is not 1: $(cat "$WORKDIR/vpdb2")"
done
echo "ok: VPD 0xb2 thin provisioning (lbpu lbpws lbprz)"

expect_fail "unsupported VPD page 0x05 is refused" iscsi-inq -e 1 -c 5 "$VM1"
grep -q ILLEGAL_REQUEST "$WORKDIR/out" || fail "VPD 0x05: want ILLEGAL REQUEST: $(cat "$WORKDIR/out")"

# --- READ CAPACITY(16) ---------------------------------------------------------------------
for url in "$VM1" "$S1"; do
    iscsi-readcapacity16 "$url" >"$WORKDIR/cap" 2>&1 || fail "iscsi-readcapacity16 $url: $(cat "$WORKDIR/cap")"
    grep -qx "Total size:$SIZE" "$WORKDIR/cap" || fail "READ CAPACITY(16) $url: want Total size:$SIZE: $(cat "$WORKDIR/cap")"
    grep -qx "LBPME:1 LBPRZ:1" "$WORKDIR/cap" || fail "READ CAPACITY(16) $url: want LBPME:1 LBPRZ:1: $(cat "$WORKDIR/cap")"
done
cat "$WORKDIR/cap"
echo "ok: READ CAPACITY(16) of vm1 and vm1@s1"

# --- qemu-img through iscsi:// and nbd:// ---------------------------------------------------
# compare A B: 0 identical, 1 different (qemu-img compare's status).
compare() {
    local status=0
    qemu-img compare -f raw -F raw "$1" "$2" >"$WORKDIR/compare.out" 2>&1 || status=$?
    echo "compare $1 $2: exit $status, $(head -1 "$WORKDIR/compare.out")"
    return $status
}
head -c $SIZE /dev/urandom >"$WORKDIR/image.raw"
expect_ok "qemu-img convert into $VM1" qemu-img convert -n -f raw -O raw "$WORKDIR/image.raw" "$VM1"
compare "$WORKDIR/image.raw" "$VM1" || fail "image vs vm1 over iSCSI: $(cat "$WORKDIR/compare.out")"
compare "$WORKDIR/image.raw" "$URI/vm1" || fail "image vs vm1 over NBD: $(cat "$WORKDIR/compare.out")"
status=0
compare "$WORKDIR/image.raw" "$S1" || status=$?
[ $status -eq 1 ] || fail "the empty snapshot must differ from the image (compare exit $status)"
expect_ok "snapshot reads as zeros over iSCSI" qemu-io -r -f raw -c "read -P 0 0 $SIZE" "$S1"

# A write on one protocol, read on the other; the file follows so compare sees the whole volume.
expect_ok "write 0xab at 1 MiB over NBD" qemu-io -f raw -c "write -P 0xab 1M 192k" "$URI/vm1"
expect_ok "read 0xab at 1 MiB over iSCSI" qemu-io -r -f raw -c "read -P 0xab 1M 192k" "$VM1"
expect_ok "write 0xcd at 5 MiB over iSCSI" qemu-io -f raw -c "write -P 0xcd 5M 320k" "$VM1"
expect_ok "read 0xcd at 5 MiB over NBD" qemu-io -r -f raw -c "read -P 0xcd 5M 320k" "$URI/vm1"
"$PYTHON" - "$WORKDIR/image.raw" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(1 << 20); f.write(b"\xab" * (192 << 10))
    f.seek(5 << 20); f.write(b"\xcd" * (320 << 10))
PY
compare "$WORKDIR/image.raw" "$VM1" || fail "after the writes, image vs vm1 over iSCSI: $(cat "$WORKDIR/compare.out")"
compare "$WORKDIR/image.raw" "$URI/vm1" || fail "after the writes, image vs vm1 over NBD: $(cat "$WORKDIR/compare.out")"
expect_ok "qemu-img convert out of $VM1" qemu-img convert -f raw -O raw "$VM1" "$WORKDIR/out.raw"
cmp "$WORKDIR/image.raw" "$WORKDIR/out.raw" || fail "vm1 converted out over iSCSI differs from the image"
echo "ok: NBD and iSCSI return the same bytes"

stop_daemon
strata check >/dev/null || fail "strata check"
echo "PASS $TEST_NAME"
