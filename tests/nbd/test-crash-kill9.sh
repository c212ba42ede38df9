#!/usr/bin/env bash
# Crash safety: 20 rounds of `kill -9` during a write load that flushes. In each round a libnbd
# writer writes random self-describing 4 KiB blocks (16 in flight, every 7th with FUA) and
# flushes after every 16 writes while writes stay in flight, recording after every successful
# flush (or FUA write) the newest durable version of each block. After a short random run the
# daemon is killed; on restart every block holds its durable version or a newer one that was
# issued, and `strata check` through the daemon is clean. Every fifth round first takes a
# snapshot, so the next writes go copy-on-write. At the end the daemon is stopped and
# `strata check` on the closed pool is clean too.
source "$(dirname "$0")/../lib.sh"
requires /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || requires "python3-libnbd(import nbd)"
LOAD="/usr/bin/python3 $(dirname "$0")/nbdload.py"

ROUNDS=${CRASH_ROUNDS:-20}
NBLOCKS=2048
BS=4096
STATE="$WORKDIR/state.json"

start_daemon
strata volume create vm1 --size $((NBLOCKS * BS)) >/dev/null

check_round() {
    local round=$1
    $LOAD verify "$URI/vm1" $NBLOCKS $BS "$STATE" >"$WORKDIR/verify.out" 2>&1 \
        || fail "round $round: flushed data lost after kill -9: $(cat "$WORKDIR/verify.out")"
    strata check >"$WORKDIR/check.out" 2>&1 || fail "round $round: strata check after kill -9: $(cat "$WORKDIR/check.out")"
}

for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 5)) -eq 0 ]; then
        strata snapshot create "vm1@r$round" >/dev/null || fail "round $round: snapshot create"
    fi
    rm -f "$WORKDIR/started"
    $LOAD flushwriter "$URI/vm1" $NBLOCKS $BS "$STATE" "$round" --started "$WORKDIR/started" --seconds 30 \
        >"$WORKDIR/writer.out" 2>&1 &
    WRITER=$!
    STRATA_PIDS+=("$WRITER")
    wait_started "$WORKDIR/started" "$WRITER" || fail "round $round: the writer never flushed: $(cat "$WORKDIR/writer.out")"
    sleep "0.$((RANDOM % 5 + 2))"   # 0.2 .. 0.6 s of load
    kill -0 "$WRITER" 2>/dev/null || fail "round $round: the writer stopped before the kill: $(cat "$WORKDIR/writer.out")"
    kill_daemon
    forget "$DAEMON_PID"
    status=0
    wait "$WRITER" || status=$?
    forget "$WRITER"
    [ $status -eq 0 ] || fail "round $round: writer: $(cat "$WORKDIR/writer.out")"
    echo "round $round: $(cat "$WORKDIR/writer.out")"
    start_daemon
    check_round "$round"
    echo "round $round: $(cat "$WORKDIR/verify.out"); $(tail -1 "$WORKDIR/check.out")"
done

stop_daemon
strata check >"$WORKDIR/check.out" 2>&1 || fail "strata check on the stopped pool: $(cat "$WORKDIR/check.out")"
echo "$(tail -1 "$WORKDIR/check.out")"
echo "PASS $TEST_NAME"
