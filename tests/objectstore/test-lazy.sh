#!/usr/bin/env bash
# Instant boot from the object store (issue 11 phase 2): a 128 MiB volume with holes is pushed
# from one pool; on a fresh pool `volume create --from --hydrate off` returns at once and the volume is
# served over NBD straight away. Reads before any hydration fetch only the objects they cover
# (counted in the Swift proxy's log): a ranged GET of the parts read first, then each whole
# object once, stored into the volume after the reply; holes cost no request. With the store stopped, fetched ranges and holes still
# read and unfetched data fails with EIO; once it is back the same read succeeds. An object
# overwritten in the store with other bytes is refused with an error naming it. Writes made
# while `volume hydrate` runs survive it; afterwards the volume is snapshot+writes and has no
# base. A second volume reads equal to the snapshot exported to a raw file (qemu-img compare),
# also after a daemon restart reopens its remote base; `strata pull` hydrates at once.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/lib-objectstore.sh"
requires_objectstore
requires qemu-img qemu-io nbdsh  # nbdsh: its python3-nbd module, used directly

MiB=$((1 << 20))
# 16 objects of 8 MiB: random data in objects 0-2, 6 and 10-11; the rest holes.
truncate -s 128M "$WORKDIR/image.raw"
for range in 0:24 48:8 80:16; do
    head -c $((${range#*:} * MiB)) /dev/urandom |
        dd of="$WORKDIR/image.raw" bs=1M seek="${range%:*}" conv=notrunc status=none
done

container=$(unique_container lazy)
src pool init --size 1G >/dev/null
STRATA_POOL="$SOURCE" add_remote swift r1 "$container" --create >/dev/null
src volume create vm1 --size 128M >/dev/null
src import "$WORKDIR/image.raw" vm1 >/dev/null
src snapshot create vm1@s1 >/dev/null
src push vm1@s1 r1 >/dev/null
src export vm1@s1 "$WORKDIR/s1.raw" >/dev/null
cmp -s "$WORKDIR/s1.raw" "$WORKDIR/image.raw" || fail "the exported snapshot differs from the imported image"
key() { store key-of "$container" manifests/vm1/s1 "$1"; }
key10=$(key 10)
key11=$(key 11)
[ "$(key 5)" = none ] || fail "object 5 should be a hole"

# GETs of this container's objects so far, from the proxy's access log; `fetched KEY`: of one.
PROXY_LOG="$STRATA_OBJECTSTORE_DIR/log/proxy.log"
[ -f "$PROXY_LOG" ] || fail "no proxy log at $PROXY_LOG"
# Whole-object GETs (the fills); a first read is answered from a ranged GET of its parts (206).
gets() { object_gets "$container"; }
fetched() { object_gets "$container" 200 "$1"; }

start_daemon
add_remote swift r1 "$container" >/dev/null
before=$(gets)
started=$(date +%s%N)
strata volume create lazy --from r1:vm1@s1 --hydrate off >/dev/null
elapsed_ms=$((($(date +%s%N) - started) / 1000000))
echo "REPORT volume create --from: $elapsed_ms ms"
[ "$(gets)" = "$before" ] || fail "create --from fetched objects"
strata volume layers lazy | grep -q "r1:vm1@s1 .*remote" || fail "layers: $(strata volume layers lazy)"

# Reads before any hydration: object 0 (1 MiB at 1 MiB), object 6 (at 50 MiB), a hole (object 5).
expect_read same lazy $((1 * MiB)) $MiB "$WORKDIR/s1.raw"
expect_read same lazy $((50 * MiB)) $((64 << 10)) "$WORKDIR/s1.raw"
expect_read same lazy $((40 * MiB)) $MiB "$WORKDIR/s1.raw"
settle_gets "$container"
[ "$(object_gets "$container" 206)" -ge 2 ] || fail "the first reads did not use ranged GETs"
[ "$(($(gets) - before))" = 2 ] || fail "3 reads fetched $(($(gets) - before)) objects, expected 2 (objects 0 and 6)"
[ "$(fetched "$(key 0)")" = 1 ] || fail "object 0 was fetched $(fetched "$(key 0)") times"
[ "$(fetched "$(key 6)")" = 1 ] || fail "object 6 was fetched $(fetched "$(key 6)") times"
# Other ranges of the same objects: already in the volume, no request.
expect_read same lazy $((7 * MiB)) $MiB "$WORKDIR/s1.raw"
expect_read same lazy $((48 * MiB)) $((8 * MiB)) "$WORKDIR/s1.raw"
settle_gets "$container"
[ "$(($(gets) - before))" = 2 ] || fail "reading fetched objects again fetched $(($(gets) - before - 2)) more"

# The store stopped: fetched ranges and holes still read; unfetched data fails cleanly.
stop_store
expect_read same lazy $((2 * MiB)) $MiB "$WORKDIR/s1.raw"
expect_read same lazy $((100 * MiB)) $MiB "$WORKDIR/s1.raw"
got=$(nbd_read lazy $((80 * MiB)) 4096 "$WORKDIR/s1.raw")
case $got in "error: "*) ;; *) fail "a read of unfetched data with the store down: $got" ;; esac
grep -q "$key10" "$WORKDIR/daemon.log" || fail "the daemon did not log the object that failed"
start_store
expect_read same lazy $((80 * MiB)) 4096 "$WORKDIR/s1.raw"

# An object overwritten with other bytes is refused, naming it; put back, it reads again.
damaged=$key11
head -c $((8 * MiB)) /dev/urandom | store put "$container" "$damaged"
got=$(nbd_read lazy $((90 * MiB)) 4096 "$WORKDIR/s1.raw")
case $got in "error: "*) ;; *) fail "a damaged object was served: $got" ;; esac
if out=$(strata volume hydrate lazy --wait 2>&1); then fail "hydrate used a damaged object"; fi
echo "$out" | grep -q "$damaged.*SHA-256 mismatch" || fail "the hydrate error does not name the object: $out"
dd if="$WORKDIR/s1.raw" bs=1M skip=88 count=8 status=none | store put "$container" "$damaged"

# Writes while hydrating survive it: into an unfetched data object (2), a hole (12), and a
# fetched one (0). Then the volume is the snapshot plus the writes, and has no base.
cp "$WORKDIR/s1.raw" "$WORKDIR/expected.raw"
strata volume hydrate lazy --wait >"$WORKDIR/hydrate.out" 2>&1 &
hydrate_pid=$!
for at in 20 100 3; do
    qemu-io -f raw -c "write -P 0x5a $((at * MiB + 4096)) $((256 << 10))" "nbd://127.0.0.1:$PORT/lazy" >/dev/null
    qemu-io -f raw -c "write -P 0x5a $((at * MiB + 4096)) $((256 << 10))" "$WORKDIR/expected.raw" >/dev/null
done
wait "$hydrate_pid" || fail "hydrate: $(cat "$WORKDIR/hydrate.out")"
layers=$(strata volume layers lazy --json)
if echo "$layers" | grep -q '"kind" *: *"base"'; then fail "the volume still has its base after hydrate: $layers"; fi
qemu-img compare -q -f raw -F raw "$WORKDIR/expected.raw" "nbd://127.0.0.1:$PORT/lazy" ||
    fail "after hydrate the volume is not the snapshot plus the writes"

# A second volume reads as the snapshot, through a daemon restart that reopens its base.
strata volume create second --from r1:vm1@s1 --hydrate off >/dev/null
expect_read same second $((49 * MiB)) $MiB "$WORKDIR/s1.raw"
stop_daemon
start_daemon
qemu-img compare -q -f raw -F raw "$WORKDIR/s1.raw" "nbd://127.0.0.1:$PORT/second" ||
    fail "the lazily read volume differs from the exported snapshot"
settle_gets "$container"
# All of it is now in the pool: the store is no longer read for it.
before=$(gets)
ranged_before=$(object_gets "$container" 206)
qemu-img compare -q -f raw -F raw "$WORKDIR/s1.raw" "nbd://127.0.0.1:$PORT/second" || fail "second compare"
[ "$(gets)" = "$before" ] || fail "a volume read whole once fetched $(($(gets) - before)) objects again"
[ "$(object_gets "$container" 206)" = "$ranged_before" ] || fail "a volume read whole once made ranged GETs again"

# pull = create --from + hydrate now.
strata pull r1:vm1@s1 pulled >/dev/null
layers=$(strata volume layers pulled --json)
if echo "$layers" | grep -q '"kind" *: *"base"'; then fail "pulled still has a base: $layers"; fi
qemu-img compare -q -f raw -F raw "$WORKDIR/s1.raw" "nbd://127.0.0.1:$PORT/pulled" || fail "pulled differs"
stop_daemon
strata check >/dev/null
