#!/usr/bin/env bash
# Build OUT_DIR/arc-enroll_<version>_<arch>.deb with dpkg-deb from a release binary and the
# man page and completions that `cargo run --example gen-assets` generated from the clap definitions.
# Used by `make deb` (amd64) and `make release` (amd64 and arm64).
# Usage: packaging/build-deb.sh BINARY ASSETS_DIR OUT_DIR [ARCH]   (ARCH: amd64 (default) or arm64)
set -euo pipefail
bin=$1 assets=$2 out=$3 arch=${4:-amd64}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
case $arch in amd64 | arm64) ;; *) echo "$0: ARCH must be amd64 or arm64, not $arch" >&2; exit 2 ;; esac
# The binary must be for ARCH (ELF e_machine: 0x3e x86-64, 0xb7 aarch64).
machine=$(od -An -tx2 -j18 -N2 "$bin" | tr -d ' ')
case $arch:$machine in amd64:003e | arm64:00b7) ;; *) echo "$0: $bin is not an $arch binary (e_machine $machine)" >&2; exit 2 ;; esac
# Reproducible: file times clamped to the commit's time (dpkg-deb honours SOURCE_DATE_EPOCH).
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
export SOURCE_DATE_EPOCH
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
umask 022
install -D -m 0755 "$bin" "$root/usr/bin/arc-enroll"
install -D -m 0644 "$repo/cloud-init/arc-enroll.service" "$root/lib/systemd/system/arc-enroll.service"
install -D -m 0644 "$here/config.example.json" "$root/usr/share/doc/arc-enroll/examples/config.json"
for f in "$repo"/examples/*.yaml; do
  install -m 0644 "$f" "$root/usr/share/doc/arc-enroll/examples/"
done
install -D -m 0644 "$here/debian/copyright" "$root/usr/share/doc/arc-enroll/copyright"
install -d "$root/usr/share/man/man1"
gzip -9n <"$assets/arc-enroll.1" >"$root/usr/share/man/man1/arc-enroll.1.gz"
chmod 0644 "$root/usr/share/man/man1/arc-enroll.1.gz"
install -D -m 0644 "$assets/arc-enroll.bash" "$root/usr/share/bash-completion/completions/arc-enroll"
install -D -m 0644 "$assets/_arc-enroll" "$root/usr/share/zsh/vendor-completions/_arc-enroll"
install -D -m 0644 "$assets/arc-enroll.fish" "$root/usr/share/fish/vendor_completions.d/arc-enroll.fish"
install -d "$root/DEBIAN"
install -m 0755 "$here/debian/postinst" "$here/debian/postrm" "$root/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@SIZE@/$size/" -e "s/@ARCH@/$arch/" "$here/debian/control.in" >"$root/DEBIAN/control"
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"
mkdir -p "$out"
deb="$out/arc-enroll_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
