#!/usr/bin/env bash
# remote delete and gc over the S3 API: after deleting a snapshot, `gc --dry-run` lists exactly
# the objects no other manifest needs and deletes nothing; gc deletes them; every remaining
# snapshot's objects are present and match their SHA-256s. A live push lease makes gc refuse;
# deleting a snapshot the remote lacks is a clear error.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/lib-objectstore.sh"
requires_objectstore
requires qemu-io

MiB=$((1 << 20))
container=$(unique_container gc)
start_daemon
add_remote s3 r1 "$container" --create >/dev/null
head -c $((64 * MiB)) /dev/urandom >"$WORKDIR/image.raw"
strata volume create vm1 --size 64M >/dev/null
strata import "$WORKDIR/image.raw" vm1 >/dev/null
strata snapshot create vm1@s1 >/dev/null
strata push vm1@s1 r1 >/dev/null
qemu-io -f raw -c "write -P 0x77 $((4 * MiB)) $((20 * MiB))" "nbd://127.0.0.1:$PORT/vm1" >/dev/null
strata snapshot create vm1@s2 >/dev/null
strata push vm1@s2 r1 >/dev/null

store keys "$container" manifests/vm1/s1 >"$WORKDIR/s1.keys"
store keys "$container" manifests/vm1/s2 >"$WORKDIR/s2.keys"
comm -23 "$WORKDIR/s1.keys" "$WORKDIR/s2.keys" >"$WORKDIR/expected"
[ "$(wc -l <"$WORKDIR/expected")" = 3 ] || fail "s1 should own 3 objects: $(cat "$WORKDIR/expected")"

if out=$(strata remote delete r1 vm1@nothere 2>&1); then fail "deleting a missing snapshot succeeded"; fi
echo "$out" | grep -q "no such snapshot" || fail "delete error: $out"
strata remote delete r1 vm1@s1 >/dev/null
[ "$(store list "$container" manifests/)" = manifests/vm1/s2 ] || fail "manifests after delete: $(store list "$container" manifests/)"

# A push lease written just now (as a push on another host would): gc refuses.
store put-lease "$container" leases/push-otherhost-vm9
if out=$(strata remote gc r1 --dry-run 2>&1); then fail "gc ran beside a live push lease"; fi
echo "$out" | grep -q "a push is running" || fail "gc lease error: $out"
store delete "$container" leases/push-otherhost-vm9

strata remote gc r1 --dry-run --json >"$WORKDIR/dry.json"
/usr/bin/python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["objects"]))' "$WORKDIR/dry.json" \
    >"$WORKDIR/listed"
diff "$WORKDIR/expected" "$WORKDIR/listed" || fail "dry run did not list exactly s1's own objects"
[ "$(store list "$container" objects/ | grep -c .)" = $(($(wc -l <"$WORKDIR/s2.keys") + 3)) ] ||
    fail "the dry run deleted objects"

strata remote gc r1 | tail -1 | grep -q "^deleted 3 objects" || fail "gc did not delete 3 objects"
store list "$container" objects/ | sort >"$WORKDIR/left"
diff "$WORKDIR/s2.keys" "$WORKDIR/left" || fail "after gc the store does not hold exactly s2's objects"
store verify "$container" manifests/vm1/s2 >/dev/null || fail "s2 does not verify after gc"
[ -z "$(store list "$container" leases/)" ] || fail "gc left its lease: $(store list "$container" leases/)"
stop_daemon
strata check >/dev/null
