#!/usr/bin/env bash
# SIGTERM while the daemon applies a stream: the daemon stops the receive at its next read
# (the stream's pipe has gone quiet), answers it with an error naming the shutdown, exits 0
# within 30 s, and keeps what it staged: after a restart the receive resumes from its token and
# the copy matches the source byte for byte.
source "$(dirname "$0")/../lib.sh"

source_volume 16
src snapshot create vm1@a >/dev/null
src send vm1@a >"$WORKDIR/full.str" 2>/dev/null

start_daemon
# Half the stream, then a pipe that stays open and quiet: the receive waits for more.
mkfifo "$WORKDIR/pipe"
(head -c 8000000 "$WORKDIR/full.str"; sleep 60) >"$WORKDIR/pipe" &
FEEDER=$!
STRATA_PIDS+=("$FEEDER")
strata receive copy -i "$WORKDIR/pipe" >"$WORKDIR/receive.out" 2>&1 &
RECEIVER=$!
STRATA_PIDS+=("$RECEIVER")
for _ in $(seq 1 100); do
    strata receive --token copy >/dev/null 2>&1 && break
    sleep 0.1
done

kill -TERM "$DAEMON_PID"
for _ in $(seq 1 300); do
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$DAEMON_PID" 2>/dev/null && fail "the daemon did not exit within 30 s of SIGTERM during a receive"
status=0
wait "$DAEMON_PID" || status=$?
[ $status -eq 0 ] || fail "the daemon exited with $status on SIGTERM during a receive"
status=0
wait "$RECEIVER" || status=$?
[ $status -eq 1 ] || fail "receive exited with $status, not 1: $(cat "$WORKDIR/receive.out")"
grep -q "the daemon is shutting down" "$WORKDIR/receive.out" || fail "receive error: $(cat "$WORKDIR/receive.out")"
kill "$FEEDER" 2>/dev/null || true

strata check >"$WORKDIR/check.out" 2>&1 || fail "strata check after the shutdown: $(cat "$WORKDIR/check.out")"
start_daemon
token=$(strata receive --token copy) || fail "no resume token after the shutdown"
src send vm1@a --resume "$token" 2>/dev/null | strata receive copy >/dev/null || fail "resumed receive"
strata export copy@a "$WORKDIR/copy.raw" >/dev/null
cmp -n $((16 << 20)) "$WORKDIR/a.raw" "$WORKDIR/copy.raw" || fail "the resumed copy differs from the source"
stop_daemon
echo "PASS $TEST_NAME"
