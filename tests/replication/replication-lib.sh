# Helpers for the replication tests: two daemons (a source and a replica), each with its own
# pool and ports, and polling with a deadline (never a timing assertion).
#   start_source / start_replica   start (or restart) a daemon; sets SOURCE_PID / REPLICA_PID
#   on_source CMD... / on_replica CMD...   run strata against that pool
#   wait_until SECONDS DESCRIPTION CMD...  polls CMD until it succeeds, else fails
SOURCE_POOL="$WORKDIR/source"
REPLICA_POOL="$WORKDIR/replica"
SECRET="$WORKDIR/secret"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$SECRET"
REPLICATION_PORT=$(free_port)

on_source() { STRATA_POOL="$SOURCE_POOL" "$STRATA" "$@"; }
on_replica() { STRATA_POOL="$REPLICA_POOL" "$STRATA" "$@"; }

start_source() {
    STRATA_POOL="$SOURCE_POOL" start_daemon
    SOURCE_PID=$DAEMON_PID
    SOURCE_URI=$URI
}

start_replica() {
    STRATA_POOL="$REPLICA_POOL" start_daemon --replication "127.0.0.1:$REPLICATION_PORT" --replication-secret-file "$SECRET"
    REPLICA_PID=$DAEMON_PID
    REPLICA_URI=$URI
    wait_until 20 "the replication port" bash -c "echo >/dev/tcp/127.0.0.1/$REPLICATION_PORT" 2>/dev/null
}

# kill9 PID POOL: a crash of one daemon; its stale sockets go with it.
kill9() {
    kill -9 "$1"
    wait "$1" 2>/dev/null || true
    rm -f "$2/control.sock" "$2/stream.sock"
}

wait_until() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || fail "gave up waiting for $what"
        sleep 0.1
    done
}

# job_field FIELD: the source's replication job's FIELD (JSON), "null" when absent.
job_field() {
    on_source replicate status --json | python3 -c "import json,sys; j=json.load(sys.stdin); print(json.dumps(j[0].get('$1')) if j else 'null')"
}

# newest_replicated: the newest snapshot name the replica holds.
newest_replicated() { on_replica snapshot list vm1 --json | python3 -c "import json,sys; print(json.load(sys.stdin)[-1]['name'])"; }

# same_snapshot NAME: vm1@NAME reads the same on both sides.
same_snapshot() {
    on_source export "vm1@$1" "$WORKDIR/source.raw" >/dev/null
    on_replica export "vm1@$1" "$WORKDIR/replica.raw" >/dev/null
    cmp "$WORKDIR/source.raw" "$WORKDIR/replica.raw" || fail "vm1@$1 differs between source and replica"
    rm -f "$WORKDIR/source.raw" "$WORKDIR/replica.raw"
}
