#!/usr/bin/env bash
# libiscsi's conformance suite, iscsi-test-cu, in full (family ALL: every SCSI and iSCSI suite
# once) against a Strata target: a 64 MiB volume `cu` at LUN 0 of iqn.2026-11.org.strata:cu.
# --dataloss lets the write tests run and --allow-sanitize the SANITIZE tests; two initiator
# names (-i, -I) are given for the tests that open a second session (reservations,
# multi-initiator).
#
# Multipath: the daemon listens on two portals (`--iscsi` twice) and the suite gets the LUN's
# URL through each of them. libiscsi 1.19 takes extra URLs as extra positional arguments, checks
# that they name the same logical unit (VPD 83h), logs in to the second with the second
# initiator name, and then runs MultipathIO.* and uses that session wherever a test needs a
# second one.
#
# Side runs. Three tests need a unit the main run's LUN is not, so short invocations run them
# first against one that is; their verdicts stand in for the main run's (cu_report.py
# --replace), and the report names each one replaced:
# - ReadOnly.*: ReadOnly.ReadOnlySBC runs only against a write-protected unit: the read-only
#   snapshot target iqn.2026-11.org.strata:cu:ro.
# - GetLBAStatus.UnmapSingle passes only with one logical block per physical block (its second
#   loop wants the first descriptor at i+LBPPB for a status asked at i+1), while five other
#   tests need at least two: a daemon started with `--iscsi-physical-block-size 512` (LBPPB 1)
#   runs it, before the main daemon (the default, 4096: LBPPB 8) starts on the same pool.
#   iscsi-readcapacity16 checks both daemons report what they were told.
# - Sanitize.Reset starts a SANITIZE OVERWRITE, waits 3 s, sends every task management reset,
#   drops its connection, waits 1 s, logs in again and expects the sanitize still running (then
#   polls TEST UNIT READY once a minute until it ends). The 64 MiB LUN's overwrite ends within
#   3 s, so it runs against a volume `sanitize` of CU_SANITIZE_GIB GiB (default 16), whose
#   overwrite lasts several times the 4.1 s the test needs (docs/PROTOCOLS.md, "Conformance",
#   has the measurement), served by a daemon of its own on a pool of its own with 1 MiB chunks
#   (deleting a volume frees chunk by chunk: 16384 of them, not the 262144 of 64 KiB ones).
#   Before the run, marks of 0x5a are written at its start, middle and end (over NBD); after
#   it, the marks read as the all-zero pattern and the volume holds every chunk (an OVERWRITE
#   allocates what it writes): the sanitize went on to the end after the session that sent it
#   was gone. Then the volume is deleted, `strata check` runs on that pool, and the pool goes.
#
# tests/iscsi/cu_report.py reads the suite's output as it runs and prints pass/fail/skip counts
# per suite and in total, every failed test with its first failure message, and the slowest
# tests. A test libiscsi marks [SKIPPED] (CUnit still says "passed") counts as a skip, not a pass.
# The test fails if any test listed in tests/iscsi/must-pass.txt did not pass, if the suite did
# not reach its Run Summary (a crash, a hang cut off by CU_TIMEOUT, a lost connection), if the
# daemon died, or if `strata check` is not clean afterwards.
#
#   CU_TESTS=ALL.Read10   run a subset (-t); must-pass then applies to the listed tests under it
#   CU_TIMEOUT=200        seconds for the main run (this test asks tests/run-e2e.sh for 420 s)
#   CU_RESULTS=FILE       also copy the per-test results (name<TAB>pass|fail|skip<TAB>seconds)
#   CU_SANITIZE_GIB=16    size of the Sanitize.Reset side run's volume
#
# e2e-timeout: 420
# Time: the main run about 40 s against the debug build of 2026-11-21 13:14 UTC (20-25 s against
# a release build, 16-21 s against tgtd); the slowest tests wait out 3-second timeouts on
# purpose (iSCSIcmdsn.*, Reserve6.ITNexusLoss/LUNReset/Target*Reset, Sanitize.Reset). The
# Sanitize.Reset side run takes a little over 64 s (its one-minute poll; 124 s when the overwrite
# outlasts the first poll, as on a machine whose disk other builds share), the other side runs a
# few seconds each: 2.2 to 2.5 minutes in all on 2026-12-07 with other engineers building, about 4
# with the second poll, hence its own limit above tests/run-e2e.sh's 240 s.
#
# The size: the suite needs no large LUN (against tgtd, 16 MiB, 64 MiB and 1 GiB LUNs gave the
# same verdicts), and WRITE SAME with zero blocks and SANITIZE OVERWRITE write the whole LUN, so
# smaller is faster. The pools are sparse; the `sanitize` volume takes CU_SANITIZE_GIB GiB of
# disk while its side run lasts.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/iscsi-lib.sh"
requires iscsi-test-cu iscsi-readcapacity16 qemu-io nbdsh stdbuf timeout "$PYTHON"  # nbdsh: its python3-nbd module, used directly

TESTS=${CU_TESTS:-ALL}
SANITIZE_GIB=${CU_SANITIZE_GIB:-16}
MiB=$((1 << 20))
MAIN_POOL=$STRATA_POOL
# Whether the run takes the test (or suite) $1, ALL.Suite[.Test].
selected() { case "$1." in "$TESTS".*) return 0 ;; esac; return 1; }

# side_run NAME TEST URL LABEL [SECONDS]: runs iscsi-test-cu on TEST alone; its verdicts are
# added to $WORKDIR/side-results.tsv, which stands in for the main run's.
: >"$WORKDIR/side-results.tsv"
side_run() {
    local name=$1 test=$2 url=$3 label=$4
    timeout -k 5 "${5:-60}" stdbuf -oL -eL iscsi-test-cu --dataloss --allow-sanitize --test="$test" \
        --initiator-name="$IQN:conformance-1" --initiator-name-2="$IQN:conformance-2" "$url" 2>&1 |
        "$PYTHON" "$ISCSI_DIR/cu_report.py" --log "$WORKDIR/cu-$name.log" --results "$WORKDIR/$name-results.tsv" \
            --label "$label" || true
    cat "$WORKDIR/$name-results.tsv" >>"$WORKDIR/side-results.tsv"
    kill -0 "$DAEMON_PID" 2>/dev/null || fail "the daemon died during the $test run"
}

# lbppb_exponent URL: the LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT iscsi-readcapacity16 reads.
lbppb_exponent() {
    iscsi-readcapacity16 "$1" | sed -n 's/.*LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT:\([0-9]*\).*/\1/p'
}

# volume_field VOLUME FIELD: a field of `strata volume list --json`.
volume_field() {
    strata volume list --json | "$PYTHON" -c '
import json, sys
print(next(v[sys.argv[2]] for v in json.load(sys.stdin) if v["name"] == sys.argv[1]))' "$1" "$2"
}

# GetLBAStatus.UnmapSingle at one logical block per physical block, on the main pool.
if selected ALL.GetLBAStatus.UnmapSingle; then
    start_daemon --iscsi-physical-block-size 512
    wait_iscsi
    strata volume create cu --size 64M >/dev/null
    CU_CREATED=1
    exponent=$(lbppb_exponent "$(iscsi_url cu)")
    [ "$exponent" = 0 ] || fail "--iscsi-physical-block-size 512: READ CAPACITY(16) reports exponent '$exponent', not 0"
    side_run lbppb1 ALL.GetLBAStatus.UnmapSingle "$(iscsi_url cu)" "iscsi-test-cu vs Strata, 512-byte physical blocks"
    stop_daemon
    forget "$DAEMON_PID"
fi

# Sanitize.Reset against a volume whose overwrite outlasts the test's resets and reconnection,
# in a pool of its own with 1 MiB chunks (deleting the volume frees 16384 chunks, not 262144).
if selected ALL.Sanitize.Reset; then
    export STRATA_POOL="$WORKDIR/sanitize-pool"
    strata pool init --size "$((SANITIZE_GIB + 1))G" --chunk-size 1M >/dev/null
    start_daemon
    wait_iscsi
    strata volume create sanitize --size "${SANITIZE_GIB}G" >/dev/null
    size=$(volume_field sanitize sizeBytes)
    marks="0 $((size / 2)) $((size - MiB))"
    for at in $marks; do
        qemu-io -f raw -c "write -P 0x5a $at $MiB" -c flush "nbd://127.0.0.1:$PORT/sanitize" >/dev/null
    done
    # marks_read BYTE: every mark reads as BYTE repeated (libnbd's Python module).
    marks_read() {
        "$PYTHON" -c '
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
length, byte = int(sys.argv[2]), int(sys.argv[3], 0)
sys.exit(0 if all(h.pread(length, int(at)) == bytes([byte]) * length for at in sys.argv[4:]) else 1)' \
            "nbd://127.0.0.1:$PORT/sanitize" "$MiB" "$1" $marks
    }
    marks_read 0x5a || fail "the marks written before the sanitize do not read back"
    side_run sanitize ALL.Sanitize.Reset "$(iscsi_url sanitize)" "iscsi-test-cu vs Strata, a $SANITIZE_GIB GiB volume" 200
    awk -F'\t' '$1 == "ALL.Sanitize.Reset" { print "REPORT side run: " $1 " " $2 " in " $3 " s" }' \
        "$WORKDIR/sanitize-results.tsv"
    marks_read 0 || fail "after Sanitize.Reset the marks do not read as the overwrite's zeros"
    allocated=$(volume_field sanitize allocatedBytes)
    [ "$allocated" = "$size" ] ||
        fail "after Sanitize.Reset the volume holds $allocated of $size bytes: the overwrite did not reach the end"
    echo "ok: the overwrite of $SANITIZE_GIB GiB ran to the end: the marks read zeros, $allocated bytes allocated"
    strata volume delete sanitize >/dev/null
    stop_daemon
    forget "$DAEMON_PID"
    strata check >/dev/null || fail "strata check of the sanitize pool"
    rm -rf "$STRATA_POOL"
    export STRATA_POOL="$MAIN_POOL"
fi

SECOND_PORT=$(free_port)
start_daemon --iscsi "127.0.0.1:$SECOND_PORT"
wait_iscsi
[ -n "${CU_CREATED:-}" ] || strata volume create cu --size 64M >/dev/null
strata snapshot create cu@ro >/dev/null
SECOND_URL="iscsi://127.0.0.1:$SECOND_PORT/$IQN:cu/0"
exponent=$(lbppb_exponent "$(iscsi_url cu)")
[ "$exponent" = 3 ] || fail "default physical block size: READ CAPACITY(16) reports exponent '$exponent', not 3 (4096 bytes)"

MUST_PASS="$WORKDIR/must-pass.txt"
sed 's/#.*//; s/[[:space:]]//g; /^$/d' "$ISCSI_DIR/must-pass.txt" | while read -r name; do
    case "$name." in "$TESTS".*) echo "$name" ;; esac
done >"$MUST_PASS"
echo "must-pass: $(wc -l <"$MUST_PASS") tests from tests/iscsi/must-pass.txt under $TESTS"

# The write-protect suite against the snapshot target (read-only: MODE SENSE reports WP).
if selected ALL.ReadOnly; then
    side_run readonly ALL.ReadOnly "$(iscsi_url cu:ro)" "iscsi-test-cu vs a Strata snapshot"
fi

set +e
timeout -k 5 "${CU_TIMEOUT:-200}" stdbuf -oL -eL iscsi-test-cu --dataloss --allow-sanitize --test="$TESTS" \
    --initiator-name="$IQN:conformance-1" --initiator-name-2="$IQN:conformance-2" "$(iscsi_url cu)" "$SECOND_URL" 2>&1 |
    "$PYTHON" "$ISCSI_DIR/cu_report.py" --log "$WORKDIR/cu.log" --results "$WORKDIR/cu-results.tsv" \
        --replace "$WORKDIR/side-results.tsv" --must-pass "$MUST_PASS" --label "iscsi-test-cu vs Strata" |
    tee "$WORKDIR/report.txt"
statuses=("${PIPESTATUS[@]}")
# The counts and any failed test, for tests/run-e2e.sh to show after PASS.
sed -n 's/^iscsi-test-cu vs Strata: \([0-9]* tests: .*\)/REPORT iscsi-test-cu: \1/p; s/^  FAIL \(.*\)/REPORT iscsi-test-cu failed: \1/p' "$WORKDIR/report.txt" | cut -c1-200
set -e
cu_status=${statuses[0]}
report_status=${statuses[1]}
echo "iscsi-test-cu exit status $cu_status (1 = some test failed; 124 = cut off by CU_TIMEOUT)"
[ -n "${CU_RESULTS:-}" ] && cp "$WORKDIR/cu-results.tsv" "$CU_RESULTS"

kill -0 "$DAEMON_PID" 2>/dev/null || fail "the daemon died during the conformance suite"
[ "$cu_status" -ne 124 ] || fail "iscsi-test-cu did not finish within ${CU_TIMEOUT:-200} s (see the unfinished test above)"
[ "$report_status" -eq 0 ] || fail "conformance: a must-pass test did not pass, or the run broke off (see above)"
stop_daemon
strata check >/dev/null || fail "strata check after the conformance suite"
echo "PASS $TEST_NAME"
