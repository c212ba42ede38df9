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
