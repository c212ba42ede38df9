#!/usr/bin/env bash
# A snapshot taken during a write run holds exactly the data acknowledged before it. A libnbd
# writer (tests/nbd/nbdload.py snapwriter) writes numbered, self-describing 16 KiB blocks of an
# 8 MiB volume (4 per 64 KiB chunk, so copy-on-write copies the rest of a chunk) with 8 writes
# in flight, every third with FUA. Four times it records which writes were acknowledged and
# signals through a FIFO; `strata snapshot create vm1@sK` runs; its return is signalled back and
# the writer goes on with a full pass of new versions. Snapshots s0 and s2 are quiesced (nothing
# in flight, no write until the snapshot returned) and must hold exactly the acknowledged state;
# s1 and s3 are live (up to half a pass of writes flows while the snapshot is taken): a block acknowledged
# before holds that version or one issued while the snapshot was taken, and none holds a version
# issued after the snapshot returned. The live volume must end with exactly the last
# acknowledged version of every block, and `strata check` must be clean.
source "$(dirname "$0")/../lib.sh"
requires /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || requires "python3-libnbd(import nbd)"
LOAD="/usr/bin/python3 $(dirname "$0")/nbdload.py"

NBLOCKS=512
BS=16384
NSNAPS=4
SIG="$WORKDIR/signals"
mkdir -p "$SIG"
mkfifo "$SIG/signal"
exec 3<>"$SIG/signal"   # read-write, so neither side blocks on open

start_daemon
strata volume create vm1 --size $((NBLOCKS * BS)) >/dev/null

$LOAD snapwriter "$URI/vm1" $NBLOCKS $BS "$SIG" $NSNAPS >"$WORKDIR/writer.out" 2>&1 &
WRITER=$!
STRATA_PIDS+=("$WRITER")

writer_checkpoints "$WRITER" $NSNAPS 3 strata snapshot create "vm1@s{k}"
status=0
wait "$WRITER" || status=$?
cat "$WORKDIR/writer.out"
[ $status -eq 0 ] || fail "writer failed"

$LOAD snapcheck "$URI/vm1" $NBLOCKS $BS "$SIG" $NSNAPS || fail "a snapshot does not hold exactly the acknowledged data"

strata check >"$WORKDIR/check.out" 2>&1 || fail "strata check: $(cat "$WORKDIR/check.out")"
stop_daemon
strata check >/dev/null || fail "strata check after shutdown"
echo "PASS $TEST_NAME"
