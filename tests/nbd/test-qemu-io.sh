#!/usr/bin/env bash
# qemu-io scripts on a 64 MiB volume: pattern writes and reads (`write -P`, `read -P`, aligned
# and unaligned), discard (whole chunks and partial), `write -z` (allocated zeros) and
# `write -z -u` (may unmap), flush, and the last block. Then a snapshot, an overwrite of the
# volume, and the snapshot still reads the old patterns. A write to VOLUME@SNAP fails, both
# read-write open and `-r`; a read past the end fails (and straddling the end). The same two
# requests sent to the server itself (libnbd with client-side checks off) are refused with EPERM
# and EINVAL and the connection goes on. Afterwards the daemon still serves: the patterns read
# back from the volume and the snapshot, and `strata check` is clean.
source "$(dirname "$0")/../lib.sh"
requires qemu-io /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || requires "python3-libnbd(import nbd)"

start_daemon
strata volume create vm1 --size 64M >/dev/null

# qio NAME EXPORT COMMAND... : runs one qemu-io script (one -c per command) on $URI/EXPORT; it
# must succeed with no failed command.
qio() {
    local name=$1 uri=$URI/$2
    shift 2
    local args=()
    case "$uri" in *@*) args+=(-r) ;; esac   # a snapshot export is read-only
    for c in "$@"; do args+=(-c "$c"); done
    local status=0
    qemu-io -f raw "${args[@]}" "$uri" >"$WORKDIR/$name.out" 2>&1 || status=$?
    if [ $status -ne 0 ] || grep -Eqi 'fail|error|mismatch' "$WORKDIR/$name.out"; then
        cat "$WORKDIR/$name.out" >&2
        fail "qemu-io script $name: exit $status"
    fi
    echo "qemu-io $name: $(grep -Ec '^(wrote|read|discard)' "$WORKDIR/$name.out") commands ok"
}

# qio_fails NAME EXPECTED URI [QEMU-IO OPTION] COMMAND: qemu-io must fail, saying EXPECTED.
qio_fails() {
    local name=$1 expected=$2 uri=$3
    shift 3
    local status=0
    qemu-io -f raw "$@" "$uri" >"$WORKDIR/$name.out" 2>&1 || status=$?
    [ $status -ne 0 ] || { cat "$WORKDIR/$name.out" >&2; fail "qemu-io $name: succeeded, must fail"; }
    grep -Eqi "$expected" "$WORKDIR/$name.out" \
        || { cat "$WORKDIR/$name.out" >&2; fail "qemu-io $name: failed without '$expected'"; }
    echo "qemu-io $name: fails as it must: $(grep -Ei -m1 "$expected" "$WORKDIR/$name.out")"
}

M=$((1 << 20))
END=$((64 * M))
# Layout after the first script (offsets in bytes):
#   [0, 2M) 0xa1 except [1M, 1M+64k) 0xb2 and [5000, 8000) 0xc3
#   [2M, 3M) discarded (zero), [3M, 3M+512k) write -z (zero), [3M+512k, 4M) 0xa1
#   [8M, 9M) write -z -u (zero), [9M, 10M) 0xd4
#   [12M+100, 12M+100+70000) discarded inside 0xe5 at [12M, 13M)
#   [64M-4k, 64M) 0xf6
qio write vm1 \
    "write -P 0xa1 0 4M" \
    "write -P 0xb2 1M 64k" \
    "write -P 0xc3 5000 3000" \
    "discard 2M 1M" \
    "write -z 3M 512k" \
    "write -P 0xd4 8M 2M" \
    "write -z -u 8M 1M" \
    "write -P 0xe5 12M 1M" \
    "discard $((12 * M + 100)) 70000" \
    "write -P 0xf6 $((END - 4096)) 4k" \
    "flush"

VERIFY_OLD=(
    "read -P 0xa1 0 5000"
    "read -P 0xc3 5000 3000"
    "read -P 0xa1 8000 $((M - 8000))"
    "read -P 0xb2 1M 64k"
    "read -P 0xa1 $((M + 65536)) $((M - 65536))"
    "read -P 0 2M 1M"
    "read -P 0 3M 512k"
    "read -P 0xa1 $((3 * M + 524288)) 512k"
    "read -P 0 4M 4M"
    "read -P 0 8M 1M"
    "read -P 0xd4 9M 1M"
    "read -P 0xe5 12M 100"
    "read -P 0 $((12 * M + 100)) 70000"
    "read -P 0xe5 $((12 * M + 70100)) $((M - 70100))"
    "read -P 0xf6 $((END - 4096)) 4k"
)
qio read vm1 "${VERIFY_OLD[@]}"

strata snapshot create vm1@s1 >/dev/null
# Overwrite parts of the volume, partly unaligned, partly by discard.
qio overwrite vm1 \
    "write -P 0x17 0 3M" \
    "write -P 0x28 $((9 * M + 12345)) 100000" \
    "discard 12M 1M" \
    "write -P 0x39 $((END - 4096)) 4k"
qio read-new vm1 \
    "read -P 0x17 0 3M" \
    "read -P 0xd4 9M 12345" \
    "read -P 0x28 $((9 * M + 12345)) 100000" \
    "read -P 0 12M 1M" \
    "read -P 0x39 $((END - 4096)) 4k"
qio read-snapshot "vm1@s1" "${VERIFY_OLD[@]}"

# Writes to the snapshot fail: qemu refuses a read-write open of the read-only export, and with
# -r the write itself.
qio_fails write-snapshot 'read-only|permission' "$URI/vm1@s1" -c "write -P 0x99 0 4k"
qio_fails write-snapshot-r 'read-only|permission' "$URI/vm1@s1" -r -c "write -P 0x99 0 4k"
qio_fails discard-snapshot-r 'read-only|permission' "$URI/vm1@s1" -r -c "discard 0 1M"
# Reads past the end fail.
qio_fails read-past-end 'failed|out of range|error' "$URI/vm1" -c "read $END 4k"
qio_fails read-straddling-end 'failed|out of range|error' "$URI/vm1" -c "read $((END - 4096)) 8k"
qio_fails write-past-end 'failed|out of range|error' "$URI/vm1" -c "write -P 0x55 $END 4k"

# The same requests reach the server when the client does not check them first.
/usr/bin/python3 - "$URI" <<'PY' || fail "server-side refusals"
import errno, sys, nbd
uri = sys.argv[1]
h = nbd.NBD()
h.set_strict_mode(0)
h.connect_uri(uri + "/vm1@s1")
assert h.is_read_only(), "vm1@s1 is not read-only"
def refused(what, want, call):
    try:
        call()
    except nbd.Error as e:
        got = e.errno if isinstance(e.errno, str) else errno.errorcode.get(e.errno, str(e.errno))
        if got != errno.errorcode[want]:
            sys.exit(f"{what}: refused with {got} ({e.string}), want {errno.errorcode[want]}")
        print(f"server: {what}: refused with {got}")
        return
    sys.exit(f"{what}: the server accepted it")
refused("write to vm1@s1", errno.EPERM, lambda: h.pwrite(b"\x99" * 4096, 0))
refused("trim on vm1@s1", errno.EPERM, lambda: h.trim(1 << 20, 0))
refused("zero on vm1@s1", errno.EPERM, lambda: h.zero(1 << 20, 0))
size = h.get_size()
refused("read past the end of vm1@s1", errno.EINVAL, lambda: h.pread(4096, size))
refused("read straddling the end of vm1@s1", errno.EINVAL, lambda: h.pread(8192, size - 4096))
# The connection survives, and the snapshot is unchanged.
assert h.pread(4096, 0) == b"\xa1" * 4096, "vm1@s1 changed"
h.shutdown()
h = nbd.NBD()
h.set_strict_mode(0)
h.connect_uri(uri + "/vm1")
size = h.get_size()
refused("write past the end of vm1", errno.EINVAL, lambda: h.pwrite(b"\x55" * 4096, size))
refused("write straddling the end of vm1", errno.EINVAL, lambda: h.pwrite(b"\x55" * 8192, size - 4096))
assert h.pread(4096, size - 4096) == b"\x39" * 4096, "the last block of vm1 changed"
h.shutdown()
PY

# The daemon keeps serving.
kill -0 "$DAEMON_PID" 2>/dev/null || fail "the daemon died"
qio read-again vm1 "read -P 0x17 0 3M" "read -P 0x39 $((END - 4096)) 4k"
qio read-snapshot-again "vm1@s1" "${VERIFY_OLD[@]}"

strata check >"$WORKDIR/check.out" 2>&1 || fail "strata check: $(cat "$WORKDIR/check.out")"
stop_daemon
strata check >/dev/null || fail "strata check after shutdown"
echo "PASS $TEST_NAME"
