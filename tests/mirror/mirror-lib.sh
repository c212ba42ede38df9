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

# same VOLUME_URI COPY_URI: qemu-img compare must find them identical.
same() {
    qemu-img compare -f raw -F raw "$1" "$2" >"$WORKDIR/compare.out" 2>&1 || fail "$1 and $2 differ: $(cat "$WORKDIR/compare.out")"
}
