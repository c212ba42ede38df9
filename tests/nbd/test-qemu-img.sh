#!/usr/bin/env bash
# qemu-img: a 256 MiB raw image of random data runs and holes (512-byte granular) is converted
# into volume vm1 over NBD and back out to a file; the file is byte-identical and
# `qemu-img compare` reports the image and the volume identical. vm1@orig is taken, then vm1 is
# overwritten by converting a second image (out-of-order writes, -W); the volume then compares
# equal to the second image and different from the first, while vm1@orig still compares equal
# to the original and converts back out to identical bytes. `strata check` must be clean.
source "$(dirname "$0")/../lib.sh"
requires qemu-img /usr/bin/python3
LOAD="/usr/bin/python3 $(dirname "$0")/nbdload.py"

SIZE=$((256 << 20))
$LOAD mkimage "$WORKDIR/image.raw" $SIZE 1
$LOAD mkimage "$WORKDIR/other.raw" $SIZE 2
data=$(du -k "$WORKDIR/image.raw" | cut -f1)
echo "image: 256 MiB, $((data / 1024)) MiB of it data"

start_daemon
strata volume create vm1 --size 256M >/dev/null

# compare A B: prints qemu-img compare's verdict; returns its status (0 identical, 1 differ).
compare() {
    local status=0
    qemu-img compare -f raw -F raw "$1" "$2" >"$WORKDIR/compare.out" 2>&1 || status=$?
    echo "compare $(basename "$1") $(basename "$2"): $(head -1 "$WORKDIR/compare.out")"
    return $status
}

qemu-img convert -n -f raw -O raw "$WORKDIR/image.raw" "$URI/vm1" || fail "convert the image into vm1"
qemu-img convert -f raw -O raw "$URI/vm1" "$WORKDIR/out.raw" || fail "convert vm1 out"
cmp "$WORKDIR/image.raw" "$WORKDIR/out.raw" || fail "vm1 converted out differs from the image"
compare "$WORKDIR/image.raw" "$URI/vm1" || fail "qemu-img compare image vm1: $(cat "$WORKDIR/compare.out")"

strata snapshot create vm1@orig >/dev/null
qemu-img convert -n -W -f raw -O raw "$WORKDIR/other.raw" "$URI/vm1" || fail "convert the second image into vm1"
compare "$WORKDIR/other.raw" "$URI/vm1" || fail "vm1 after the overwrite: $(cat "$WORKDIR/compare.out")"
status=0
compare "$WORKDIR/image.raw" "$URI/vm1" || status=$?
[ $status -eq 1 ] || fail "the overwritten vm1 should differ from the original (compare exit $status): $(cat "$WORKDIR/compare.out")"
compare "$WORKDIR/image.raw" "$URI/vm1@orig" || fail "vm1@orig after vm1 was overwritten: $(cat "$WORKDIR/compare.out")"
rm -f "$WORKDIR/out.raw"
qemu-img convert -f raw -O raw "$URI/vm1@orig" "$WORKDIR/out.raw" || fail "convert vm1@orig out"
cmp "$WORKDIR/image.raw" "$WORKDIR/out.raw" || fail "vm1@orig converted out differs from the image"

strata check >"$WORKDIR/check.out" 2>&1 || fail "strata check: $(cat "$WORKDIR/check.out")"
stop_daemon
strata check >/dev/null || fail "strata check after shutdown"
echo "PASS $TEST_NAME"
