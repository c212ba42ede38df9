#!/usr/bin/env bash
# Builds Strata and runs every test tier, installing what it needs. This is the README's
# test command and what CI runs. Exits non-zero on any failure.
#
#   STRATA_LONG=N  multiplies the seeded model and crash runs (long mode)
#   STRATA_SEED=S  replays one seed of the model and crash runs
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

source scripts/toolchain.sh

# Debian packages the tiers use; installed when missing (root, or sudo).
need=()
for pair in qemu-img:qemu-utils qemu-io:qemu-utils nbdinfo:libnbd-bin nbdcopy:libnbd-bin nbdkit:nbdkit fio:fio \
    iscsi-test-cu:libiscsi-bin iscsi-ls:libiscsi-bin iscsi-inq:libiscsi-bin; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
/usr/bin/python3 -c 'import nbd' >/dev/null 2>&1 || need+=(python3-libnbd)
# qemu-img's iscsi:// driver lives in qemu-block-extra (only a Recommends of qemu-utils).
dpkg -s qemu-block-extra >/dev/null 2>&1 || need+=(qemu-block-extra)
# fio's NBD engine comes with Debian's fio; make sure this fio has it.
if command -v fio >/dev/null 2>&1 && ! fio --enghelp 2>/dev/null | grep -q nbd; then need+=(fio); fi
# Ceph's rbd (for `rbd merge-diff` in the replication tests) comes with ceph-common.
command -v rbd >/dev/null 2>&1 || need+=(ceph-common)
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u | sed '/^$/d')
if [ ${#need[@]} -gt 0 ]; then
    echo "test: installing ${need[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "== build (debug, with tests)"
swift build --build-tests

echo "== unit, model, crash, concurrency, corruption and CLI tests"
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
set +e
swift test --skip-build 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
    echo "test: swift test failed (exit $status)" >&2
    exit "$status"
fi
tests=$(sed -n 's/.*Test run with \([0-9]*\) tests\{0,1\} in .* passed.*/\1/p' "$LOG" | tail -1)
if [ -z "$tests" ] || [ "$tests" -eq 0 ]; then
    echo "test: swift test ran no test" >&2
    exit 1
fi

echo "== end to end with real clients (qemu-img, qemu-io, nbdinfo, nbdcopy, fio, libnbd, libiscsi)"
set +e
CI=${CI:-} tests/run-e2e.sh 2>&1 | tee "$LOG.e2e"
e2e_status=${PIPESTATUS[0]}
set -e
e2e_passed=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed.*/\1/p' "$LOG.e2e" | tail -1)
e2e_failed=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed.*/\2/p' "$LOG.e2e" | tail -1)
rm -f "$LOG.e2e"
if [ "$e2e_status" -ne 0 ] || [ -z "$e2e_passed" ]; then
    echo "test: end-to-end tests failed" >&2
    echo "$((tests + ${e2e_passed:-0})) passed, ${e2e_failed:-1} failed"
    exit 1
fi

echo "== end to end: the README quick start, then strata check"
WORK=$(mktemp -d)
trap 'rm -f "$LOG"; rm -rf "$WORK"' EXIT
STRATA="$ROOT/.build/debug/strata"
export STRATA_POOL="$WORK/pool"
"$STRATA" pool init --size 2G
"$STRATA" volume create vm1 --size 64M
head -c $((8 << 20)) /dev/urandom > "$WORK/image.raw"
truncate -s 48M "$WORK/image.raw"
"$STRATA" import "$WORK/image.raw" vm1
"$STRATA" snapshot create vm1@imported
"$STRATA" clone vm1@imported vm2
"$STRATA" export vm2 "$WORK/out.raw"
cmp -n $((48 << 20)) "$WORK/image.raw" "$WORK/out.raw"
"$STRATA" diff vm1@imported vm1 >/dev/null
"$STRATA" pool status
"$STRATA" check
e2e=1

echo "$((tests + e2e_passed + e2e)) passed, 0 failed"
