#!/usr/bin/env bash
# kill -9 the daemon in the middle of a push: no manifest appears (a snapshot is visible only
# when complete); pushing again after a restart skips the objects already stored (by their
# content keys), uploads the rest, and the manifest verifies object by object; `strata check`
# is clean.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/lib-objectstore.sh"
requires_objectstore

container=$(unique_container resume)
start_daemon
add_remote swift r1 "$container" --create >/dev/null
head -c $((256 << 20)) /dev/urandom >"$WORKDIR/image.raw"
strata volume create vm1 --size 256M >/dev/null
strata import "$WORKDIR/image.raw" vm1 >/dev/null
strata snapshot create vm1@s1 >/dev/null

strata push vm1@s1 r1 --json >"$WORKDIR/push1.out" 2>&1 &
push_pid=$!
# The proxy's access log, not a listing, tells when 4 objects are stored: a listing takes a
# Python start-up per look, during which a push of 8 parallel PUTs stores most of the volume.
puts() { grep -c "PUT /v1/AUTH_test/$container/objects/[0-9a-f]* HTTP/1.[01] 201 " "$STRATA_OBJECTSTORE_DIR/log/proxy.log" || true; }
for _ in $(seq 1 3000); do
    [ "$(puts)" -ge 4 ] && break
    sleep 0.01
done
kill_daemon
wait "$push_pid" && fail "the push survived its daemon: $(cat "$WORKDIR/push1.out")"
stored=$(store list "$container" objects/ | grep -c . || true)
[ "$stored" -ge 4 ] || fail "only $stored objects were stored before the kill"
[ "$stored" -lt 32 ] || fail "the push finished before the kill; nothing to resume"
[ -z "$(store list "$container" manifests/)" ] || fail "a manifest exists for an interrupted push"

start_daemon
summary=$(strata push vm1@s1 r1 --json)
skipped=$(echo "$summary" | json objectsSkipped)
uploaded=$(echo "$summary" | json objectsUploaded)
[ "$skipped" -ge "$stored" ] || fail "resume skipped $skipped objects, $stored were stored: $summary"
[ $((skipped + uploaded)) = 32 ] || fail "resume: $skipped skipped + $uploaded uploaded is not 32: $summary"
[ "$(store verify "$container" manifests/vm1/s1)" = 32 ] || fail "the manifest does not verify"
[ "$(store list "$container" objects/ | grep -c .)" = 32 ] || fail "the store does not hold 32 objects"
echo "REPORT resumed: $skipped objects skipped, $uploaded uploaded"
stop_daemon
strata check >/dev/null
