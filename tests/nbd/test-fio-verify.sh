#!/usr/bin/env bash
# fio through its NBD engine (uri option): four jobs (numjobs=4), each on its own 16 MiB range of
# a 64 MiB volume (offset_increment), random writes of 4 KiB to 64 KiB at queue depth 16 with
# verify=crc32c, every block read back and checked after the write phase. Then a snapshot, and a
# second run (verify=md5, another seed) overwrites the volume copy-on-write and verifies; then
# the first run's data is verified (verify_only) on the read-only snapshot export. fio must exit
# 0 and report no verify failure in each run. As a control, the same verify_only run against
# the overwritten volume must fail, so the snapshot's pass means something. `strata check` must
# be clean.
source "$(dirname "$0")/../lib.sh"
requires fio
fio --enghelp 2>/dev/null | grep -w nbd >/dev/null || requires fio-with-nbd-engine

start_daemon
strata volume create vm1 --size 64M >/dev/null

# write_job NAME URI SEED VERIFY [EXTRA...]: the job file $WORKDIR/NAME.fio.
write_job() {
    local name=$1 uri=$2 seed=$3 verify=$4
    shift 4
    cat >"$WORKDIR/$name.fio" <<JOB
[global]
ioengine=nbd
uri=$uri
rw=randwrite
bsrange=4k-64k
size=16m
offset_increment=16m
numjobs=4
iodepth=16
randseed=$seed
verify=$verify
verify_fatal=1
verify_state_save=0
do_verify=1
group_reporting=0
$(printf '%s\n' "$@")

[$name]
JOB
}

# run_fio NAME URI SEED VERIFY [EXTRA...]: runs the job; fails the test on any error.
run_fio() {
    local name=$1
    write_job "$@"
    local status=0
    (cd "$WORKDIR" && fio --output="$name.out" "$name.fio") >"$WORKDIR/$name.stderr" 2>&1 || status=$?
    if [ $status -ne 0 ] || grep -Eqi 'verify.*(fail|mismatch)|bad (magic|header)|crc32c:|md5:' \
        "$WORKDIR/$name.out" "$WORKDIR/$name.stderr"; then
        cat "$WORKDIR/$name.out" "$WORKDIR/$name.stderr" >&2
        fail "fio $name: exit $status or a verify failure"
    fi
    local ok
    ok=$(grep -c "err= 0" "$WORKDIR/$name.out" || true)
    [ "$ok" -eq 4 ] || { cat "$WORKDIR/$name.out" >&2; fail "fio $name: $ok of 4 jobs report err=0"; }
    grep -E '^ +(READ|WRITE):' "$WORKDIR/$name.out" | sed "s/^ */fio $name: /"
}

run_fio first "$URI/vm1" 1 crc32c
strata snapshot create vm1@after-first >/dev/null
run_fio second "$URI/vm1" 2 md5
# The snapshot still holds the first run's data: the same jobs, verified only (no writes).
run_fio snapshot "$URI/vm1@after-first" 1 crc32c verify_only=1
# Control: the overwritten volume no longer does.
write_job control "$URI/vm1" 1 crc32c verify_only=1
if (cd "$WORKDIR" && fio --output=control.out control.fio) >"$WORKDIR/control.stderr" 2>&1; then
    fail "control: the first run's data verified on the overwritten volume; the snapshot check proves nothing"
fi
grep -Eq 'verify failed|bad magic|mismatch' "$WORKDIR/control.out" "$WORKDIR/control.stderr" \
    || fail "control: fio failed without a verify error: $(head -20 "$WORKDIR/control.out" "$WORKDIR/control.stderr")"
echo "control: $(grep -Eh -m1 'verify failed|bad magic|mismatch' "$WORKDIR/control.out" "$WORKDIR/control.stderr" | head -1)"

strata check >"$WORKDIR/check.out" 2>&1 || fail "strata check: $(cat "$WORKDIR/check.out")"
stop_daemon
strata check >/dev/null || fail "strata check after shutdown"
echo "PASS $TEST_NAME"
