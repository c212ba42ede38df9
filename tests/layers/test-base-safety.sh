#!/usr/bin/env bash
# Safety of the base: a base modified, truncated or removed after its volume was created makes
# every read through it fail with an error naming the file and the fix (never data from the
# changed file), shows the volume as unavailable in `volume list` and `pool status`, and makes
# `strata check` report it; other volumes are unaffected. A daemon started with a base missing
# serves every other volume. Rebasing onto a pristine copy brings the volume back; deleting a
# based volume never touches its base file.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/layers-lib.sh"
requires qemu-img qemu-io /usr/bin/python3

cd "$WORKDIR"
make_base_raw a.raw 32M
make_base_raw b.raw 32M
qemu-img convert -q -O qcow2 b.raw b.qcow2
cp a.raw a-pristine.raw
start_daemon
strata volume create va --base a.raw >/dev/null
strata volume create vb --base b.qcow2 >/dev/null
strata volume create plain --size 16M >/dev/null
qemu-io -f raw -c "write -P 0x42 0 1M" "$URI/plain" >/dev/null

# expect_unavailable VOLUME FILE: reads through the base fail naming FILE; list, status, check say so.
expect_unavailable() {
    local volume=$1 file=$2 out
    sleep 1.2   # the daemon re-checks a base's files at most once a second
    if out=$(qemu-io -f raw -c "read 1M 64k" "$URI/$volume" 2>&1); then fail "$volume read through a changed base: $out"; fi
    strata volume list >list.out 2>list.err
    grep -q "$file (unavailable)" list.out || fail "volume list does not show $volume unavailable: $(cat list.out)"
    grep -q "$file" list.err || fail "volume list does not explain $volume: $(cat list.err)"
    grep -q "rebase $volume --base" list.err || fail "the error does not name the fix: $(cat list.err)"
    strata pool status | grep -q "^unavailable: $volume: " || fail "pool status does not show $volume: $(strata pool status)"
    if strata check >check.out 2>&1; then fail "strata check is clean with $file changed: $(cat check.out)"; fi
    grep -q "$file" check.out || fail "strata check does not name $file: $(cat check.out)"
    # The pool's own chunks and the other volumes still serve.
    qemu-io -f raw -c "read -P 0x42 0 1M" "$URI/plain" >/dev/null || fail "plain stopped serving"
}

# Modified in place (one byte, same size).
printf '\x00' | dd of=a.raw bs=1 seek=$((1 << 20)) conv=notrunc status=none
expect_unavailable va "$WORKDIR/a.raw"
qemu-img compare -q -f raw -F raw b.raw "$URI/vb" || fail "vb was affected by a's change"
# Truncated.
truncate -s 8M b.qcow2
expect_unavailable vb "$WORKDIR/b.qcow2"

# Removed, then the daemon restarted: it serves the rest and reports va unavailable.
rm a.raw
stop_daemon
start_daemon
qemu-io -f raw -c "read -P 0x42 0 1M" "$URI/plain" >/dev/null || fail "plain after a restart with a base missing"
expect_unavailable va "$WORKDIR/a.raw"
grep -q "is missing" list.err || fail "volume list does not say the base is missing: $(cat list.err)"

# Rebase onto the pristine copy (same content, checked by fingerprint): va reads again.
strata volume rebase va --base a-pristine.raw >/dev/null || fail "rebase onto an identical copy"
qemu-img compare -q -f raw -F raw a-pristine.raw "$URI/va" || fail "va after the rebase"
# A rebase onto a different file is refused, naming the first differing offset.
cp a-pristine.raw other.raw
printf '\x77' | dd of=other.raw bs=1 seek=$((20 << 20)) conv=notrunc status=none
if out=$(strata volume rebase va --base other.raw 2>&1); then fail "rebase onto a different file was accepted"; fi
echo "$out" | grep -q "byte offset $((20 << 20))" || fail "the refused rebase does not name the offset: $out"

# Deleting a based volume leaves the base file alone.
before=$(fingerprint a-pristine.raw)
strata volume delete va >/dev/null
[ "$(fingerprint a-pristine.raw)" = "$before" ] || fail "deleting va touched its base"
strata volume delete vb >/dev/null
strata check >check.out 2>&1 || fail "strata check after deleting the based volumes: $(cat check.out)"
stop_daemon
echo "REPORT modified, truncated and removed bases refused with the fix named; rebase and delete verified"
