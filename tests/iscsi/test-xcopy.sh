#!/usr/bin/env bash
# EXTENDED COPY (LID1) of 1 GiB between two volumes of one daemon, sent as raw PDUs by
# tests/iscsi/iscsi_raw.py (`xcopy`: login to both targets, identification target descriptors
# E4h with the NAA designators of VPD page 83h, block-to-block segments 02h of 16 MiB).
#
# Why raw PDUs and not a real copy client: Debian's sg3-utils (sg_xcopy) and ddpt send EXTENDED
# COPY through a kernel SCSI generic device (/dev/sgN, SG_IO); neither speaks iSCSI itself, and
# this machine has no kernel iSCSI initiator or sg device to give them. libiscsi's own tools
# have no copy command. So the initiator side is iscsi_raw.py, and every byte it sends is built
# there; what is checked is Strata.
#
#  - aligned: src (1 GiB of random data, written with qemu-img over NBD) is copied whole to dst
#    at LBA 0: qemu-img compare finds dst identical to the image, and the pool's data used
#    (`strata pool status --json`, dataUsedBytes) grows by less than 1/16 of the copied size:
#    chunk-aligned ranges are shared copy-on-write, no data moves. A write to dst afterwards
#    leaves src as it was (the shared chunks were copied on write).
#  - unaligned: 64 MiB from src LBA 1 to dst2 LBA 3 (neither on a chunk boundary): the data is
#    copied (used grows by at least the copied size), dst2 holds exactly those bytes at byte
#    1536 and zeros around them.
# `strata check` must be clean at the end.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/iscsi-lib.sh"
requires qemu-img cmp "$PYTHON"

GIB=$((1 << 30))
BLOCKS=$((GIB / 512))
UNALIGNED_BLOCKS=$(((64 << 20) / 512))
start_daemon
wait_iscsi
for volume in src dst dst2; do strata volume create "$volume" --size 1G >/dev/null; done

used() {
    strata pool status --json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["dataUsedBytes"])'
}

head -c "$GIB" /dev/urandom >"$WORKDIR/image.raw"
expect_ok "qemu-img convert of 1 GiB of random data into src over NBD" \
    qemu-img convert -n -f raw -O raw "$WORKDIR/image.raw" "$URI/src"

# --- aligned: shared, not copied ------------------------------------------------------------
before=$(used)
expect_ok "EXTENDED COPY of 1 GiB, src LBA 0 -> dst LBA 0" \
    "$PYTHON" "$ISCSI_DIR/iscsi_raw.py" xcopy --portal "$ISCSI_PORTAL" --target "$IQN:src" --dest "$IQN:dst" \
    --blocks "$BLOCKS"
cat "$WORKDIR/out"
after=$(used)
grown=$((after - before))
echo "data used: $before -> $after bytes (+$grown) for a $GIB-byte aligned copy"
[ "$grown" -lt $((GIB / 16)) ] || fail "aligned EXTENDED COPY grew the pool's data by $grown bytes (copied $GIB): not shared"
expect_ok "qemu-img compare: dst equals the image" qemu-img compare -f raw -F raw "$WORKDIR/image.raw" "$URI/dst"
expect_ok "qemu-img compare: src still equals the image" qemu-img compare -f raw -F raw "$WORKDIR/image.raw" "$URI/src"

# A write to dst copies the shared chunk: src does not change.
expect_ok "qemu-io write to dst" qemu-io -f raw -c "write -P 0x5a 0 64k" "$URI/dst"
expect_ok "src unchanged after a write to dst" qemu-img compare -f raw -F raw "$WORKDIR/image.raw" "$URI/src"

# --- unaligned: copied ----------------------------------------------------------------------
before=$(used)
expect_ok "EXTENDED COPY of 64 MiB, src LBA 1 -> dst2 LBA 3" \
    "$PYTHON" "$ISCSI_DIR/iscsi_raw.py" xcopy --portal "$ISCSI_PORTAL" --target "$IQN:src" --dest "$IQN:dst2" \
    --blocks "$UNALIGNED_BLOCKS" --source-lba 1 --dest-lba 3
cat "$WORKDIR/out"
after=$(used)
grown=$((after - before))
echo "data used: $before -> $after bytes (+$grown) for a $((UNALIGNED_BLOCKS * 512))-byte unaligned copy"
[ "$grown" -ge $((UNALIGNED_BLOCKS * 512)) ] || fail "unaligned EXTENDED COPY grew the pool's data by only $grown bytes"
expect_ok "qemu-img convert dst2 out over NBD" qemu-img convert -f raw -O raw "$URI/dst2" "$WORKDIR/dst2.raw"
length=$((UNALIGNED_BLOCKS * 512))
cmp -n "$length" -i 512:1536 "$WORKDIR/image.raw" "$WORKDIR/dst2.raw" ||
    fail "dst2 at byte 1536 differs from src at byte 512"
echo "ok: dst2 holds src's $length bytes from byte 512 at byte 1536"
cmp -n 1536 /dev/zero "$WORKDIR/dst2.raw" || fail "dst2 before byte 1536 is not zeros"
cmp -n $((GIB - 1536 - length)) -i 0:$((1536 + length)) /dev/zero "$WORKDIR/dst2.raw" ||
    fail "dst2 after the copied range is not zeros"
echo "ok: dst2 is zeros around the copied range"

stop_daemon
strata check >/dev/null || fail "strata check after EXTENDED COPY"
echo "PASS $TEST_NAME"
