# Helpers for the mirror tests (sourced after tests/lib.sh).

# leg_pool NAME [SIZE]: an empty pool directory for a leg; prints its path.
leg_pool() {
    local dir="$WORKDIR/$1"
    strata pool init --pool "$dir" --size "${2:-4G}" >/dev/null || fail "pool init $dir"
    echo "$dir"
}

# mirror_field VOLUME LEG FIELD: one field of the leg's `mirror status --json`.
mirror_field() {
    strata mirror status "$1" --json | /usr/bin/python3 -c '
import json, sys
legs = [l for l in json.load(sys.stdin) if l["leg"] == sys.argv[1]]
value = legs[0].get(sys.argv[2]) if legs else None
print("" if value is None else value)' "$2" "$3"
}

# wait_state VOLUME LEG STATE [SECONDS]: waits until the leg is in STATE.
wait_state() {
    local state=""
    for _ in $(seq 1 $((${4:-120} * 10))); do
        state=$(mirror_field "$1" "$2" state)
        [ "$state" = "$3" ] && return 0
        sleep 0.1
    done
    fail "mirror $1 leg $2 is $state, not $3, after ${4:-120} s: $(strata mirror status "$1")"
}

# kill9_daemon: kill -9 of the daemon, reaped.
kill9_daemon() {
    kill -9 "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null || true
    forget "$DAEMON_PID"
}

# load_job URI: the fio job of the add-under-load steps (nbd engine, 4 jobs of random writes
# over 16 MiB each, verify=crc32c), on URI.
load_job() {
    cat <<JOB
[global]
ioengine=nbd
uri=$1
rw=randwrite
bsrange=4k-64k
size=16m
offset_increment=16m
numjobs=4
iodepth=16
randseed=12
verify=crc32c
verify_fatal=1
verify_state_save=0
do_verify=1
loops=3
[load]
JOB
}

# same VOLUME_URI COPY_URI: qemu-img compare must find them identical.
same() {
    qemu-img compare -f raw -F raw "$1" "$2" >"$WORKDIR/compare.out" 2>&1 || fail "$1 and $2 differ: $(cat "$WORKDIR/compare.out")"
}

# --- Detach under recorded-pattern writes (test-mirror-detach, test-mirror-remote-detach) --------
# detach_load_setup: LOAD (tests/nbd/nbdload.py), the writer's shape (NBLOCKS blocks of BS
# bytes, NSNAPS checkpoints) and its signal FIFO $SIG/signal, open on fd 3.
detach_load_setup() {
    /usr/bin/python3 -c 'import nbd' 2>/dev/null || requires "python3-libnbd(import nbd)"
    LOAD="/usr/bin/python3 $ROOT/tests/nbd/nbdload.py"
    NBLOCKS=512
    BS=16384
    NSNAPS=2
    SIG="$WORKDIR/signals"
    mkdir -p "$SIG"
    mkfifo "$SIG/signal"
    exec 3<>"$SIG/signal"
}

# detach_under_load URI [PREFIX...]: the recorded-pattern writer on URI (run under PREFIX, such
# as in_primary), leg s{k} of vm1 detached at its checkpoint K (even K quiesced, odd K live);
# fails when the writer does.
detach_under_load() {
    local uri=$1 status=0
    shift
    "$@" $LOAD snapwriter "$uri" $NBLOCKS $BS "$SIG" $NSNAPS >"$WORKDIR/writer.out" 2>&1 &
    local writer=$!
    STRATA_PIDS+=("$writer")
    writer_checkpoints "$writer" $NSNAPS 3 strata mirror detach vm1 "s{k}"
    wait "$writer" || status=$?
    forget "$writer"
    cat "$WORKDIR/writer.out"
    [ $status -eq 0 ] || fail "writer failed"
}

# --- Two hosts (the remote leg's tests) -------------------------------------------------------
# two_hosts: two network namespaces named after the test and its PID, joined by a veth pair with
# link-local addresses: the primary ($PRIMARY_NS, $PRIMARY_IP) and the leg daemon ($LEG_NS,
# $LEG_IP). What it made is deleted by name on exit, after the daemons are killed.
# Clients run inside a namespace: `in_primary CMD...`, `in_leg CMD...`.
two_hosts() {
    PRIMARY_NS="$TEST_NAME-$$-p"
    LEG_NS="$TEST_NAME-$$-l"
    VETH_PRIMARY="smp$$"
    VETH_LEG="sml$$"
    PRIMARY_IP=169.254.77.1
    LEG_IP=169.254.77.2
    PRIMARY_POOL="$WORKDIR/primary"
    LEG_POOL="$WORKDIR/leg"
    export STRATA_POOL="$PRIMARY_POOL"
    SECRET="$WORKDIR/secret"
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$SECRET"
    trap two_hosts_cleanup EXIT
    ip netns add "$PRIMARY_NS" || fail "ip netns add $PRIMARY_NS"
    ip netns add "$LEG_NS" || fail "ip netns add $LEG_NS"
    ip link add "$VETH_PRIMARY" type veth peer name "$VETH_LEG" || fail "ip link add $VETH_PRIMARY"
    ip link set "$VETH_PRIMARY" netns "$PRIMARY_NS"
    ip link set "$VETH_LEG" netns "$LEG_NS"
    ip -n "$PRIMARY_NS" addr add "$PRIMARY_IP/30" dev "$VETH_PRIMARY"
    ip -n "$LEG_NS" addr add "$LEG_IP/30" dev "$VETH_LEG"
    for ns in "$PRIMARY_NS" "$LEG_NS"; do ip -n "$ns" link set lo up; done
    ip -n "$PRIMARY_NS" link set "$VETH_PRIMARY" up
    ip -n "$LEG_NS" link set "$VETH_LEG" up
}

two_hosts_cleanup() {
    local status=$?
    for pid in "${STRATA_PIDS[@]:-}"; do [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${STRATA_PIDS[@]:-}"; do [ -n "$pid" ] && wait "$pid" 2>/dev/null || true; done
    ip netns delete "$PRIMARY_NS" 2>/dev/null || true
    ip netns delete "$LEG_NS" 2>/dev/null || true
    if [ $status -ne 0 ]; then
        for log in "$WORKDIR/primary.log" "$WORKDIR/leg.log"; do
            [ -f "$log" ] && { echo "--- $(basename "$log") (last 30 lines) ---" >&2; tail -30 "$log" >&2; }
        done
    fi
    (exit $status)
    cleanup
}

in_primary() { ip netns exec "$PRIMARY_NS" "$@"; }
in_leg() { ip netns exec "$LEG_NS" "$@"; }
on_leg() { STRATA_POOL="$LEG_POOL" "$STRATA" "$@"; }

# serve_in NS POOL NBD_HOST [ARGS...]: `strata serve` on POOL inside NS, NBD on NBD_HOST:10809
# (iSCSI and HTTP off); waits until it serves and sets SERVED_PID.
serve_in() {
    local ns=$1 pool=$2 host=$3
    shift 3
    rm -f "$pool/control.sock" "$pool/stream.sock"
    STRATA_POOL="$pool" ip netns exec "$ns" "$STRATA" serve --nbd "$host:10809" --iscsi off --http off \
        --create-size 4G "$@" >>"$pool.log" 2>&1 &
    SERVED_PID=$!
    STRATA_PIDS+=("$SERVED_PID")
    for _ in $(seq 1 400); do
        if [ -S "$pool/control.sock" ] && ip netns exec "$ns" bash -c "echo >/dev/tcp/$host/10809" 2>/dev/null; then
            return 0
        fi
        kill -0 "$SERVED_PID" 2>/dev/null || fail "daemon in $ns exited at start: $(tail -5 "$pool.log")"
        sleep 0.05
    done
    fail "daemon in $ns did not serve on $host:10809"
}

# start_primary / start_leg: (re)start the daemon of each host; PRIMARY_PID / LEG_PID.
start_primary() {
    serve_in "$PRIMARY_NS" "$PRIMARY_POOL" 127.0.0.1
    PRIMARY_PID=$SERVED_PID
    PRIMARY_URI=nbd://127.0.0.1:10809
}

start_leg() {
    serve_in "$LEG_NS" "$LEG_POOL" "$LEG_IP" --replication "$LEG_IP:10810" --replication-secret-file "$SECRET"
    LEG_PID=$SERVED_PID
    # The leg's copies, read from the primary's namespace.
    LEG_URI="nbd://$LEG_IP:10809"
    for _ in $(seq 1 200); do
        in_leg bash -c "echo >/dev/tcp/$LEG_IP/10810" 2>/dev/null && return 0
        sleep 0.05
    done
    fail "the leg daemon does not listen for replication on $LEG_IP:10810"
}

# kill9 PID POOL: a crash of one daemon, reaped; its stale sockets go with it.
kill9() {
    kill -9 "$1"
    wait "$1" 2>/dev/null || true
    forget "$1"
    rm -f "$2/control.sock" "$2/stream.sock"
}

# stop_host PID: SIGTERM and a clean exit.
stop_host() {
    kill -TERM "$1"
    local status=0
    wait "$1" || status=$?
    forget "$1"
    [ $status -eq 0 ] || fail "daemon $1 exited with $status on SIGTERM"
}

# same_remote VOLUME [COPY]: the primary's VOLUME and the leg daemon's COPY (default: VOLUME)
# compare equal, read over NBD from the primary's namespace.
same_remote() {
    in_primary qemu-img compare -f raw -F raw "$PRIMARY_URI/$1" "$LEG_URI/${2:-$1}" >"$WORKDIR/compare.out" 2>&1 ||
        fail "$1 and the leg's ${2:-$1} differ: $(cat "$WORKDIR/compare.out")"
}
