#!/usr/bin/env bash
# /api/v1 against docs/openapi.yaml and the CLI: a pool with two volumes, snapshots, a clone of
# a snapshot and a clone of the clone's snapshot, an open NBD connection and a replication job
# whose peer is down. Every path of the document is requested (api_check.py: status, content
# type and body validated against the document's schemas with python3-jsonschema, including a
# 404 for a missing volume); then each resource must equal, byte for byte, what the CLI prints
# with --json for the same object.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/http-lib.sh"
requires curl
/usr/bin/python3 -c 'import jsonschema, yaml, nbd' 2>/dev/null || requires python3-jsonschema python3-yaml python3-libnbd
SPEC="$ROOT/docs/openapi.yaml"

start_daemon
wait_http
strata volume create vm1 --size 64M >/dev/null
strata volume create data --size 16M >/dev/null
head -c $((3 << 20)) /dev/urandom >"$WORKDIR/a.raw"
strata import "$WORKDIR/a.raw" vm1 >/dev/null
strata snapshot create vm1@base >/dev/null
strata snapshot create vm1@later >/dev/null
strata clone vm1@base web >/dev/null
strata snapshot create web@v1 >/dev/null
strata clone web@v1 web-test >/dev/null

# An NBD client held open, so connections has an entry.
hold_nbd "$URI/vm1"

# A replication job to a peer that is not there: it exists, fails, and says so.
echo "not-a-real-peer-secret" >"$WORKDIR/secret"
strata replicate start data --to "127.0.0.1:$(free_port)" --secret-file "$WORKDIR/secret" --every 1h >/dev/null
for _ in $(seq 1 200); do
    strata replicate status --json | grep -q '"errors" : [1-9]' && break
    sleep 0.1
done

/usr/bin/python3 "$HTTP_DIR/api_check.py" "$SPEC" "$(http_url "")" /api/v1/pool /api/v1/volumes /api/v1/volumes/vm1 \
    /api/v1/volumes/web-test /api/v1/volumes/nope /api/v1/volumes/vm1/snapshots /api/v1/volumes/nope/snapshots \
    /api/v1/snapshots /api/v1/connections /api/v1/replication /api/v1/remotes /api/v1/statistics /metrics \
    >"$WORKDIR/check.out" 2>&1 || fail "the API does not match docs/openapi.yaml: $(cat "$WORKDIR/check.out")"
echo "REPORT openapi: $(grep -c valid "$WORKDIR/check.out") responses valid against docs/openapi.yaml"

# same PATH CLI...: the API's body equals the CLI's --json output, byte for byte. Jobs and
# connections change under their own steam, so it takes the first of three tries where the API
# gave the same answer before and after the CLI's.
same() {
    local path=$1
    shift
    for _ in 1 2 3; do
        http_get "$path" >"$WORKDIR/api.1"
        "$STRATA" "$@" >"$WORKDIR/cli.json"
        http_get "$path" >"$WORKDIR/api.2"
        cmp -s "$WORKDIR/api.1" "$WORKDIR/api.2" || continue
        cmp -s "$WORKDIR/api.1" "$WORKDIR/cli.json" && return 0
        diff "$WORKDIR/api.1" "$WORKDIR/cli.json" >&2 || true
        fail "GET $path differs from strata $*"
    done
    fail "GET $path kept changing"
}
same /api/v1/pool pool status --json
same /api/v1/volumes volume list --json
same /api/v1/snapshots snapshot list --json
same /api/v1/volumes/vm1/snapshots snapshot list vm1 --json
same /api/v1/connections connections --json
same /api/v1/replication replicate status --json
same /api/v1/remotes remote list --json
# One volume is the listing's element.
http_get /api/v1/volumes/web-test >"$WORKDIR/one.json"
strata volume list --json | /usr/bin/python3 -c "
import json, sys
listed = [v for v in json.load(sys.stdin) if v['name'] == 'web-test']
one = json.load(open(sys.argv[1]))
assert listed == [one], (listed, one)
assert one['origin'] == 'web@v1', one
" "$WORKDIR/one.json" || fail "/api/v1/volumes/web-test is not the listing's element"
http_get /api/v1/connections | grep -q '"export" : "vm1"' || fail "the held NBD connection is not listed"
echo "REPORT api: pool, volumes, snapshots, connections, replication and remotes equal the CLI's --json"

strata replicate stop data >/dev/null
release_nbd
stop_daemon
echo "PASS $TEST_NAME"
