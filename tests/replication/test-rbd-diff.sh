#!/usr/bin/env bash
# Ceph interoperability: `strata send --format rbd-diff` writes rbd diff v1; a full one received
# back equals the source; Ceph's own `rbd merge-diff` accepts two consecutive Strata incremental
# rbd-diff streams, and Strata receives the merged stream correctly.
source "$(dirname "$0")/../lib.sh"
requires rbd
src pool init --size 1G >/dev/null
strata pool init --size 1G >/dev/null
src volume create vm1 --size 32M >/dev/null
head -c 4M /dev/urandom >"$WORKDIR/a.raw"
src import "$WORKDIR/a.raw" vm1 >/dev/null
src snapshot create vm1@s1 >/dev/null
printf 'second' | dd of="$WORKDIR/b.raw" bs=1 seek=$((5 << 20)) conv=notrunc 2>/dev/null
head -c 64K /dev/urandom | dd of="$WORKDIR/b.raw" bs=64K seek=20 conv=notrunc 2>/dev/null
src import "$WORKDIR/b.raw" vm1 >/dev/null
src snapshot create vm1@s2 >/dev/null
head -c 200K /dev/urandom >"$WORKDIR/c.raw"
src import "$WORKDIR/c.raw" vm1 >/dev/null
src snapshot create vm1@s3 >/dev/null

src send vm1@s1 --format rbd-diff -o "$WORKDIR/full.rbd" 2>/dev/null
head -c 12 "$WORKDIR/full.rbd" | grep -q "rbd diff v1" || fail "no rbd diff v1 header"
strata receive vm1 -i "$WORKDIR/full.rbd" >/dev/null || fail "receive a full rbd diff"
src export vm1@s1 "$WORKDIR/src-s1.raw" >/dev/null
strata export vm1@s1 "$WORKDIR/dst-s1.raw" >/dev/null
cmp "$WORKDIR/src-s1.raw" "$WORKDIR/dst-s1.raw" || fail "full rbd diff round trip differs"

src send vm1@s2 --from vm1@s1 --format rbd-diff -o "$WORKDIR/d12.rbd" 2>/dev/null
src send vm1@s3 --from vm1@s2 --format rbd-diff -o "$WORKDIR/d23.rbd" 2>/dev/null
rbd merge-diff "$WORKDIR/d12.rbd" "$WORKDIR/d23.rbd" "$WORKDIR/d13.rbd" --no-progress >"$WORKDIR/merge.log" 2>&1 ||
    fail "rbd merge-diff refused Strata's streams: $(cat "$WORKDIR/merge.log")"
strata receive vm1 -i "$WORKDIR/d13.rbd" >/dev/null || fail "receive the merged rbd diff"
src export vm1@s3 "$WORKDIR/src-s3.raw" >/dev/null
strata export vm1@s3 "$WORKDIR/dst-s3.raw" >/dev/null
cmp "$WORKDIR/src-s3.raw" "$WORKDIR/dst-s3.raw" || fail "vm1@s3 from the merged diff differs"
# A truncated rbd diff is refused naming the offset and leaves nothing behind.
head -c 100000 "$WORKDIR/full.rbd" >"$WORKDIR/cut.rbd"
if strata receive other -i "$WORKDIR/cut.rbd" 2>"$WORKDIR/err"; then fail "truncated rbd diff accepted"; fi
grep -q "byte offset" "$WORKDIR/err" || fail "truncation message: $(cat "$WORKDIR/err")"
strata check >/dev/null || fail "check"
echo "PASS $TEST_NAME"
