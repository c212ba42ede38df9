#!/usr/bin/env bash
# `strata overlay FILE`: one command creates a volume over a qcow2 image in the pool (made on
# first start), serves it and prints its NBD URI and iSCSI URI; a client reads the image and
# writes through the printed URI at once. Run again, the same command reuses the volume with
# its writes; `strata serve --overlay` with --overlay-name serves a second overlay of the same
# file under another name; the image file is never written.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/layers-lib.sh"
requires qemu-img qemu-io nbdinfo /usr/bin/python3

cd "$WORKDIR"
make_base_raw cloud.raw 32M
qemu-img convert -q -O qcow2 cloud.raw "cloud image.qcow2"
before=$(fingerprint "cloud image.qcow2")

# run_overlay ARGS...: starts `strata ARGS` in the background and waits for its URIs on stdout.
run_overlay() {
    PORT=$(free_port)
    ISCSI_PORT=$(free_port)
    # Emptied here, not only by the daemon's redirection: that happens in the child, and a check
    # made before it would read the previous run's URIs, then find the file emptied.
    : >overlay.out
    "$STRATA" "$@" --nbd "127.0.0.1:$PORT" --iscsi "127.0.0.1:$ISCSI_PORT" --http off >overlay.out 2>>"$WORKDIR/daemon.log" &
    DAEMON_PID=$!
    STRATA_PIDS+=("$DAEMON_PID")
    # Up to 60 s: on a loaded machine a debug build takes a while to open the pool and fingerprint the image.
    for _ in $(seq 1 1200); do
        [ "$(wc -l <overlay.out)" -ge 2 ] && break
        kill -0 "$DAEMON_PID" 2>/dev/null || fail "strata $* exited: $(tail -5 "$WORKDIR/daemon.log")"
        sleep 0.05
    done
    [ "$(wc -l <overlay.out)" -ge 2 ] || fail "strata $* printed no URIs within 60 s: $(cat overlay.out)"
    NBD_URI=$(sed -n 1p overlay.out)
    ISCSI_URI=$(sed -n 2p overlay.out)
}

run_overlay overlay "cloud image.qcow2"
[ "$NBD_URI" = "nbd://127.0.0.1:$PORT/cloud-image" ] || fail "overlay printed '$NBD_URI'"
[ "$ISCSI_URI" = "iscsi://127.0.0.1:$ISCSI_PORT/iqn.2026-11.org.strata:cloud-image/0" ] || fail "overlay printed '$ISCSI_URI'"
same_bytes cloud.raw "$NBD_URI" "a fresh overlay over NBD"
same_bytes cloud.raw "$ISCSI_URI" "a fresh overlay over iSCSI"
qemu-io -f raw -c "write -P 0x99 4M 1M" "$NBD_URI" >/dev/null || fail "write through the overlay"
qemu-io -f raw -c "write -P 0x99 4M 1M" cloud.raw >/dev/null
stop_daemon

run_overlay overlay "cloud image.qcow2"
same_bytes cloud.raw "$NBD_URI" "the reused overlay keeps its writes"
grep -q "reusing volume cloud-image" "$WORKDIR/daemon.log" || fail "the second run did not reuse the volume"
stop_daemon

run_overlay serve --overlay "cloud image.qcow2" --overlay-name second
[ "$NBD_URI" = "nbd://127.0.0.1:$PORT/second" ] || fail "serve --overlay printed '$NBD_URI'"
nbdinfo --list "nbd://127.0.0.1:$PORT" | grep -q '^export="cloud-image":' || fail "the first overlay is not served"
qemu-img compare -q -f raw -F qcow2 "$NBD_URI" "cloud image.qcow2" || fail "the second overlay differs from the image"
stop_daemon
[ "$(fingerprint "cloud image.qcow2")" = "$before" ] || fail "the image file was written"
[ "$(strata volume list --json | /usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 2 ] \
    || fail "expected two overlay volumes: $(strata volume list)"
echo "REPORT overlay: created, served, reused with its writes; serve --overlay with a name"
