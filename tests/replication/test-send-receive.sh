#!/usr/bin/env bash
# Send and receive between two pools through a pipe, once with the target's daemon running
# (the stream's descriptor goes over the stream socket) and once without: full and incremental
# streams arrive byte for byte with their GUIDs; a flipped byte, a truncation, a stream already
# received and a base mismatch (a stream from a snapshot the target never received) are refused
# naming the byte offset or both GUIDs and leave the target as it was; an
# interrupted receive resumes from its token; --abort discards it; `strata check` stays clean.
source "$(dirname "$0")/../lib.sh"
TARGET="$STRATA_POOL"

source_volume 6
src snapshot create vm1@s1 >/dev/null
head -c 1M /dev/urandom >"$WORKDIR/b.raw"
src import "$WORKDIR/b.raw" vm1 >/dev/null
src snapshot create vm1@s2 >/dev/null
src snapshot create vm1@s3 >/dev/null

start_daemon
# Full, then incremental, through pipes into the running daemon.
src send vm1@s1 | strata receive vm1 >/dev/null || fail "full receive"
src send vm1@s2 --from vm1@s1 | strata receive vm1 --json >"$WORKDIR/recv.json" || fail "incremental receive"
grep -q '"snapshot" : "vm1@s2"' "$WORKDIR/recv.json" || fail "receive --json: $(cat "$WORKDIR/recv.json")"
for snap in s1 s2; do
    src export "vm1@$snap" "$WORKDIR/src-$snap.raw" >/dev/null
    strata export "vm1@$snap" "$WORKDIR/dst-$snap.raw" >/dev/null
    cmp "$WORKDIR/src-$snap.raw" "$WORKDIR/dst-$snap.raw" || fail "vm1@$snap differs"
done
guids() { python3 -c 'import json,sys; [print(s["name"], s["guid"]) for s in json.load(sys.stdin)][:0]'; }
[ "$(src snapshot list vm1 --json | guids | head -2)" = "$(strata snapshot list vm1 --json | guids)" ] ||
    fail "snapshot names or GUIDs differ"

before=$(strata snapshot list --json)
# A flipped byte in the middle of the stream.
src send vm1@s3 --from vm1@s2 -o "$WORKDIR/s3.str" 2>/dev/null
src send vm1@s2 --from vm1@s1 -o "$WORKDIR/s2.str" 2>/dev/null
python3 -c "import sys; d=bytearray(open(sys.argv[1],'rb').read()); d[len(d)//2]^=1; open(sys.argv[2],'wb').write(d)" \
    "$WORKDIR/s3.str" "$WORKDIR/bad.str"
if strata receive vm1 -i "$WORKDIR/bad.str" 2>"$WORKDIR/err"; then fail "corrupt stream accepted"; fi
grep -q "byte offset" "$WORKDIR/err" || fail "corruption message: $(cat "$WORKDIR/err")"
# A stream the target already holds (s1 -> s2): refused.
if strata receive vm1 -i "$WORKDIR/s2.str" 2>"$WORKDIR/err"; then fail "stream received twice"; fi
grep -q "already received" "$WORKDIR/err" || fail "received-twice message: $(cat "$WORKDIR/err")"
# A base mismatch: the stream s3 -> s4 needs base s3, which the target (s1, s2) does not hold.
src snapshot create vm1@s4 >/dev/null
src send vm1@s4 --from vm1@s3 -o "$WORKDIR/s4.str" 2>/dev/null
if strata receive vm1 -i "$WORKDIR/s4.str" 2>"$WORKDIR/err"; then fail "a stream whose base the target lacks was accepted"; fi
guid_of() { src snapshot list vm1 --json | python3 -c "import json,sys; print([s['guid'] for s in json.load(sys.stdin) if s['name'] == sys.argv[1]][0])" "$1"; }
grep -q "base mismatch" "$WORKDIR/err" || fail "base mismatch message: $(cat "$WORKDIR/err")"
grep -q "$(guid_of s3)" "$WORKDIR/err" || fail "the message does not name the stream's base s3: $(cat "$WORKDIR/err")"
grep -q "$(guid_of s2)" "$WORKDIR/err" || fail "the message does not name the target's newest s2: $(cat "$WORKDIR/err")"
[ "$(strata snapshot list --json)" = "$before" ] || fail "a refused stream changed the target"

# A truncated full stream into a new volume: refused, staged, resumed from its token.
src send vm1@s2 -o "$WORKDIR/full.str" 2>/dev/null
head -c 3000000 "$WORKDIR/full.str" >"$WORKDIR/cut.str"
if strata receive copy -i "$WORKDIR/cut.str" 2>"$WORKDIR/err"; then fail "truncated stream accepted"; fi
grep -q "truncated stream at byte offset 3000000" "$WORKDIR/err" || fail "truncation message: $(cat "$WORKDIR/err")"
strata volume list | grep -q '^copy ' && fail "a partial receive is visible"
token=$(strata receive --token copy)
src send vm1@s2 --resume "$token" | strata receive copy >/dev/null || fail "resumed receive"
strata export copy@s2 "$WORKDIR/copy.raw" >/dev/null
cmp "$WORKDIR/src-s2.raw" "$WORKDIR/copy.raw" || fail "resumed copy differs"
# --abort discards a staged receive.
strata receive other -i "$WORKDIR/cut.str" 2>/dev/null && fail "truncated stream accepted"
strata receive --abort other >/dev/null || fail "abort"
strata receive --token other 2>/dev/null && fail "token after abort"
stop_daemon

# Without a daemon: the CLI opens the target pool itself.
strata check >/dev/null || fail "check after the daemon run"
strata receive vm1 -i "$WORKDIR/s3.str" >/dev/null || fail "incremental receive without a daemon"
strata snapshot list vm1 | grep -q 'vm1@s3' || fail "vm1@s3 missing"
# A write on the target since its newest snapshot is refused; --force rolls it back.
src volume create vm2 --size 8M >/dev/null
src snapshot create vm2@a >/dev/null
src snapshot create vm2@b >/dev/null
src send vm2@a | strata receive vm2 >/dev/null
strata import "$WORKDIR/b.raw" vm2 >/dev/null
if src send vm2@b --from vm2@a | strata receive vm2 2>"$WORKDIR/err"; then fail "modified target accepted"; fi
grep -q "modified since" "$WORKDIR/err" || fail "modified message: $(cat "$WORKDIR/err")"
src send vm2@b --from vm2@a | strata receive vm2 --force >/dev/null || fail "--force"
strata check >/dev/null || fail "check"
echo "PASS $TEST_NAME"
