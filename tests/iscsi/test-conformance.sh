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
# Write protection: ReadOnly.ReadOnlySBC runs only against a write-protected unit, so a second,
# short invocation runs the ReadOnly suite against the read-only snapshot target
# iqn.2026-11.org.strata:cu:ro first; its verdicts stand in for the main run's skips
# (cu_report.py --replace), and the report says so.
#
# tests/iscsi/cu_report.py reads the suite's output as it runs and prints pass/fail/skip counts
# per suite and in total, every failed test with its first failure message, and the slowest
# tests. A test libiscsi marks [SKIPPED] (CUnit still says "passed") counts as a skip, not a pass.
# The test fails if any test listed in tests/iscsi/must-pass.txt did not pass, if the suite did
# not reach its Run Summary (a crash, a hang cut off by CU_TIMEOUT, a lost connection), if the
# daemon died, or if `strata check` is not clean afterwards.
#
#   CU_TESTS=ALL.Read10   run a subset (-t); must-pass then applies to the listed tests under it
#   CU_TIMEOUT=200        seconds for the whole suite (tests/run-e2e.sh gives a test 240 s)
#   CU_RESULTS=FILE       also copy the per-test results (name<TAB>pass|fail|skip<TAB>seconds)
#
# Time: about 40 s against the debug build of 2026-11-21 13:14 UTC (20-25 s against a release
# build, 16-21 s against tgtd); the slowest tests wait out 3-second timeouts on purpose
# (iSCSIcmdsn.*, Reserve6.ITNexusLoss/LUNReset/Target*Reset, Sanitize.Reset).
#
# The size: the suite needs no large LUN (against tgtd, 16 MiB, 64 MiB and 1 GiB LUNs gave the
# same verdicts), and WRITE SAME with zero blocks and SANITIZE OVERWRITE write the whole LUN, so
# smaller is faster.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/iscsi-lib.sh"
requires iscsi-test-cu stdbuf timeout "$PYTHON"

TESTS=${CU_TESTS:-ALL}
SECOND_PORT=$(free_port)
start_daemon --iscsi "127.0.0.1:$SECOND_PORT"
wait_iscsi
strata volume create cu --size 64M >/dev/null
strata snapshot create cu@ro >/dev/null
SECOND_URL="iscsi://127.0.0.1:$SECOND_PORT/$IQN:cu/0"

MUST_PASS="$WORKDIR/must-pass.txt"
sed 's/#.*//; s/[[:space:]]//g; /^$/d' "$ISCSI_DIR/must-pass.txt" | while read -r name; do
    case "$name." in "$TESTS".*) echo "$name" ;; esac
done >"$MUST_PASS"
echo "must-pass: $(wc -l <"$MUST_PASS") tests from tests/iscsi/must-pass.txt under $TESTS"

set +e
# The write-protect suite against the snapshot target (read-only: MODE SENSE reports WP).
: >"$WORKDIR/readonly-results.tsv"
case "ALL.ReadOnly." in "$TESTS".*)
    timeout -k 5 60 stdbuf -oL -eL iscsi-test-cu --dataloss --test=ALL.ReadOnly \
        --initiator-name="$IQN:conformance-1" --initiator-name-2="$IQN:conformance-2" "$(iscsi_url cu:ro)" 2>&1 |
        "$PYTHON" "$ISCSI_DIR/cu_report.py" --log "$WORKDIR/cu-readonly.log" \
            --results "$WORKDIR/readonly-results.tsv" --label "iscsi-test-cu vs a Strata snapshot"
    ;;
esac
timeout -k 5 "${CU_TIMEOUT:-200}" stdbuf -oL -eL iscsi-test-cu --dataloss --allow-sanitize --test="$TESTS" \
    --initiator-name="$IQN:conformance-1" --initiator-name-2="$IQN:conformance-2" "$(iscsi_url cu)" "$SECOND_URL" 2>&1 |
    "$PYTHON" "$ISCSI_DIR/cu_report.py" --log "$WORKDIR/cu.log" --results "$WORKDIR/cu-results.tsv" \
        --replace "$WORKDIR/readonly-results.tsv" --must-pass "$MUST_PASS" --label "iscsi-test-cu vs Strata" |
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
