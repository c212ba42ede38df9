#!/usr/bin/env bash
# A real boot from the object store (issue 11, instant boot): a small Linux built from Debian's
# packages by make-boot-image.sh (the linux-image kernel, an initramfs with busybox and the
# virtio modules, and a 512 MiB ext4 root disk holding busybox, an init that prints a marker
# stored on that disk and powers off, and 96 MiB of files boot never reads; the rest never
# written) is written into a volume on one pool by qemu-img over NBD, snapshotted and pushed to
# the real Swift. On a fresh pool and a fresh daemon, `volume create --from … --hydrate off` makes a volume reading
# lazily through the remote snapshot, and qemu-system-x86_64 boots it over NBD as its virtio
# root disk (root=/dev/vda). The marker must appear on the serial console and the guest power
# off by itself; the objects fetched (distinct keys GET from the Swift proxy's access log) must
# be fewer than half the snapshot's objects (distinct keys of its manifest). Both counts are
# printed. The volume still reads through its remote base, and then reads whole equal to the
# image. KVM is used when /dev/kvm gives a console within 10 s, otherwise software emulation
# (TCG). `make-boot-image.sh --install` installs qemu-system-x86, busybox-static, cpio,
# e2fsprogs and linux-image-cloud-amd64 when missing.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/lib-objectstore.sh"
requires_objectstore
requires qemu-img

# What the boot needs from Debian, installed when missing (scripts/test.sh installs it first).
if ! out=$("$ROOT/tests/objectstore/make-boot-image.sh" --install 2>&1); then
    [ "${CI:-}" = "true" ] && fail "$out"
    echo "SKIP $TEST_NAME: $out" >&2
    exit 77
fi

# The image: 512 MiB, 64 objects of 8 MiB, most never written.
MARKER="strata-boot-$$-$RANDOM-$(date +%s%N)"
"$ROOT/tests/objectstore/make-boot-image.sh" "$WORKDIR/boot" "$MARKER" 512 96
if gzip -dc "$WORKDIR/boot/initrd.img" | grep -qaF "$MARKER"; then fail "the marker is in the initramfs, not only on the disk"; fi

# Into a volume of the source pool through its daemon: qemu-img writes only the image's data
# (it skips holes and zeros), then snapshot and push.
container=$(unique_container boot)
src pool init --size 1G >/dev/null
STRATA_POOL="$SOURCE" add_remote swift r1 "$container" --create >/dev/null
src volume create img --size 512M >/dev/null
STRATA_POOL="$SOURCE" start_daemon
qemu-img convert -n --target-is-zero -f raw -O raw "$WORKDIR/boot/root.img" "nbd://127.0.0.1:$PORT/img"
src snapshot create img@s1 >/dev/null
qemu-img compare -q -f raw -F raw "$WORKDIR/boot/root.img" "nbd://127.0.0.1:$PORT/img@s1" ||
    fail "the snapshot differs from the image"
src push img@s1 r1 >/dev/null
stop_daemon
forget "$DAEMON_PID"
total=$(store keys "$container" manifests/img/s1 | grep -c .)
[ "$total" -ge 13 ] || fail "the snapshot has $total objects in the store, expected the payload's 12 and metadata"

# The GETs of this container's objects in the proxy's access log after its first $logged lines
# (one path a line); `gets` counts them, `fetched` counts the distinct objects.
PROXY_LOG="$STRATA_OBJECTSTORE_DIR/log/proxy.log"
[ -f "$PROXY_LOG" ] || fail "no proxy log at $PROXY_LOG"
object_gets() { tail -n "+$((logged + 1))" "$PROXY_LOG" | grep -o "GET /v1/AUTH_test/$container/objects/[^ ?]*" || true; }
gets() { object_gets | grep -c . || true; }
fetched() { object_gets | sort -u | grep -c . || true; }

# A fresh pool and daemon; the volume reads through the remote snapshot, never hydrated.
start_daemon
add_remote swift r1 "$container" >/dev/null
logged=$(wc -l <"$PROXY_LOG")
strata volume create vm --from r1:img@s1 --hydrate off >/dev/null
[ "$(gets)" = 0 ] || fail "volume create --from --hydrate off fetched $(gets) objects"

# boot ACCEL: boots the volume over NBD into $WORKDIR/console.log; status 0 when the guest
# powered off by itself, 2 when KVM printed nothing on the console within 10 s (killed), 1
# otherwise. Every attempt is limited to 150 s.
boot() {
    local accel=$1 qemu status=0 waited=0
    : >"$WORKDIR/console.log"
    qemu-system-x86_64 -machine "accel=$accel" -m 256 -smp 1 -nodefaults -display none -no-reboot \
        -monitor none -serial "file:$WORKDIR/console.log" \
        -kernel "$WORKDIR/boot/vmlinuz" -initrd "$WORKDIR/boot/initrd.img" \
        -append "root=/dev/vda ro console=ttyS0 panic=-1" \
        -drive "file=nbd://127.0.0.1:$PORT/vm,format=raw,if=virtio" >"$WORKDIR/qemu.log" 2>&1 &
    qemu=$!
    STRATA_PIDS+=("$qemu")
    while kill -0 "$qemu" 2>/dev/null; do
        if [ "$accel" = kvm ] && [ $waited -ge 10 ] && [ ! -s "$WORKDIR/console.log" ]; then status=2; break; fi
        [ $waited -ge 150 ] && { status=1; break; }
        sleep 1
        waited=$((waited + 1))
    done
    if [ $status -ne 0 ]; then
        kill -TERM "$qemu" 2>/dev/null || true
        sleep 2
        kill -9 "$qemu" 2>/dev/null || true
        wait "$qemu" 2>/dev/null || true
    else
        wait "$qemu" || status=1
    fi
    forget "$qemu"
    return $status
}
accel=tcg
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then accel=kvm; fi
status=0
boot "$accel" || status=$?
if [ $status -eq 2 ]; then
    echo "KVM gave no console output in 10 s; booting with TCG"
    accel=tcg
    status=0
    boot tcg || status=$?
fi
console_tail() { tail -25 "$WORKDIR/console.log"; cat "$WORKDIR/qemu.log"; }
[ $status -eq 0 ] || fail "the guest did not power off by itself ($accel):
$(console_tail)"
grep -qF "strata-boot-marker: $MARKER" "$WORKDIR/console.log" || fail "no marker on the console ($accel):
$(console_tail)"
grep -q "EXT4-fs (vda): mounted" "$WORKDIR/console.log" || fail "the kernel did not mount /dev/vda"

fetched=$(fetched)
echo "REPORT boot ($accel): $fetched of the snapshot's $total objects fetched ($(gets) GETs)"
[ "$fetched" -gt 0 ] || fail "the boot fetched no object: did it read the volume?"
[ $((fetched * 2)) -lt "$total" ] || fail "the boot fetched $fetched of $total objects, not fewer than half: $(object_gets | sort | uniq -c)"
# Still lazy: the volume reads through its remote base; read whole, it is the image.
strata volume layers vm | grep -q "r1:img@s1 .*remote" || fail "layers: $(strata volume layers vm)"
qemu-img compare -q -f raw -F raw "$WORKDIR/boot/root.img" "nbd://127.0.0.1:$PORT/vm" ||
    fail "after the boot the volume differs from the image"
stop_daemon
strata check >/dev/null
