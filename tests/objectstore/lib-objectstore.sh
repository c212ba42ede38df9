# Helpers for the object-store tests (sourced after tests/lib.sh). The store is the real Swift
# that scripts/test.sh starts with scripts/objectstore.sh; its endpoints come in the
# STRATA_SWIFT_* and STRATA_S3_* variables (scripts/objectstore.sh env DIR prints them).

# requires_objectstore: the test needs the store; without it a skip, a failure under CI=true.
requires_objectstore() {
    requires curl /usr/bin/python3
    if [ -z "${STRATA_SWIFT_AUTH_URL:-}" ]; then
        [ "${CI:-}" = "true" ] && fail "no object store: run scripts/objectstore.sh start DIR and source its objectstore.env"
        echo "SKIP $TEST_NAME: no object store (STRATA_SWIFT_AUTH_URL unset; scripts/test.sh starts one)" >&2
        exit 77
    fi
    printf '%s\n' "$STRATA_SWIFT_KEY" >"$WORKDIR/swift.key"
    printf '%s\n' "$STRATA_S3_SECRET_KEY" >"$WORKDIR/s3.secret"
}

# store CMD ARGS...: the store's own view, through its native API (tests/objectstore/store.py).
store() { /usr/bin/python3 "$ROOT/tests/objectstore/store.py" "$@"; }

# unique_container PREFIX: a fresh DNS-compliant container/bucket name.
unique_container() { echo "$1-$$-$RANDOM"; }

# add_remote API NAME CONTAINER [ARGS...]: `strata remote add` for the swift or s3 API.
add_remote() {
    local api=$1 name=$2 container=$3
    shift 3
    if [ "$api" = swift ]; then
        strata remote add "$name" --swift "$STRATA_SWIFT_AUTH_URL" --user "$STRATA_SWIFT_USER" \
            --key-file "$WORKDIR/swift.key" --container "$container" "$@"
    else
        strata remote add "$name" --s3 "$STRATA_S3_ENDPOINT" --bucket "$container" --region "$STRATA_S3_REGION" \
            --access-key-id "$STRATA_S3_ACCESS_KEY" --secret-key-file "$WORKDIR/s3.secret" "$@"
    fi
}

# json FIELD: reads JSON on stdin and prints FIELD (a dotted path).
json() { /usr/bin/python3 -c 'import json,sys
v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v=v[int(k)] if isinstance(v,list) else v[k]
print(v)' "$1"; }

# object_gets CONTAINER [STATUS [KEY]]: GETs of the container's objects (or of objects/KEY) in
# the Swift proxy's access log: whole objects (status 200, the default) or ranged parts (206).
object_gets() {
    local key=${3:-objects/[0-9a-f]*}
    grep -c "GET /v1/AUTH_test/$1/$key HTTP/1.[01] ${2:-200} " "$STRATA_OBJECTSTORE_DIR/log/proxy.log" || true
}

# settle_gets CONTAINER: waits (at most 30 s) until the whole-object GETs stop changing for 2 s.
# A read of a never-fetched range is answered from a ranged GET; the daemon fetches and stores
# the whole object after the reply, so counts of whole GETs are read once that has happened.
settle_gets() {
    local last now stable=0
    last=$(object_gets "$1")
    for _ in $(seq 1 150); do
        sleep 0.2
        now=$(object_gets "$1")
        if [ "$now" = "$last" ]; then stable=$((stable + 1)); else stable=0; fi
        last=$now
        [ $stable -ge 10 ] && return 0
    done
    fail "whole-object GETs of $1 did not settle in 30 s"
}

# nbd_read VOLUME OFFSET LENGTH FILE: prints `same` when the range reads over NBD (the daemon's
# $PORT) as in FILE, `differ`, or `error: …` when the read fails.
nbd_read() {
    /usr/bin/python3 -c "
import nbd
h = nbd.NBD()
h.connect_uri('nbd://127.0.0.1:$PORT/$1')
with open('$4', 'rb') as f:
    f.seek($2)
    want = f.read($3)
try:
    print('same' if h.pread($3, $2) == want else 'differ')
except nbd.Error as e:
    print('error: %s' % e)"
}

# expect_read WHAT VOLUME OFFSET LENGTH FILE: nbd_read must print WHAT.
expect_read() {
    local got
    got=$(nbd_read "$2" "$3" "$4" "$5")
    [ "$got" = "$1" ] || fail "read $2 at $3+$4: expected $1, got $got"
}

# stop_store / start_store: stops the test's Swift (every server) and starts it again on the
# same ports; a test that stopped it restarts it on exit, whatever happens.
STORE_STOPPED=
start_store() {
    local base=${STRATA_SWIFT_AUTH_URL#http://127.0.0.1:}
    STRATA_OBJECTSTORE_PORT_BASE=${base%%/*} "$ROOT/scripts/objectstore.sh" start "$STRATA_OBJECTSTORE_DIR" >/dev/null
    STORE_STOPPED=
}
stop_store() {
    trap 'status=$?; [ -n "$STORE_STOPPED" ] && start_store; (exit $status); cleanup' EXIT
    STORE_STOPPED=yes
    "$ROOT/scripts/objectstore.sh" stop "$STRATA_OBJECTSTORE_DIR"
}
