#!/usr/bin/env bash
# Build OUT_DIR/arc-enroll-<version>-1.<arch>.rpm with rpmbuild (packaging/rpm/arc-enroll.spec) from
# a release binary and the man page and completions that `cargo run --example gen-assets` made.
# Used by `make release` (x86_64 and aarch64). rpmbuild comes from Debian's `rpm` package.
# Usage: packaging/build-rpm.sh BINARY ASSETS_DIR OUT_DIR ARCH   (ARCH: x86_64 or aarch64)
set -euo pipefail
bin=$1 assets=$2 out=$3 arch=$4
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
case $arch in x86_64 | aarch64) ;; *) echo "$0: ARCH must be x86_64 or aarch64, not $arch" >&2; exit 2 ;; esac
# The binary must be for ARCH (ELF e_machine: 0x3e x86-64, 0xb7 aarch64).
machine=$(od -An -tx2 -j18 -N2 "$bin" | tr -d ' ')
case $arch:$machine in x86_64:003e | aarch64:00b7) ;; *) echo "$0: $bin is not an $arch binary (e_machine $machine)" >&2; exit 2 ;; esac
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
export SOURCE_DATE_EPOCH
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
top=$(mktemp -d)
trap 'rm -rf "$top"' EXIT
umask 022
src=$top/src
mkdir -p "$src/examples"
install -m 0755 "$bin" "$src/arc-enroll"
install -m 0644 "$repo/cloud-init/arc-enroll.service" "$here/rpm/80-arc-enroll.preset" "$src/"
install -m 0644 "$here/config.example.json" "$src/examples/config.json"
install -m 0644 "$repo"/examples/*.yaml "$src/examples/"
install -m 0644 "$assets/arc-enroll.bash" "$assets/_arc-enroll" "$assets/arc-enroll.fish" "$src/"
gzip -9n <"$assets/arc-enroll.1" >"$src/arc-enroll.1.gz"
# The license text, from the one copy in the Debian copyright file.
sed -n '/^License: MIT/,$p' "$here/debian/copyright" | tail -n +2 | sed -e 's/^ //' -e 's/^\.$//' >"$src/LICENSE"
rpmbuild -bb --quiet --target "$arch" \
  --define "_topdir $top" --define "srcdir $src" --define "pkg_version $version" \
  --define "use_source_date_epoch_as_buildtime 1" --define "clamp_mtime_to_source_date_epoch 1" \
  --define "_buildhost reproducible" \
  "$here/rpm/arc-enroll.spec" >"$top/rpmbuild.log" 2>&1 || { cat "$top/rpmbuild.log" >&2; exit 1; }
mkdir -p "$out"
rpm=$out/arc-enroll-$version-1.$arch.rpm
mv "$top/RPMS/$arch/arc-enroll-$version-1.$arch.rpm" "$rpm"
echo "$rpm"
