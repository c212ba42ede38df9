#!/usr/bin/env bash
# remote add/check/list/remove over both APIs of a real Swift, through the daemon and offline;
# a missing container or bucket, wrong credentials and a user without rights (test:tester3)
# give clear errors and leave remotes.json as it was; secrets are never printed.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/lib-objectstore.sh"
requires_objectstore
start_daemon

for api in swift s3; do
    container=$(unique_container "rem-$api")
    # A missing container: refused, naming the fix, and nothing saved.
    if out=$(add_remote "$api" "r-$api" "$container" 2>&1); then fail "$api: add to a missing container succeeded"; fi
    echo "$out" | grep -q "does not exist (status=404" || fail "$api: missing-container error: $out"
    echo "$out" | grep -q -- "--create" || fail "$api: missing-container error names no fix: $out"
    strata remote list --json | grep -q "\"r-$api\"" && fail "$api: a failed add left a remote"
    # An object size that is not a power of two.
    if out=$(add_remote "$api" "r-$api" "$container" --create --object-size 3M 2>&1); then fail "$api: 3M accepted"; fi
    echo "$out" | grep -q "power of two" || fail "$api: object-size error: $out"
    add_remote "$api" "r-$api" "$container" --create >/dev/null
    report=$(strata remote check "r-$api" --json)
    [ "$(echo "$report" | json probeBytes)" = 4096 ] || fail "$api: check report: $report"
    echo "REPORT $api check: $(strata remote check "r-$api")"
done

# Listing through the daemon: both, no secret anywhere.
listing=$(strata remote list)
echo "$listing" | grep -q "^r-s3 .*s3" || fail "list lacks r-s3: $listing"
echo "$listing" | grep -q "^r-swift .*swift" || fail "list lacks r-swift: $listing"
strata remote list --json | grep -q "$STRATA_SWIFT_KEY" && fail "remote list printed the key"
[ "$(stat -c %a "$STRATA_POOL/remotes.json")" = 600 ] || fail "remotes.json is not 0600"
before=$(sha256sum "$STRATA_POOL/remotes.json")

# Wrong key (Swift: 401 at login; S3: 403 on the signature), a user without rights (403).
printf 'wrong\n' >"$WORKDIR/wrong.key"
existing=$(strata remote list --json | /usr/bin/python3 -c 'import json,sys; print([r["container"] for r in json.load(sys.stdin) if r["name"]=="r-swift"][0])')
expect_refused() {  # expect_refused WHAT PATTERN ARGS...
    local what=$1 pattern=$2 out
    shift 2
    if out=$(strata remote add "$@" 2>&1); then fail "$what: accepted"; fi
    echo "$out" | grep -q "$pattern" || fail "$what: unclear error: $out"
    echo "$out" | grep -q wrong && fail "$what: the error printed the key"
    [ "$(sha256sum "$STRATA_POOL/remotes.json")" = "$before" ] || fail "$what: remotes.json changed"
}
expect_refused "swift wrong key" "status=401.*check the user and key" bad --swift "$STRATA_SWIFT_AUTH_URL" \
    --user "$STRATA_SWIFT_USER" --key-file "$WORKDIR/wrong.key" --container "$existing"
expect_refused "s3 wrong secret" "status=403.*check the credentials" bad --s3 "$STRATA_S3_ENDPOINT" \
    --bucket "$existing" --access-key-id "$STRATA_S3_ACCESS_KEY" --secret-key-file "$WORKDIR/wrong.key"
printf 'testing3\n' >"$WORKDIR/tester3.key"
expect_refused "swift tester3" "status=403" bad --swift "$STRATA_SWIFT_AUTH_URL" --user test:tester3 \
    --key-file "$WORKDIR/tester3.key" --container "$existing"
expect_refused "s3 tester3" "status=403" bad --s3 "$STRATA_S3_ENDPOINT" --bucket "$existing" \
    --access-key-id test:tester3 --secret-key-file "$WORKDIR/tester3.key"
expect_refused "duplicate name" "exists" r-swift --swift "$STRATA_SWIFT_AUTH_URL" --user "$STRATA_SWIFT_USER" \
    --key-file "$WORKDIR/swift.key" --container "$existing"

# Offline: the same verbs on the pool opened by the CLI.
stop_daemon
strata remote check r-s3 >/dev/null
strata remote remove r-swift
strata remote list | grep -q "^r-swift" && fail "r-swift still listed after remove"
if out=$(strata remote remove r-swift 2>&1); then fail "removing a missing remote succeeded"; fi
echo "$out" | grep -q "no such remote" || fail "remove error: $out"
if out=$(strata remote check nothere 2>&1); then fail "check of a missing remote succeeded"; fi
echo "$out" | grep -q "strata remote list" || fail "check error names no fix: $out"
strata check >/dev/null
