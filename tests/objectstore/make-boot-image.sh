#!/usr/bin/env bash
# tests/objectstore/make-boot-image.sh OUTDIR MARKER [SIZE_MIB [PAYLOAD_MIB]]: a small Linux
# that boots from a virtio disk, built from Debian's packages (linux-image-*, busybox-static,
# e2fsprogs, cpio), for test-boot.sh. Writes into OUTDIR:
#
#   vmlinuz     the newest installed Debian kernel (a link to /boot/vmlinuz-VERSION)
#   initrd.img  busybox and that kernel's virtio modules (virtio_pci, virtio_blk and their
#               dependencies, from modules.dep; none when built in); its /init loads them,
#               mounts the `root=` device read-only as ext4 and switch_roots to its /sbin/init
#   root.img    a raw disk of SIZE_MIB (default 512) holding an ext4 filesystem made with
#               `mkfs.ext4 -d`: busybox, /sbin/init (prints `strata-boot-marker: MARKER`, read
#               from /etc/strata-boot-marker, then powers off), and PAYLOAD_MIB (default 96) of
#               random data in 8 MiB files under /usr/share/strata-payload that boot never
#               reads (the rest of an installed system); everything else is never written
#
# The marker exists only in root.img, so seeing it on the console proves the root filesystem
# was read. Boot it with qemu-system-x86_64 -kernel OUTDIR/vmlinuz -initrd OUTDIR/initrd.img
# -append 'root=/dev/vda console=ttyS0' and the disk as if=virtio. Needs root (mknod of the
# initramfs's /dev/console).
#
# tests/objectstore/make-boot-image.sh --install: installs what building and booting need when
# missing (qemu-system-x86, busybox-static, cpio, e2fsprogs, linux-image-cloud-amd64;
# without Recommends), through apt-get as root or with sudo; scripts/test.sh runs it.
set -euo pipefail

die() { echo "make-boot-image: $*" >&2; exit 1; }
BUSYBOX=/bin/busybox

# newest_kernel: the newest VERSION with /boot/vmlinuz-VERSION and /lib/modules/VERSION/modules.dep.
newest_kernel() {
    local image version newest=
    for image in $(ls -v /boot/vmlinuz-* 2>/dev/null); do
        version=${image#/boot/vmlinuz-}
        [ -f "/lib/modules/$version/modules.dep" ] && newest=$version
    done
    echo "$newest"
}

# missing_packages: the Debian packages to install, one a line. A dynamically linked busybox
# cannot run in an initramfs without its libraries: busybox-static it must be.
missing_packages() {
    local pair
    for pair in qemu-system-x86_64:qemu-system-x86 cpio:cpio mkfs.ext4:e2fsprogs; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || echo "${pair#*:}"
    done
    if [ ! -x "$BUSYBOX" ] || ldd "$BUSYBOX" >/dev/null 2>&1; then echo busybox-static; fi
    [ -n "$(newest_kernel)" ] || echo linux-image-cloud-amd64
}

if [ "${1:-}" = --install ]; then
    mapfile -t need < <(missing_packages)
    [ ${#need[@]} -gt 0 ] || exit 0
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    echo "make-boot-image: installing ${need[*]}"
    $SUDO apt-get -q -o DPkg::Lock::Timeout=300 update >/dev/null &&
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 \
            --no-install-recommends "${need[@]}" >/dev/null || die "apt-get install ${need[*]} failed"
    mapfile -t need < <(missing_packages)
    [ ${#need[@]} -eq 0 ] || die "still missing after apt-get install: ${need[*]}"
    exit 0
fi

[ $# -ge 2 ] && [ $# -le 4 ] || die "usage: $0 OUTDIR MARKER [SIZE_MIB [PAYLOAD_MIB]] | $0 --install"
OUT=$1
MARKER=$2
SIZE_MIB=${3:-512}
PAYLOAD_MIB=${4:-96}
mapfile -t need < <(missing_packages)
[ ${#need[@]} -eq 0 ] || die "missing ${need[*]}: run $0 --install"
KVER=$(newest_kernel)
MODDIR=/lib/modules/$KVER

mkdir -p "$OUT"
STAGE=$(mktemp -d "$OUT/stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
ln -sfn "/boot/vmlinuz-$KVER" "$OUT/vmlinuz"

# --- the initramfs ---
INITRAMFS=$STAGE/initramfs
mkdir -p "$INITRAMFS"/{bin,dev,proc,sys,newroot,modules}
cp "$BUSYBOX" "$INITRAMFS/bin/busybox"
mknod -m 600 "$INITRAMFS/dev/console" c 5 1

# The modules to load, each after its dependencies (modules.dep lists a module's dependencies
# so that loading them from last to first works), decompressed so busybox's insmod takes them.
loaded=()
add_module() {
    local name=$1 line path deps dep i
    grep -qE "/$name\.ko(\.[a-z]+)?\$" "$MODDIR/modules.builtin" 2>/dev/null && return 0
    line=$(grep -E "(^|/)$name\.ko(\.[a-z]+)?:" "$MODDIR/modules.dep") || die "$KVER has no module $name"
    path=${line%%:*}
    for dep in "${loaded[@]:-}"; do [ "$dep" = "$path" ] && return 0; done
    read -r -a deps <<<"${line#*:}"
    for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
        dep=$(basename "${deps[i]}")
        add_module "${dep%%.ko*}"
    done
    local target=$INITRAMFS/modules/$(printf '%02d' ${#loaded[@]})-$(basename "${path%%.ko*}").ko
    case $path in
        *.ko) cp "$MODDIR/$path" "$target" ;;
        *.ko.xz) xz -dc "$MODDIR/$path" >"$target" ;;
        *.ko.zst) zstd -qdc "$MODDIR/$path" >"$target" ;;
        *.ko.gz) gzip -dc "$MODDIR/$path" >"$target" ;;
        *) die "cannot read module $path" ;;
    esac
    loaded+=("$path")
}
add_module virtio_pci
add_module virtio_blk

cat >"$INITRAMFS/init" <<'EOF'
#!/bin/busybox sh
# The boot test's initramfs: load the virtio modules, mount root= read-only, hand over to it.
/bin/busybox --install -s /bin
export PATH=/bin
halt() { echo "strata-boot: $*"; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in /modules/*.ko; do
    [ -e "$module" ] || continue
    insmod "$module" || halt "insmod $module failed"
done
root=
for arg in $(cat /proc/cmdline); do
    case $arg in root=*) root=${arg#root=} ;; esac
done
[ -n "$root" ] || halt "no root= on the kernel command line"
for i in $(seq 1 300); do
    [ -b "$root" ] && break
    sleep 0.1
done
[ -b "$root" ] || halt "$root did not appear"
mount -t ext4 -o ro "$root" /newroot || halt "cannot mount $root"
echo "strata-boot: mounted $root, starting its /sbin/init"
umount /proc /sys /dev
exec switch_root /newroot /sbin/init
EOF
chmod 755 "$INITRAMFS/init"
(cd "$INITRAMFS" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 >"$OUT/initrd.img"

# --- the root filesystem ---
ROOTFS=$STAGE/rootfs
mkdir -p "$ROOTFS"/{bin,sbin,etc,dev,proc,sys,usr/share/strata-payload}
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
ln -s busybox "$ROOTFS/bin/sh"
printf '%s\n' "$MARKER" >"$ROOTFS/etc/strata-boot-marker"
cat >"$ROOTFS/sbin/init" <<'EOF'
#!/bin/busybox sh
# PID 1 of the boot test's root filesystem: print the marker stored here, then power off.
/bin/busybox mount -t proc proc /proc
echo "strata-boot: init running from $(/bin/busybox awk '$2 == "/" { print $1 }' /proc/mounts)"
echo "strata-boot-marker: $(/bin/busybox cat /etc/strata-boot-marker)"
/bin/busybox poweroff -f
EOF
chmod 755 "$ROOTFS/sbin/init"
for i in $(seq 1 $((PAYLOAD_MIB / 8))); do
    head -c $((8 << 20)) /dev/urandom >"$ROOTFS/usr/share/strata-payload/part-$(printf '%03d' "$i")"
done
rm -f "$OUT/root.img"
truncate -s "${SIZE_MIB}M" "$OUT/root.img"
mkfs.ext4 -q -F -L strata-boot -d "$ROOTFS" "$OUT/root.img" >/dev/null ||
    die "mkfs.ext4 -d failed (e2fsprogs 1.43 or newer is needed)"
echo "make-boot-image: kernel $KVER, modules ${#loaded[@]}, root.img ${SIZE_MIB} MiB with ${PAYLOAD_MIB} MiB of payload"
