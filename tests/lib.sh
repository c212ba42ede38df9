# Shared helpers for Strata's end-to-end tests (sourced by tests/*/test-*.sh).
#
# Every test gets its own pool directory under a temporary directory, starts its own daemon on
# a free loopback port, and stops exactly what it started, by PID, on exit (nbdkit's habit).
#
#   STRATA   path of the strata binary (default: .build/debug/strata)
#   CI=true  a missing client is a failure, never a skip

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STRATA=${STRATA:-$ROOT/.build/debug/strata}
TEST_NAME=$(basename "$0" .sh)
WORKDIR=$(mktemp -d "/tmp/strata-${TEST_NAME}.XXXXXX")
export STRATA_POOL="$WORKDIR/pool"
STRATA_PIDS=()

cleanup() {
    local status=$?
    for pid in "${STRATA_PIDS[@]:-}"; do
        [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    done
    for pid in "${STRATA_PIDS[@]:-}"; do
        [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
    done
    if [ $status -ne 0 ] && [ -f "$WORKDIR/daemon.log" ]; then
        echo "--- daemon log (last 40 lines) ---" >&2
        tail -40 "$WORKDIR/daemon.log" >&2 || true
    fi
    [ -n "${KEEP_WORKDIR:-}" ] && echo "kept $WORKDIR" >&2 || rm -rf "$WORKDIR"
    exit $status
}
trap cleanup EXIT
# run-e2e.sh's timeout stops a test with SIGTERM: say what it was doing (the command, the
# functions it was in and their call lines) and fail, so cleanup prints the daemon log too.
on_sigterm() {
    echo "FAIL $TEST_NAME: stopped by SIGTERM (timed out) in: $BASH_COMMAND; functions: ${FUNCNAME[*]:1}; lines: ${BASH_LINENO[*]}" >&2
    exit 143
}
trap on_sigterm TERM

fail() {
    echo "FAIL $TEST_NAME: $*" >&2
    exit 1
}

# requires CMD...: the test needs these programs. Missing ones fail under CI=true, else skip (exit 77).
requires() {
    local missing=()
    for cmd in "$@"; do command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "${CI:-}" = "true" ]; then fail "missing ${missing[*]} (the test command installs them)"; fi
    echo "SKIP $TEST_NAME: missing ${missing[*]}" >&2
    exit 77
}

# free_port: prints a free TCP port on 127.0.0.1.
free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_daemon [ARGS...]: starts `strata serve` with NBD, iSCSI and HTTP on free ports; sets
# PORT, ISCSI_PORT, ISCSI_PORTAL (127.0.0.1:ISCSI_PORT), HTTP_PORT, DAEMON_PID and URI
# (nbd://127.0.0.1:PORT). ARGS come last, so a test's own --http wins.
start_daemon() {
    PORT=$(free_port)
    ISCSI_PORT=$(free_port)
    ISCSI_PORTAL="127.0.0.1:$ISCSI_PORT"
    HTTP_PORT=$(free_port)
    "$STRATA" serve --nbd "127.0.0.1:$PORT" --iscsi "$ISCSI_PORTAL" --http "127.0.0.1:$HTTP_PORT" \
        --create-size "${POOL_SIZE:-8G}" "$@" >>"$WORKDIR/daemon.log" 2>&1 &
    DAEMON_PID=$!
    STRATA_PIDS+=("$DAEMON_PID")
    URI="nbd://127.0.0.1:$PORT"
    for _ in $(seq 1 400); do
        if [ -S "$STRATA_POOL/control.sock" ] && (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
        kill -0 "$DAEMON_PID" 2>/dev/null || fail "daemon exited at start: $(tail -5 "$WORKDIR/daemon.log")"
        sleep 0.05
    done
    (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || fail "daemon did not listen on $PORT"
}

# stop_daemon: SIGTERM and wait for a clean exit (status 0).
stop_daemon() {
    kill -TERM "$DAEMON_PID"
    local status=0
    wait "$DAEMON_PID" || status=$?
    [ $status -eq 0 ] || fail "daemon exited with $status on SIGTERM"
}

# kill_daemon: SIGKILL (a crash) and reap it.
kill_daemon() {
    kill -9 "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null || true
    # The dead daemon's socket file stays behind; start_daemon must not take it for the new one's.
    rm -f "$STRATA_POOL/control.sock"
}

strata() { "$STRATA" "$@"; }

# writer_checkpoints WRITER COUNT FD COMMAND...: the checkpoints of a recorded-pattern writer
# (tests/nbd/nbdload.py snapwriter, its output in $WORKDIR/writer.out): for each K below COUNT it
# waits for the writer's `begin K` on the FIFO open on FD, runs COMMAND with every {k} replaced
# by K (a snapshot, a mirror detach), then lets the writer go on (touches $SIG/done-K).
writer_checkpoints() {
    local writer=$1 count=$2 fd=$3 k line
    shift 3
    for k in $(seq 0 $((count - 1))); do
        line=""
        while [ "$line" != "begin $k" ]; do
            kill -0 "$writer" 2>/dev/null || fail "writer exited before checkpoint $k: $(cat "$WORKDIR/writer.out")"
            read -r -t 1 -u "$fd" line || true
        done
        "${@//\{k\}/$k}" >/dev/null || fail "checkpoint $k: ${*//\{k\}/$k}"
        touch "$SIG/done-$k"
    done
}

# forget PID: a process the test reaped; cleanup must not signal its (reusable) PID again.
forget() {
    local keep=() pid
    for pid in "${STRATA_PIDS[@]}"; do [ "$pid" = "$1" ] || keep+=("$pid"); done
    STRATA_PIDS=("${keep[@]}")
}

# wait_started FILE PID: waits up to 10 s for a load (PID) to create FILE, its sign that it is
# under way; fails (status 1) when PID exits first or the time runs out.
wait_started() {
    for _ in $(seq 1 500); do
        [ -f "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.02
    done
    [ -f "$1" ]
}

# source_volume MIB: a second pool, $SOURCE, holding vm1 (64 MiB) with MIB MiB of random data
# from $WORKDIR/a.raw; `src CMD...` runs strata against it. The sending side of stream tests.
SOURCE="$WORKDIR/source"
src() { STRATA_POOL="$SOURCE" "$STRATA" "$@"; }
source_volume() {
    src pool init --size 1G >/dev/null
    src volume create vm1 --size 64M >/dev/null
    head -c "$1M" /dev/urandom >"$WORKDIR/a.raw"
    src import "$WORKDIR/a.raw" vm1 >/dev/null
}
