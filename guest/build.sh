#!/bin/sh
# Build the test guest for the qemu driver from Debian's packages:
# the kernel of linux-image-cloud-amd64 and an initramfs holding
# busybox-static and the virtio modules the guest needs.
#
#   guest/build.sh [OUT_DIR]      (default: target/test-guest)
#
# Writes OUT_DIR/vmlinuz and OUT_DIR/initrd.img. The guest's init
# (guest/init) appends one record `SEQ UNIX_MS HOST_UUID VM_UUID` every
# 100 ms to its first virtio disk, the same evidence the sim driver's
# guests write. Needs: linux-image-cloud-amd64, busybox-static, cpio, gzip,
# file (and xz for kernels whose modules are compressed).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../target/test-guest}
kernel=$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n 1)
[ -n "$kernel" ] || { echo "guest/build.sh: no /boot/vmlinuz-*-cloud-amd64: install linux-image-cloud-amd64" >&2; exit 1; }
version=${kernel#/boot/vmlinuz-}
modules=/lib/modules/$version/kernel/drivers
busybox=$(command -v busybox || true)
[ -x /bin/busybox ] && busybox=/bin/busybox
[ -n "$busybox" ] && file -L "$busybox" 2>/dev/null | grep -q "statically linked" || {
    echo "guest/build.sh: no static busybox: install busybox-static" >&2; exit 1; }
for tool in cpio gzip; do
    command -v $tool >/dev/null || { echo "guest/build.sh: $tool is missing" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/bin" "$work/root/lib/modules" "$work/root/proc" "$work/root/sys" "$work/root/dev"
cp "$busybox" "$work/root/bin/busybox"
# In load order: the virtio core, the PCI transport, the block device,
# then the input events and the ACPI power button that ask it to stop, and
# QEMU's fw_cfg, which tells it the host it runs on.
for m in virtio/virtio_ring virtio/virtio virtio/virtio_pci_legacy_dev virtio/virtio_pci_modern_dev \
         virtio/virtio_pci block/virtio_blk input/evdev acpi/button firmware/qemu_fw_cfg; do
    src=$modules/$m.ko
    if [ -f "$src" ]; then
        cp "$src" "$work/root/lib/modules/"
    elif [ -f "$src.xz" ] && command -v xz >/dev/null; then
        xz -dc "$src.xz" > "$work/root/lib/modules/${m##*/}.ko"
    else
        echo "guest/build.sh: $src is missing" >&2; exit 1
    fi
done
cp "$here/init" "$work/root/init"
chmod 755 "$work/root/init"
mkdir -p "$out"
(cd "$work/root" && find . | cpio -o -H newc --quiet) | gzip -9 > "$out/initrd.img.tmp"
mv "$out/initrd.img.tmp" "$out/initrd.img"
cp "$kernel" "$out/vmlinuz"
echo "test guest: $out/vmlinuz (kernel $version), $out/initrd.img"
