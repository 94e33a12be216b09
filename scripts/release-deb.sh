#!/usr/bin/env bash
# Build OUTDIR/arc-enroll_<version>_<ARCH>.deb from a static release binary, with dpkg-deb only.
# Usage: scripts/release-deb.sh ARCH BINARY OUTDIR      (ARCH: amd64 | arm64)
#
# Minimal on purpose: the binary in /usr/bin, the systemd unit (cloud-init/arc-enroll.service when
# the repository has it, else a built-in oneshot unit), enabled on install. The fuller amd64
# packaging (`make deb`: man page, completions, examples) is being built separately; the two should
# be unified into one script taking ARCH.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 ARCH BINARY OUTDIR" >&2; exit 2; }
arch=$1 bin=$2 out=$3
case $arch in amd64 | arm64) ;; *) echo "$0: ARCH must be amd64 or arm64, not $arch" >&2; exit 2 ;; esac
# The binary must be for ARCH (ELF e_machine: 0x3e x86-64, 0xb7 aarch64).
machine=$(od -An -tx2 -j18 -N2 "$bin" | tr -d ' ')
case $arch:$machine in amd64:003e | arm64:00b7) ;; *) echo "$0: $bin is not an $arch binary (e_machine $machine)" >&2; exit 2 ;; esac
repo=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
# Reproducible: file times clamped to the commit's time (dpkg-deb honours SOURCE_DATE_EPOCH).
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
export SOURCE_DATE_EPOCH

root=$(mktemp -d)
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT
umask 022
install -D -m 0755 "$bin" "$root/usr/bin/arc-enroll"
unit="$root/lib/systemd/system/arc-enroll.service"
if [ -f "$repo/cloud-init/arc-enroll.service" ]; then
  install -D -m 0644 "$repo/cloud-init/arc-enroll.service" "$unit"
else
  install -d "$(dirname "$unit")"
  cat >"$unit" <<'UNIT'
# Enroll this machine into Azure Arc with its managed identity (idempotent: an enrolled machine
# exits at once). Runs only once /etc/arc-enroll/config.json exists.
[Unit]
Description=Enroll this machine into Azure Arc (arc-enroll)
Wants=network-online.target
After=network-online.target cloud-init.service
ConditionPathExists=/etc/arc-enroll/config.json

[Service]
Type=oneshot
ExecStart=/usr/bin/arc-enroll connect
RemainAfterExit=yes
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
UNIT
  chmod 0644 "$unit"
fi

install -d "$root/DEBIAN"
size=$(du -sk "$root/usr" "$root/lib" | awk '{s += $1} END {print s}')
cat >"$root/DEBIAN/control" <<CONTROL
Package: arc-enroll
Version: $version
Architecture: $arch
Maintainer: arc-enroll maintainers <arc-enroll@localhost>
Installed-Size: $size
Section: admin
Priority: optional
Description: Enroll this Linux machine into Azure Arc with its managed identity
 A static binary that connects the machine to Azure Arc with azcmagent, using the
 VM's managed identity from IMDS; cloud-init or the bundled systemd unit runs it on boot.
CONTROL
cat >"$root/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" = configure ]; then
  # Enabled, not started: the unit waits for /etc/arc-enroll/config.json and runs on next boot.
  systemctl enable arc-enroll.service >/dev/null 2>&1 || true
fi
SCRIPT
cat >"$root/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = remove ]; then
  systemctl disable arc-enroll.service >/dev/null 2>&1 || true
fi
SCRIPT
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm"
(cd "$root" && find usr lib -type f -print0 | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb="$out/arc-enroll_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
