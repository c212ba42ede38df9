#!/usr/bin/env bash
# Regenerates the fuzz seed corpus, Fuzz/corpus/TARGET/, from real traffic and real files
# (docs/TESTING.md, "Fuzzing"). Run it after a wire or format change; commit what it writes.
#
#   scripts/fuzz-corpus.sh
#
# What it captures (Fuzz/capture.py relays each connection and records both directions):
#   NBD        nbdinfo (export, --list, --map), qemu-img info and qemu-io (write, zero, discard,
#              flush, read) against `strata serve`
#   iSCSI      iscsi-inq, iscsi-ls, iscsi-readcapacity16, qemu-img info and qemu-io over iscsi://
#   control    the CLI's requests and the daemon's replies on control.sock
#   replication  a `strata replicate` cycle between two daemons (request and reply lines)
#   mirror     a remote mirror leg's session between the same two daemons (binary messages)
#   streams    `strata send`: full, incremental, compressed, and --format rbd-diff
#   pages      superblocks, btree nodes and the volume table of the pool those made
#   qcow2      `qemu-img create`/`convert`: v3 and v2 (compat=0.10), 512-byte clusters (small
#              files), written with qemu-io, compressed, and one with a backing file
#   manifests  `strata push` to a real OpenStack Swift (scripts/objectstore.sh), read back
# Findings (inputs that crashed a target, kept as regression seeds) are named finding-*; the
# script leaves those alone and replaces every other seed.
# Needs the debug strata (`swift build`), qemu-utils, libnbd-bin, libiscsi-bin (scripts/test.sh
# installs them).
source "$(dirname "$0")/../tests/lib.sh"
requires qemu-img qemu-io nbdinfo iscsi-inq iscsi-ls iscsi-readcapacity16
CORPUS=$ROOT/Fuzz/corpus
EXTRACT=$ROOT/Fuzz/extract.py
CAPTURE=$ROOT/Fuzz/capture.py
for target in "$CORPUS"/*/; do
    [ -d "$target" ] || continue
    find "$target" -type f ! -name 'finding-*' -delete
done

# capture_start NAME LISTEN UPSTREAM: relays LISTEN to UPSTREAM, recording into $WORKDIR/NAME/.
capture_start() {
    /usr/bin/python3 "$CAPTURE" "$2" "$3" "$WORKDIR/$1" &
    STRATA_PIDS+=($!)
    CAPTURE_PID=$!
    for _ in $(seq 1 200); do
        [ -f "$WORKDIR/$1/.listening" ] && return 0
        sleep 0.05
    done
    fail "the capture relay on $2 did not start"
}
# capture_take NAME: the client-side captures of NAME that hold bytes, in connection order.
capture_take() { find "$WORKDIR/$1" -name '*.client' -size +0 | sort -V; }

# The pool the captures run against: vm1 is 1 MiB, the size of the fuzz pool's vm1, so the
# captured offsets land inside the fuzz targets' export; 4 KiB chunks keep the streams small.
strata pool init --size 256M --chunk-size 4K >/dev/null
strata volume create vm1 --size 1M >/dev/null
head -c 12288 /dev/urandom >"$WORKDIR/a.raw"
strata import "$WORKDIR/a.raw" vm1 >/dev/null
strata snapshot create vm1@s1 >/dev/null

start_daemon
# Control socket: the daemon's moves aside and the relay takes its name.
mv "$STRATA_POOL/control.sock" "$STRATA_POOL/control.real"
capture_start control "$STRATA_POOL/control.sock" "$STRATA_POOL/control.real"
strata pool status >/dev/null
strata volume list --json >/dev/null
strata snapshot list vm1 >/dev/null
strata volume create vm2 --size 2M >/dev/null
strata snapshot create vm2@a >/dev/null
strata clone vm2@a vm3 >/dev/null
strata volume delete vm3 >/dev/null
strata diff vm1@s1 vm1 >/dev/null
strata connections >/dev/null
strata check >/dev/null
strata volume create 'bad name' --size 1M >/dev/null 2>&1 || true

NBD_PROXY=$(free_port)
capture_start nbd "127.0.0.1:$NBD_PROXY" "127.0.0.1:$PORT"
NBD_URI="nbd://127.0.0.1:$NBD_PROXY"
nbdinfo "$NBD_URI/vm1" >/dev/null
nbdinfo --list "$NBD_URI" >/dev/null
nbdinfo --map "$NBD_URI/vm1" >/dev/null
nbdinfo "$NBD_URI/vm1@s1" >/dev/null
qemu-img info "$NBD_URI/vm1" >/dev/null
qemu-io -f raw -c 'write -P 0x3c 65536 4096' -c 'write -z 131072 8192' -c 'discard 0 4096' -c 'flush' \
    -c 'read -P 0x3c 65536 4096' -c 'write -P 7 1040384 8192' "$NBD_URI/vm1" >/dev/null
qemu-io -f raw -c 'read 0 65536' -c 'write -P 9 0 512' "$NBD_URI/vm1@s1" >/dev/null 2>&1 || true

ISCSI_PROXY=$(free_port)
capture_start iscsi "127.0.0.1:$ISCSI_PROXY" "$ISCSI_PORTAL"
ISCSI_URI="iscsi://127.0.0.1:$ISCSI_PROXY/iqn.2026-11.org.strata:vm1/0"
iscsi-inq "$ISCSI_URI" >/dev/null
iscsi-inq -e 1 -c 0x83 "$ISCSI_URI" >/dev/null
iscsi-ls "iscsi://127.0.0.1:$ISCSI_PROXY" >/dev/null
iscsi-readcapacity16 "$ISCSI_URI" >/dev/null
qemu-img info "$ISCSI_URI" >/dev/null
qemu-io -f raw -c 'write -P 0x42 4096 8192' -c 'read -P 0x42 4096 8192' -c 'discard 65536 4096' -c 'flush' \
    "$ISCSI_URI" >/dev/null

# Replication: a replica daemon in a second pool, one cycle relayed.
strata snapshot create vm1@s2 >/dev/null
REPLICA_POOL=$WORKDIR/replica
SECRET=$WORKDIR/secret
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$SECRET"
REPLICATION_PORT=$(free_port)
SOURCE_PORT=$PORT
STRATA_POOL=$REPLICA_POOL start_daemon --replication "127.0.0.1:$REPLICATION_PORT" --replication-secret-file "$SECRET"
for _ in $(seq 1 200); do (echo >"/dev/tcp/127.0.0.1/$REPLICATION_PORT") 2>/dev/null && break; sleep 0.05; done
REPLICATION_PROXY=$(free_port)
capture_start replication "127.0.0.1:$REPLICATION_PROXY" "127.0.0.1:$REPLICATION_PORT"
strata replicate start vm1 --to "127.0.0.1:$REPLICATION_PROXY" --secret-file "$SECRET" --every 1h --keep 2 >/dev/null
for _ in $(seq 1 600); do
    STRATA_POOL=$REPLICA_POOL "$STRATA" snapshot list vm1 2>/dev/null | grep -q repl- && break
    sleep 0.1
done
STRATA_POOL=$REPLICA_POOL "$STRATA" snapshot list vm1 | grep -q repl- || fail "no replication cycle completed"
strata replicate stop vm1 >/dev/null

# A remote mirror leg on the replica daemon, relayed: add (full copy), writes, zeros and a trim
# while connected, a flush, a detach and an attach (split points, changes), then remove.
MIRROR_PROXY=$(free_port)
capture_start mirror "127.0.0.1:$MIRROR_PROXY" "127.0.0.1:$REPLICATION_PORT"
strata volume create mv --size 1M >/dev/null
qemu-io -f raw -c 'write -P 0x44 0 8192' "$NBD_URI/mv" >/dev/null
strata mirror add mv --to "127.0.0.1:$MIRROR_PROXY" --secret-file "$SECRET" --wait >/dev/null
qemu-io -f raw -c 'write -P 0x45 4096 4096' -c 'write -z 65536 4096' -c 'discard 131072 4096' -c 'flush' \
    "$NBD_URI/mv" >/dev/null
strata mirror detach mv >/dev/null
qemu-io -f raw -c 'write -P 0x46 12288 4096' "$NBD_URI/mv" >/dev/null
strata mirror attach mv --wait >/dev/null
strata mirror remove mv >/dev/null

# Streams (through the daemon, as `strata send` runs with one).
strata send vm1@s1 -o "$WORKDIR/full.stream" >/dev/null 2>&1
strata send vm1@s2 --from vm1@s1 -o "$WORKDIR/incremental.stream" >/dev/null 2>&1
strata send vm1@s2 --compress -o "$WORKDIR/compressed.stream" >/dev/null 2>&1
strata send vm1@s2 --from vm1@s1 --compress -o "$WORKDIR/incremental-compressed.stream" >/dev/null 2>&1
strata send vm1@s1 --format rbd-diff -o "$WORKDIR/full.rbd" >/dev/null 2>&1
strata send vm1@s2 --from vm1@s1 --format rbd-diff -o "$WORKDIR/incremental.rbd" >/dev/null 2>&1
kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID" || true
kill -TERM "$CAPTURE_PID" 2>/dev/null || true
# Every daemon and relay this script started stops at exit (tests/lib.sh's cleanup, by PID).

python() { /usr/bin/python3 "$EXTRACT" "$@"; }
# seeds_from PROTOCOL: each recorded connection of PROTOCOL (nbd, iscsi) cut into its targets' seeds.
seeds_from() {
    local number=0 file
    for file in $(capture_take "$1"); do
        number=$((number + 1))
        python "$1" "$CORPUS" "capture-$number" "$file"
    done
}
seeds_from nbd
seeds_from iscsi
# both_ways NAME MODE TARGET CLIENT_SKIP SERVER_SKIP: each recorded connection of NAME, the
# client's bytes after CLIENT_SKIP and the server's after SERVER_SKIP, cut by extract.py MODE.
both_ways() {
    local number=0 file
    for file in $(capture_take "$1"); do
        number=$((number + 1))
        python "$2" "$CORPUS/$3" "request-$number" "$4" "$file"
        python "$2" "$CORPUS/$3" "reply-$number" "$5" "${file%.client}.server"
    done
}
both_ways control lines control 0 0
# Replication and mirror legs. Client: a 32-byte HMAC answer, then the request line. Server:
# greeting and challenge (53 bytes), then replies; a mirror leg's binary messages follow.
both_ways replication lines replication-messages 32 53
both_ways mirror binary mirror-wire 32 53
for stream in full incremental compressed incremental-compressed; do
    python file "$CORPUS/send-stream" "$stream" "$WORKDIR/$stream.stream"
done
for stream in full incremental; do
    python file "$CORPUS/rbd-diff" "$stream" "$WORKDIR/$stream.rbd"
done
python pages "$CORPUS" "$STRATA_POOL/pool.strata"

# qcow2 images with 512-byte clusters, so each is a few KiB.
cd "$WORKDIR"
qemu-img create -q -f qcow2 -o cluster_size=512 v3-empty.qcow2 1M
qemu-img create -q -f qcow2 -o cluster_size=512,compat=0.10 v2-empty.qcow2 1M
cp v3-empty.qcow2 v3-written.qcow2
qemu-io -f qcow2 -c 'write -P 0x61 0 4096' -c 'write -z 8192 4096' -c 'write -P 0x62 520192 1024' v3-written.qcow2 >/dev/null
head -c 8192 /dev/urandom >random.raw
truncate -s 64K backing.raw
qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=4096 random.raw compressed.qcow2
qemu-img create -q -f qcow2 -o cluster_size=512 -b backing.raw -F raw overlay.qcow2 64K
qemu-io -f qcow2 -c 'write -P 0x63 1024 512' overlay.qcow2 >/dev/null
for image in v3-empty v2-empty v3-written compressed overlay; do
    python file "$CORPUS/qcow2" "$image" "$WORKDIR/$image.qcow2"
done
cd "$ROOT"

# Manifests: push two snapshots to a real OpenStack Swift and read the manifests back.
OBJECTSTORE=$WORKDIR/objectstore
trap 'scripts/objectstore.sh destroy "$OBJECTSTORE" >/dev/null 2>&1; cleanup' EXIT
scripts/objectstore.sh start "$OBJECTSTORE" >/dev/null || fail "the object store did not start"
set -a
source "$OBJECTSTORE/objectstore.env"
set +a
printf '%s' "$STRATA_SWIFT_KEY" >"$WORKDIR/swift.key"
strata remote add fuzz --swift "$STRATA_SWIFT_AUTH_URL" --user "$STRATA_SWIFT_USER" --key-file "$WORKDIR/swift.key" \
    --container fuzz-corpus --create >/dev/null
strata push vm1@s1 fuzz >/dev/null
strata push vm1@s2 fuzz >/dev/null
for snapshot in s1 s2; do
    (cd "$WORKDIR" && swift.openstack download fuzz-corpus "manifests/vm1/$snapshot" -o "manifest-$snapshot" >/dev/null) ||
        fail "cannot read back the manifest of vm1@$snapshot"
    python file "$CORPUS/manifest" "$snapshot" "$WORKDIR/manifest-$snapshot"
done

for target in "$CORPUS"/*/; do
    echo "$(basename "$target"): $(find "$target" -type f | wc -l) seeds, $(du -sk "$target" | cut -f1) KiB"
done
