#!/usr/bin/env bash
# Raw-socket iSCSI robustness per RFC 7143: tests/iscsi/iscsi_raw.py builds every PDU by hand
# (Python standard library only, CRC32C digests included) against a 64 MiB volume vm1, plus a
# volume chapvol with CHAP user alice and a volume mutualvol with mutual CHAP for the CHAP
# cases. It checks a normal login and I/O first (and that no target PDU exceeds the
# MaxRecvDataSegmentLength it declared), then malformed input: bad header and data digests,
# unknown and target opcodes, truncated PDUs, DataSegmentLength over MaxRecvDataSegmentLength
# and huge, out-of-window CmdSN, a large and a lying TotalAHSLength, wrong CHAP responses
# (status 0x0201), a reflected mutual-CHAP challenge, garbage and oversized login text, an
# unknown target name (0x0203), a SCSI command before login, and 1000 idle connections (fewer
# under a low open-files limit; bounded VmRSS). After every case a fresh session must log in and
# read back the pattern written at the start, and the daemon must be alive; see iscsi_raw.py's
# docstring for what each case accepts. The daemon must then stop cleanly on SIGTERM (exit 0)
# and `strata check` must be clean.
#
#   MALFORMED_FILTER=WORD   run only the cases whose name contains WORD
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/iscsi-lib.sh"
requires "$PYTHON"

start_daemon
wait_iscsi
strata volume create vm1 --size 64M >/dev/null
strata volume create chapvol --size 16M >/dev/null
strata iscsi chap set chapvol --user alice --secret alicesecret12 >/dev/null || fail "chap set chapvol"
strata volume create mutualvol --size 16M >/dev/null
strata iscsi chap set mutualvol --user carol --secret carolsecret12 --mutual-user strata --mutual-secret targetsecret12 \
    >/dev/null || fail "chap set mutualvol"

status=0
"$PYTHON" "$ISCSI_DIR/iscsi_raw.py" malformed --portal "$ISCSI_PORTAL" --target "$IQN:vm1" --pid "$DAEMON_PID" \
    --chap-target "$IQN:chapvol" --chap-user alice --chap-secret alicesecret12 \
    --mutual-target "$IQN:mutualvol" --mutual-initiator carol:carolsecret12 --mutual-target-credentials strata:targetsecret12 \
    ${MALFORMED_FILTER:+--filter "$MALFORMED_FILTER"} || status=$?
kill -0 "$DAEMON_PID" 2>/dev/null || fail "the daemon died during the test"
stop_daemon
strata check >/dev/null || fail "strata check after shutdown"
echo "daemon stopped cleanly (exit 0) and strata check is clean"
[ "$status" -eq 0 ] || fail "iscsi_raw.py reported failures (exit $status; see above)"
echo "PASS $TEST_NAME"
