#!/usr/bin/env bash
# Push over both APIs: a 256 MiB volume with holes uploads only its non-empty objects; after
# changing 10 MiB the second push uploads only the changed objects (counted from the push
# summary and from the store's own listing); an unchanged snapshot uploads only its manifest;
# `remote ls` shows sizes and unique bytes; every manifest verifies object by object. The
# Swift run goes through the daemon, the S3 run through the pool opened by the CLI.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/lib-objectstore.sh"
requires_objectstore
requires qemu-io

MiB=$((1 << 20))
# 256 MiB in 32 objects of 8 MiB: random data in objects 0-4, 12-15 and 25; the rest holes.
truncate -s 256M "$WORKDIR/image.raw"
for range in 0:40 100:24 200:8; do
    head -c $((${range#*:} * MiB)) /dev/urandom |
        dd of="$WORKDIR/image.raw" bs=1M seek="${range%:*}" conv=notrunc status=none
done

objects() { store list "$1" objects/ | grep -c . || true; }

run() {  # run API: the whole scenario on one API, in container push-API-…
    local api=$1 volume="vm-$1" container summary
    container=$(unique_container "push-$api")
    add_remote "$api" "r-$api" "$container" --create >/dev/null
    strata volume create "$volume" --size 256M >/dev/null
    strata import "$WORKDIR/image.raw" "$volume" >/dev/null
    strata snapshot create "$volume@s1" >/dev/null
    summary=$(strata push "$volume@s1" "r-$api" --json)
    [ "$(echo "$summary" | json objectsUploaded)" = 10 ] || fail "$api: first push: $summary"
    [ "$(echo "$summary" | json holes)" = 22 ] || fail "$api: first push holes: $summary"
    [ "$(objects "$container")" = 10 ] || fail "$api: store holds $(objects "$container") objects after the first push"

    # Change 10 MiB across objects 4 (data) and 5 (a hole until now).
    if [ "$api" = swift ]; then
        qemu-io -f raw -c "write -P 0x5a $((36 * MiB)) $((10 * MiB))" "nbd://127.0.0.1:$PORT/$volume" >/dev/null
    else
        # Offline run: a daemon only for the NBD write, stopped before the next push.
        start_daemon
        qemu-io -f raw -c "write -P 0x5a $((36 * MiB)) $((10 * MiB))" "nbd://127.0.0.1:$PORT/$volume" >/dev/null
        stop_daemon
    fi
    strata snapshot create "$volume@s2" >/dev/null
    summary=$(strata push "$volume@s2" "r-$api" --json)
    [ "$(echo "$summary" | json objectsUploaded)" = 2 ] || fail "$api: second push: $summary"
    [ "$(echo "$summary" | json bytesUploaded)" = $((16 * MiB)) ] || fail "$api: second push bytes: $summary"
    [ "$(echo "$summary" | json objectsUnchanged)" = 9 ] || fail "$api: second push unchanged: $summary"
    [ "$(echo "$summary" | json parent)" = "$volume@s1" ] || fail "$api: second push parent: $summary"
    [ "$(objects "$container")" = 12 ] || fail "$api: store holds $(objects "$container") objects after the second push"
    echo "REPORT $api second push: $(echo "$summary" | json objectsUploaded) objects in $(echo "$summary" | json seconds) s"

    # An unchanged snapshot: only the manifest.
    strata snapshot create "$volume@s3" >/dev/null
    summary=$(strata push "$volume@s3" "r-$api" --json)
    [ "$(echo "$summary" | json objectsUploaded)" = 0 ] || fail "$api: third push: $summary"
    [ "$(objects "$container")" = 12 ] || fail "$api: the third push uploaded objects"
    [ "$(store list "$container" manifests/ | grep -c .)" = 3 ] || fail "$api: not 3 manifests"
    # The same snapshot again: already there.
    [ "$(strata push "$volume@s3" "r-$api" --json | json upToDate)" = True ] || fail "$api: re-push not up to date"

    listing=$(strata remote ls "r-$api" "$volume" --json)
    [ "$(echo "$listing" | json 0.snapshot)" = s1 ] || fail "$api: ls: $listing"
    [ "$(echo "$listing" | json 1.snapshot)" = s2 ] || fail "$api: ls: $listing"
    [ "$(echo "$listing" | json 0.sizeBytes)" = $((256 * MiB)) ] || fail "$api: ls size: $listing"
    [ "$(echo "$listing" | json 0.uniqueBytes)" = $((8 * MiB)) ] || fail "$api: s1 unique: $listing"
    [ "$(echo "$listing" | json 1.uniqueBytes)" = 0 ] || fail "$api: s2 shares all with s3: $listing"
    [ "$(echo "$listing" | json 1.storedBytes)" = $((88 * MiB)) ] || fail "$api: s2 stored: $listing"
    strata remote ls "r-$api" | grep -q "^$volume@s3 " || fail "$api: ls table lacks s3"
    for snapshot in s1 s2 s3; do
        store verify "$container" "manifests/$volume/$snapshot" >/dev/null || fail "$api: $snapshot does not verify"
    done

    # A manifest from a newer format version is refused, naming the upgrade.
    store corrupt-header "$container" "manifests/$volume/s3" 3
    if out=$(strata remote ls "r-$api" 2>&1); then fail "$api: ls read a version-3 manifest"; fi
    echo "$out" | grep -q "version 3 is newer.*upgrade strata" || fail "$api: newer-version error: $out"
}

start_daemon
run swift
stop_daemon
run s3
strata check >/dev/null
