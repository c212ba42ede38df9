#!/usr/bin/env bash
# Graceful shutdown: SIGTERM while a libnbd client has 32 writes (64 KiB, self-describing) in
# flight and flushes after every 16 of them (tests/nbd/nbdload.py flushwriter), with a second,
# idle connection open. The daemon must exit 0 within 30 s. After a restart every write that was
# acknowledged and then flushed is there, and so is every write that was acknowledged at all
# (the daemon commits at shutdown: nothing acknowledged is lost). Three rounds on one pool, then
# `strata check` on the stopped pool is clean. The verify lines also count blocks holding a write
# the client saw fail (the daemon executed it, but its reply never arrived); an unacknowledged
# write may land, so that is shown, not failed.
source "$(dirname "$0")/../lib.sh"
requires /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || requires "python3-libnbd(import nbd)"
LOAD="/usr/bin/python3 $(dirname "$0")/nbdload.py"

NBLOCKS=256
BS=65536
STATE="$WORKDIR/state.json"

start_daemon
strata volume create vm1 --size $((NBLOCKS * BS)) >/dev/null

for round in 1 2 3; do
    rm -f "$WORKDIR/started"
    $LOAD flushwriter "$URI/vm1" $NBLOCKS $BS "$STATE" "$round" --depth 32 --idle --started "$WORKDIR/started" \
        --seconds 30 >"$WORKDIR/writer.out" 2>&1 &
    WRITER=$!
    STRATA_PIDS+=("$WRITER")
    wait_started "$WORKDIR/started" "$WRITER" || fail "round $round: the writer never flushed: $(cat "$WORKDIR/writer.out")"
    sleep "0.$((RANDOM % 4 + 2))"
    kill -0 "$WRITER" 2>/dev/null || fail "round $round: the writer stopped before SIGTERM: $(cat "$WORKDIR/writer.out")"

    kill -TERM "$DAEMON_PID"
    for _ in $(seq 1 300); do
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill_daemon
        fail "round $round: the daemon did not exit within 30 s of SIGTERM"
    fi
    status=0
    wait "$DAEMON_PID" || status=$?
    forget "$DAEMON_PID"
    [ $status -eq 0 ] || fail "round $round: the daemon exited with $status on SIGTERM"
    grep -q "stopped; pool" "$WORKDIR/daemon.log" || fail "round $round: no clean stop in the daemon log"

    status=0
    wait "$WRITER" || status=$?
    forget "$WRITER"
    [ $status -eq 0 ] || fail "round $round: writer: $(cat "$WORKDIR/writer.out")"
    echo "round $round: $(cat "$WORKDIR/writer.out")"
    grep -q "connection lost" "$WORKDIR/writer.out" || fail "round $round: the writer's connection outlived the daemon"

    strata check >"$WORKDIR/check.out" 2>&1 || fail "round $round: strata check on the stopped pool: $(cat "$WORKDIR/check.out")"
    start_daemon
    $LOAD verify "$URI/vm1" $NBLOCKS $BS "$STATE" --floor flushed >"$WORKDIR/verify.out" 2>&1 \
        || fail "round $round: flushed data lost across SIGTERM: $(cat "$WORKDIR/verify.out")"
    echo "round $round: $(cat "$WORKDIR/verify.out")"
    $LOAD verify "$URI/vm1" $NBLOCKS $BS "$STATE" --floor acked >"$WORKDIR/verify.out" 2>&1 \
        || fail "round $round: acknowledged data lost across SIGTERM: $(cat "$WORKDIR/verify.out")"
    echo "round $round: $(cat "$WORKDIR/verify.out")"
done

stop_daemon
strata check >"$WORKDIR/check.out" 2>&1 || fail "strata check on the stopped pool: $(cat "$WORKDIR/check.out")"
echo "PASS $TEST_NAME"
