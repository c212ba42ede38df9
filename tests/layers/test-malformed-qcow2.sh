#!/usr/bin/env bash
# Malformed and unsupported qcow2 bases, through the running daemon: each is refused with an
# error naming the file and the problem (at `volume create --base`, or at the read that meets
# the damage), the daemon stays up and keeps serving, and nothing is left half created.
source "$(dirname "$0")/../lib.sh"
requires qemu-img qemu-io /usr/bin/python3

cd "$WORKDIR"
qemu-img create -q -f raw seed.raw 8M
qemu-io -f raw -c "write -P 0x61 0 4M" seed.raw >/dev/null
qemu-img convert -q -O qcow2 seed.raw good.qcow2
qemu-img convert -q -c -O qcow2 seed.raw compressed.qcow2

# patch FILE OFFSET HEXBYTES: overwrites bytes in place.
patch() { /usr/bin/python3 -c '
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2], 0)); f.write(bytes.fromhex(sys.argv[3]))' "$@"; }
# header_u64 FILE OFFSET: a big-endian header field.
header_u64() { /usr/bin/python3 -c '
import sys, struct
with open(sys.argv[1], "rb") as f:
    f.seek(int(sys.argv[2])); print(struct.unpack(">Q", f.read(8))[0])' "$@"; }

cp good.qcow2 version4.qcow2; patch version4.qcow2 4 00000004
cp good.qcow2 l1-past-end.qcow2; patch l1-past-end.qcow2 40 0000000000ff0000   # l1_table_offset
cp good.qcow2 unknown-feature.qcow2; patch unknown-feature.qcow2 72 0000000000000020   # incompatible bit 5
cp good.qcow2 encrypted.qcow2; patch encrypted.qcow2 32 00000001   # crypt_method AES
qemu-img create -q -f qcow2 -o data_file=external.data external.qcow2 8M
qemu-img create -q -f qcow2 -o extended_l2=on extended.qcow2 8M
qemu-img create -q -f qcow2 loop-a.qcow2 8M
qemu-img create -q -f qcow2 -b loop-a.qcow2 -F qcow2 loop-b.qcow2
qemu-img rebase -q -u -f qcow2 -b loop-b.qcow2 -F qcow2 loop-a.qcow2
# An L2 entry pointing past the end of the file: the first L2 table's first entry.
cp good.qcow2 l2-outside.qcow2
l1=$(header_u64 l2-outside.qcow2 40)
l2=$(( $(/usr/bin/python3 -c "
import struct
with open('l2-outside.qcow2','rb') as f:
    f.seek($l1); print(struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00)") ))
patch l2-outside.qcow2 "$l2" 80000000ff000000
# A compressed cluster whose bytes do not inflate: scribble over the first compressed cluster.
cp compressed.qcow2 bad-deflate.qcow2
cl1=$(header_u64 bad-deflate.qcow2 40)
/usr/bin/python3 - bad-deflate.qcow2 "$cl1" <<'PY'
import struct, sys
path, l1 = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(20); cluster_bits = struct.unpack(">I", f.read(4))[0]
    f.seek(l1); l2 = struct.unpack(">Q", f.read(8))[0] & 0x00fffffffffffe00
    f.seek(l2); entry = struct.unpack(">Q", f.read(8))[0]
    assert entry & (1 << 62), "the first cluster is not compressed"
    offset = entry & ((1 << (62 - (cluster_bits - 8))) - 1)
    f.seek(offset); f.write(b"\xff" * 64)
PY

start_daemon
strata volume create plain --size 8M >/dev/null
qemu-io -f raw -c "write -P 0x42 0 1M" "$URI/plain" >/dev/null

# refused FILE WORDS...: create fails, naming the file and each word; no volume appears.
refused() {
    local file=$1 out
    shift
    if out=$(strata volume create bad --base "$file" 2>&1); then fail "$file was accepted as a base"; fi
    echo "$out" | grep -q "$WORKDIR/$file" || fail "the error for $file does not name the file: $out"
    for word in "$@"; do echo "$out" | grep -qi -- "$word" || fail "the error for $file does not say '$word': $out"; done
    strata volume list | grep -q "^bad " && fail "a volume was created over $file"
    kill -0 "$DAEMON_PID" || fail "the daemon died on $file"
    echo "refused $file: $out"
}
refused version4.qcow2 "version"
refused l1-past-end.qcow2 "L1"
refused unknown-feature.qcow2 "feature"
refused encrypted.qcow2 "encrypt"
refused external.qcow2 "external data file"
refused extended.qcow2 "extended L2"
refused loop-a.qcow2 "loop"

# Damage met at read time: the read fails with an I/O error and the daemon logs the message
# naming the file (NBD clients show only the errno).
for file in l2-outside.qcow2 bad-deflate.qcow2; do
    name=${file%.qcow2}
    strata volume create "$name" --base "$file" >/dev/null || fail "create over $file (its damage is in the data)"
    if out=$(qemu-io -f raw -c "read 0 64k" "$URI/$name" 2>&1); then fail "a read through $file succeeded: $out"; fi
    grep "warning" "$WORKDIR/daemon.log" | grep -q "$WORKDIR/$file" || fail "the daemon log does not name $file"
    echo "read through $file: $(grep "$WORKDIR/$file" "$WORKDIR/daemon.log" | tail -1)"
    kill -0 "$DAEMON_PID" || fail "the daemon died reading $file"
done
qemu-io -f raw -c "read -P 0x42 0 1M" "$URI/plain" >/dev/null || fail "plain stopped serving"
stop_daemon
echo "REPORT 9 malformed or unsupported qcow2 bases refused with clear errors; the daemon stayed up"
