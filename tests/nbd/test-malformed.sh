#!/usr/bin/env bash
# Raw-socket NBD conformance and robustness: tests/nbd/malformed.py speaks the protocol by hand
# (Python standard library only, no libnbd) and checks exact bytes per proto.md, malformed
# input, pipelining and 1000 idle connections against a 16 MiB volume vm1 and its snapshot
# vm1@s1. Whatever it finds, the daemon must then stop cleanly on SIGTERM (exit 0) and
# `strata check` must be clean.
source "$(dirname "$0")/../lib.sh"
PYTHON=/usr/bin/python3
requires "$PYTHON"
start_daemon
strata volume create vm1 --size 16M >/dev/null
strata snapshot create vm1@s1 >/dev/null
status=0
"$PYTHON" "$(dirname "$0")/malformed.py" "$PORT" "$DAEMON_PID" ${MALFORMED_FILTER:-} || status=$?
kill -0 "$DAEMON_PID" 2>/dev/null || fail "daemon died during the test"
stop_daemon
strata check >/dev/null || fail "check after shutdown"
echo "daemon stopped cleanly (exit 0) and strata check is clean"
[ "$status" -eq 0 ] || fail "malformed.py reported failures (exit $status; see above)"
echo "PASS $TEST_NAME"
