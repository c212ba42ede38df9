#!/usr/bin/env bash
# nbdcopy with --connections=4 --threads=4 (multi-conn; nbdcopy caps connections at threads): a 64 MiB raw image of random data and holes is
# copied into volume vm1 and back out to a file; the bytes are identical. The daemon advertises
# multi-conn and the log shows at least four connections for each copy. A volume whose old
# contents are overwritten (vm2, filled with 0xff first) also ends identical, holes included.
source "$(dirname "$0")/../lib.sh"
requires nbdcopy nbdinfo qemu-io /usr/bin/python3
LOAD="/usr/bin/python3 $(dirname "$0")/nbdload.py"

SIZE=$((64 << 20))
$LOAD mkimage "$WORKDIR/image.raw" $SIZE 3

start_daemon
strata volume create vm1 --size 64M >/dev/null
strata volume create vm2 --size 64M >/dev/null
nbdinfo --can multi-conn "$URI/vm1" || fail "vm1 does not advertise multi-conn"

attached() { grep -c "NBD client attached to $1\$" "$WORKDIR/daemon.log" || true; }

# copy NAME SRC DST EXPORT: nbdcopy with four connections; EXPORT must get at least four.
copy() {
    local name=$1 src=$2 dst=$3 export=$4 before after
    before=$(attached "$export")
    nbdcopy --connections=4 --threads=4 --flush "$src" "$dst" >"$WORKDIR/$name.out" 2>&1 \
        || fail "nbdcopy $name: $(cat "$WORKDIR/$name.out")"
    after=$(attached "$export")
    [ $((after - before)) -ge 4 ] || fail "nbdcopy $name used $((after - before)) connection(s) to $export, want 4"
    echo "nbdcopy $name: $((after - before)) connections"
}

copy in "$WORKDIR/image.raw" "$URI/vm1" vm1
copy out "$URI/vm1" "$WORKDIR/out.raw" vm1
cmp "$WORKDIR/image.raw" "$WORKDIR/out.raw" || fail "vm1 copied out differs from the image"

qemu-io -f raw -c "write -P 0xff 0 64M" "$URI/vm2" >/dev/null || fail "fill vm2"
copy in-over "$WORKDIR/image.raw" "$URI/vm2" vm2
rm -f "$WORKDIR/out.raw"
copy out-over "$URI/vm2" "$WORKDIR/out.raw" vm2
cmp "$WORKDIR/image.raw" "$WORKDIR/out.raw" || fail "vm2 copied out differs from the image"

strata check >"$WORKDIR/check.out" 2>&1 || fail "strata check: $(cat "$WORKDIR/check.out")"
stop_daemon
echo "PASS $TEST_NAME"
