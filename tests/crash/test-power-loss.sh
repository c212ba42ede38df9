#!/usr/bin/env bash
# Power loss of the real daemon (a user-space dm-log-writes). The pool is made offline (volumes
# nv and iv, a source volume src@base sent to a stream file), its file copied, then the daemon
# runs with STRATA_TEST_WRITE_LOG, logging every write and sync of the pool with its
# CLOCK_MONOTONIC time. One client at a time drives the load (powerloss.py load): NBD writes
# with FLUSH and FUA and trims on nv, iSCSI WRITE(10) with SYNCHRONIZE CACHE and FUA on iv,
# snapshots, snapshot deletes, clones and clone deletes through the control socket, and a
# `strata receive`, recording when each was acknowledged. After a clean stop, powerloss.py
# verify replays the log onto the copy at 200+ cut points (each sync's end and the record
# after it, and seeded random records; unsynced writes lost, kept or torn per 512-byte
# sector) and checks, with no repair, that `strata check` is clean, every write flushed
# before the cut reads back (or a later one), and every command that returned before the cut
# is there with exactly its content.
source "$(dirname "$0")/../lib.sh"
requires /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || requires "python3-libnbd(import nbd)"
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
OPS=${POWER_LOSS_OPS:-1200}
CUTS=${POWER_LOSS_CUTS:-240}
SEED=${STRATA_SEED:-$RANDOM}
echo "seed=$SEED (replay: STRATA_SEED=$SEED E2E_FILTER=power-loss tests/run-e2e.sh)"

strata pool init --size 96M >/dev/null
strata volume create nv --size 4M >/dev/null
strata volume create iv --size 4M >/dev/null
strata volume create src --size 1M >/dev/null
$PY -c "import random,sys; r=random.Random($SEED); sys.stdout.buffer.write(bytes(r.getrandbits(8) for _ in range(1<<20)))" >"$WORKDIR/src.img"
strata import "$WORKDIR/src.img" src >/dev/null
strata snapshot create src@base >/dev/null
strata send src@base --output "$WORKDIR/src.stream" >/dev/null
cp --sparse=always "$STRATA_POOL/pool.strata" "$WORKDIR/base.strata"

STRATA_TEST_WRITE_LOG="$WORKDIR/writes.log" start_daemon
source "$HERE/../iscsi/iscsi-lib.sh"
wait_iscsi
grep -q "STRATA_TEST_WRITE_LOG.*TESTING ONLY" "$WORKDIR/daemon.log" || fail "the daemon did not announce the write log"

$PY "$HERE/powerloss.py" load "$WORKDIR/history.json" --nbd "$URI/nv" --portal "$ISCSI_PORTAL" --target "$IQN:iv" \
    --strata "$STRATA" --stream "$WORKDIR/src.stream" --ops "$OPS" --seed "$SEED" >"$WORKDIR/load.out" 2>&1 \
    || fail "load: $(cat "$WORKDIR/load.out")"
cat "$WORKDIR/load.out"
stop_daemon
$PY "$HERE/replay.py" info "$WORKDIR/writes.log"

# The replayed pool lives in its own directory; the daemon's pool stays as it ended.
mkdir "$WORKDIR/cut"
cp --sparse=always "$WORKDIR/base.strata" "$WORKDIR/cut/pool.strata"
$PY "$HERE/powerloss.py" verify "$WORKDIR/history.json" --log "$WORKDIR/writes.log" --pooldir "$WORKDIR/cut" \
    --strata "$STRATA" --expect-recv "$WORKDIR/src.img" --cuts "$CUTS" --seed "$SEED" >"$WORKDIR/verify.out" 2>&1 \
    || fail "$(tail -5 "$WORKDIR/verify.out")"
sed 's/^/REPORT /' "$WORKDIR/verify.out"
echo "PASS $TEST_NAME"
