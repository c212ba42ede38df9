#!/usr/bin/env bash
# Crash safety over iSCSI and NBD together (issue 13, item 4): rounds of `kill -9` while one
# volume takes NBD writes (FLUSH, FUA, trims) on its even 4 KiB blocks, iSCSI WRITE(10) (FUA,
# SYNCHRONIZE CACHE(10)) on its odd ones, so every chunk is written through both protocols, and
# snapshots are created and deleted through the control socket meanwhile (kill9.py load). After
# each kill the daemon restarts and kill9.py verify checks, with no repair, every block against
# its whole history: the newest version a FLUSH, SYNCHRONIZE CACHE, FUA or snapshot made
# durable this round, else the version verified after the previous restart, or a version issued
# after it before the kill; every acknowledged snapshot is there, each holding its content;
# `strata check` through the daemon is clean. The cut time is read after `kill -9` returns, so
# a command that finished before the kill is never outside the cut. The daemon's commit timer
# alternates between 50 ms (timer commits racing the writes) and 30 s (unflushed writes lost).
# At the end the daemon is stopped and `strata check` on the closed pool is clean.
#
# Snapshots go to the control socket, not through the CLI: after a kill the CLI finds no
# daemon and opens the pool itself, and a snapshot it takes then holds the durable state, not
# the writes the dead daemon had acknowledged (the false "lost write" of an earlier harness).
source "$(dirname "$0")/../lib.sh"
requires /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || requires "python3-libnbd(import nbd)"
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../iscsi/iscsi-lib.sh"
PY=/usr/bin/python3
ROUNDS=${CRASH_ROUNDS:-12}
SEED=${STRATA_SEED:-$RANDOM}
echo "seed=$SEED (the same loads and kill delays: STRATA_SEED=$SEED E2E_FILTER=iscsi-kill9 tests/run-e2e.sh)"
RANDOM=$SEED
STATE="$WORKDIR/state.json"
HISTORY="$WORKDIR/history.json"

# serve ROUND: starts the daemon, its commit timer at 50 ms in odd rounds and 30 s in even ones.
serve() {
    local interval=30
    [ $(($1 % 2)) -eq 1 ] && interval=0.05
    start_daemon --commit-interval "$interval"
    wait_iscsi
}

serve 1
strata volume create sv --size 4M >/dev/null
echo '{"seq": 0, "blocks": {}, "snapshots": {}}' >"$STATE"

for round in $(seq 1 "$ROUNDS"); do
    rm -f "$WORKDIR/started"
    $PY "$HERE/kill9.py" load "$STATE" "$HISTORY" --nbd "127.0.0.1:$PORT" --portal "$ISCSI_PORTAL" \
        --target "$IQN:sv" --control "$STRATA_POOL/control.sock" --volume sv --round "$round" --seed "$SEED" \
        --started "$WORKDIR/started" >"$WORKDIR/load.out" 2>&1 &
    LOAD=$!
    STRATA_PIDS+=("$LOAD")
    wait_started "$WORKDIR/started" "$LOAD" || fail "round $round: the load never started: $(cat "$WORKDIR/load.out")"
    sleep "0.$((RANDOM % 7 + 2))"   # 0.2 .. 0.8 s of load
    kill -0 "$LOAD" 2>/dev/null || fail "round $round: the load stopped before the kill: $(cat "$WORKDIR/load.out")"
    kill_daemon
    forget "$DAEMON_PID"
    # The cut: read after the kill returned, so nothing acknowledged before the kill is after it.
    CUT=$($PY -c 'import time; print(repr(time.monotonic()))')
    status=0
    wait "$LOAD" || status=$?
    forget "$LOAD"
    [ $status -eq 0 ] || fail "round $round: load: $(cat "$WORKDIR/load.out")"
    serve $((round + 1))
    SNAPSHOTS=$(strata snapshot list --json | $PY -c 'import json,sys; print(json.dumps([s["name"] for s in json.load(sys.stdin) if s["volume"] == "sv"]))')
    $PY "$HERE/kill9.py" verify "$STATE" "$HISTORY" --nbd "127.0.0.1:$PORT" --volume sv --cut "$CUT" \
        --snapshots "$SNAPSHOTS" >"$WORKDIR/verify.out" 2>&1 \
        || fail "round $round (seed=$SEED): $(cat "$WORKDIR/verify.out"); $(cat "$WORKDIR/load.out")"
    strata check >"$WORKDIR/check.out" 2>&1 || fail "round $round: strata check after kill -9: $(cat "$WORKDIR/check.out")"
    echo "round $round: $(cat "$WORKDIR/load.out")"
    echo "REPORT round $round: $(cat "$WORKDIR/verify.out"); $(tail -1 "$WORKDIR/check.out")"
done

stop_daemon
strata check >"$WORKDIR/check.out" 2>&1 || fail "strata check on the stopped pool: $(cat "$WORKDIR/check.out")"
echo "$(tail -1 "$WORKDIR/check.out")"
echo "PASS $TEST_NAME"
