#!/usr/bin/env bash
# The base VM image for `make e2e`, built with mmdebstrap from Debian's packages and cached outside
# the checkout, keyed by a hash of this recipe and the suite. Prints the cache directory, which
# holds rootfs.tar, vmlinuz and initrd.img.
# Usage: image.sh [SUITE [CACHE_ROOT]]   (SUITE: bookworm (default) or trixie;
#        CACHE_ROOT default $ARC_ENROLL_E2E_CACHE or /var/cache/arc-enroll-e2e)
set -euo pipefail
SUITE=${1:-bookworm}
cache_root=${2:-${ARC_ENROLL_E2E_CACHE:-/var/cache/arc-enroll-e2e}}
case $SUITE in bookworm | trixie) ;; *) echo "image.sh: SUITE must be bookworm or trixie, not $SUITE" >&2; exit 2 ;; esac
MIRROR=${ARC_ENROLL_E2E_MIRROR:-http://deb.debian.org/debian}
PACKAGES="systemd,systemd-sysv,udev,dbus,kmod,linux-image-cloud-amd64,initramfs-tools,cloud-init,iproute2,netbase,ca-certificates,curl,python3"
# Everything that shapes the image goes into the key.
key=$( { echo "$SUITE $MIRROR $PACKAGES"; sed -n '/^# ---- recipe ----/,$p' "$0"; } | sha256sum | cut -c1-16)
dir="$cache_root/base-$SUITE-$key"
if [ -s "$dir/rootfs.tar" ] && [ -s "$dir/vmlinuz" ] && [ -s "$dir/initrd.img" ]; then
  echo "image: cached $dir" >&2
  echo "$dir"; exit 0
fi
# ---- recipe ----
mkdir -p "$cache_root"
tmp=$(mktemp -d "$cache_root/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "image: building $dir with mmdebstrap ($SUITE: $PACKAGES)" >&2
# Small initramfs (virtio + ext4 only) for short TCG boots; networkd for cloud-init's network config;
# no timers or services the test does not need.
mmdebstrap --variant=apt --include="$PACKAGES" \
  --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d"; echo MODULES=list >"$1/etc/initramfs-tools/conf.d/e2e.conf"; printf "%s\n" virtio_pci virtio_blk virtio_net virtio_rng ext4 >>"$1/etc/initramfs-tools/modules"' \
  --customize-hook='mkdir -p "$1/etc/cloud/cloud.cfg.d"; printf "datasource_list: [ NoCloud, None ]\nsystem_info:\n  network:\n    renderers: [ networkd ]\n" >"$1/etc/cloud/cloud.cfg.d/90-e2e.cfg"' \
  --customize-hook='chroot "$1" systemctl enable systemd-networkd.service systemd-networkd-wait-online.service' \
  --customize-hook='chroot "$1" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer man-db.timer systemd-timesyncd.service getty@tty1.service >/dev/null 2>&1 || true' \
  --customize-hook='echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" >"$1/etc/fstab"; rm -f "$1/etc/hostname"; : >"$1/etc/machine-id"' \
  --customize-hook='cp -L "$1"/boot/vmlinuz-* "'"$tmp"'/vmlinuz"; cp -L "$1"/boot/initrd.img-* "'"$tmp"'/initrd.img"' \
  "$SUITE" "$tmp/rootfs.tar" "$MIRROR" >&2
mkdir -p "$dir"
mv "$tmp/rootfs.tar" "$tmp/vmlinuz" "$tmp/initrd.img" "$dir/"
echo "image: built in $(( $(date +%s) - start ))s: $(du -sh "$dir" | cut -f1)" >&2
echo "$dir"
