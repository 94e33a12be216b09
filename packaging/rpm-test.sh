#!/usr/bin/env bash
# Inspect the .rpm files `make release` built (rpm -qip / -qlp / --qf, rpm2cpio), without a RHEL
# machine: name, version, arch, the exact file list with modes and owners, the unit in
# /usr/lib/systemd/system, a static binary of the package's arch, the fixed bash completion, the
# scriptlets; then install the x86_64 one into an empty rpm root and run it. rpmlint runs too,
# when installed (packaging/rpm/rpmlint.toml).
# Usage: packaging/rpm-test.sh RPM...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
[ $# -gt 0 ] || { echo "usage: $0 RPM..." >&2; exit 2; }
rpms=()
for f in "$@"; do rpms+=("$(realpath "$f")"); done
set -- "${rpms[@]}"
fail() { echo "rpm-test: $rpm: $*" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Every path in the package with its mode and owner (directories the package owns included).
expected_files() {
  cat <<EOF
-rwxr-xr-x root root /usr/bin/arc-enroll
drwxr-xr-x root root /usr/share/doc/arc-enroll
drwxr-xr-x root root /usr/share/doc/arc-enroll/examples
-rw-r--r-- root root /usr/share/doc/arc-enroll/examples/config.json
$(for f in "$repo"/examples/*.yaml; do echo "-rw-r--r-- root root /usr/share/doc/arc-enroll/examples/$(basename "$f")"; done)
-rw-r--r-- root root /usr/lib/systemd/system-preset/80-arc-enroll.preset
-rw-r--r-- root root /usr/lib/systemd/system/arc-enroll.service
-rw-r--r-- root root /usr/share/bash-completion/completions/arc-enroll
drwxr-xr-x root root /usr/share/fish
drwxr-xr-x root root /usr/share/fish/vendor_completions.d
-rw-r--r-- root root /usr/share/fish/vendor_completions.d/arc-enroll.fish
-rw-r--r-- root root /usr/share/licenses/arc-enroll/LICENSE
-rw-r--r-- root root /usr/share/man/man1/arc-enroll.1.gz
drwxr-xr-x root root /usr/share/zsh
drwxr-xr-x root root /usr/share/zsh/site-functions
-rw-r--r-- root root /usr/share/zsh/site-functions/_arc-enroll
EOF
}

for rpm in "$@"; do
  arch=$(rpm -qp --qf '%{ARCH}' "$rpm" 2>/dev/null)
  case $arch in x86_64) machine=003e ;; aarch64) machine=00b7 ;; *) fail "unexpected arch '$arch'" ;; esac
  [ "$(basename "$rpm")" = "arc-enroll-$version-1.$arch.rpm" ] || fail "file name is not arc-enroll-$version-1.$arch.rpm"
  info=$(rpm -qip "$rpm" 2>/dev/null)
  for want in "Name        : arc-enroll" "Version     : $version" "Release     : 1" "Architecture: $arch" "License     : MIT"; do
    grep -qxF "$want" <<<"$info" || fail "rpm -qip lacks '$want'"
  done
  [ "$(rpm -qp --qf '%{OS}' "$rpm" 2>/dev/null)" = linux ] || fail "OS is not linux"
  # The file list, exactly.
  diff <(expected_files | sort -k4) \
       <(rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILENAMES}\n]' "$rpm" 2>/dev/null | sort -k4) \
    || fail "file list, modes or owners differ (< expected, > in the package)"
  diff <(expected_files | awk '{print $4}' | sort) <(rpm -qlp "$rpm" 2>/dev/null | sort) >/dev/null \
    || fail "rpm -qlp differs from the expected list"
  rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm" 2>/dev/null | grep -qx 'l /usr/share/licenses/arc-enroll/LICENSE' \
    || fail "LICENSE is not marked %license"
  # Static: no shared-library dependencies; only /bin/sh for the scriptlets.
  reqs=$(rpm -qp --requires "$rpm" 2>/dev/null | grep -v '^rpmlib(' | sort -u | tr '\n' ' ')
  [ "$reqs" = "/bin/sh " ] || fail "unexpected requirements: $reqs"
  scripts=$(rpm -qp --scripts "$rpm" 2>/dev/null)
  grep -q 'systemctl --no-reload preset arc-enroll.service' <<<"$scripts" || fail "%post does not apply the preset"
  grep -q 'systemctl --no-reload disable arc-enroll.service' <<<"$scripts" || fail "%preun does not disable the unit"
  # The payload itself.
  x=$tmp/$arch && mkdir -p "$x"
  (cd "$x" && rpm2cpio "$rpm" | cpio -idm --quiet)
  [ "$(od -An -tx2 -j18 -N2 "$x/usr/bin/arc-enroll" | tr -d ' ')" = $machine ] || fail "/usr/bin/arc-enroll is not an $arch binary"
  if command -v readelf >/dev/null && readelf -l "$x/usr/bin/arc-enroll" | grep -q INTERP; then fail "/usr/bin/arc-enroll is not static"; fi
  cmp -s "$x/usr/lib/systemd/system/arc-enroll.service" "$repo/cloud-init/arc-enroll.service" || fail "the unit is not cloud-init/arc-enroll.service"
  grep -qx 'enable arc-enroll.service' "$x/usr/lib/systemd/system-preset/80-arc-enroll.preset" || fail "preset does not enable the unit"
  zcat "$x/usr/share/man/man1/arc-enroll.1.gz" | grep -q '^\.TH arc-enroll' || fail "man page is not arc-enroll(1)"
  grep -q '^        arc__enroll__subcmd__connect)$' "$x/usr/share/bash-completion/completions/arc-enroll" \
    || fail "bash completion lacks the fixed connect case label (clap-rs/clap#6421)"
  grep -q 'MIT\|Permission is hereby granted' "$x/usr/share/licenses/arc-enroll/LICENSE" || fail "LICENSE is not the MIT text"
  echo "rpm-test: $rpm: $arch, $(rpm -qlp "$rpm" 2>/dev/null | wc -l) paths, modes/owners/unit path/static binary/completion ok"
  # Install into an empty rpm root (no scriptlets: there is no shell in it) and run the binary.
  if [ "$arch" = x86_64 ] && [ "$(uname -m)" = x86_64 ]; then
    r=$tmp/root && mkdir -p "$r"
    rpm --root "$r" --dbpath /var/lib/rpm --initdb
    rpm --root "$r" --dbpath /var/lib/rpm -i --nodeps --noscripts "$rpm" 2>&1 | grep -v -e "use Alien" -e "what you are doing" || true
    [ "$(rpm --root "$r" --dbpath /var/lib/rpm -q arc-enroll)" = "arc-enroll-$version-1.x86_64" ] || fail "not registered in the rpm database"
    rpm --root "$r" --dbpath /var/lib/rpm -V --nodeps arc-enroll || fail "rpm -V after install"
    "$r/usr/bin/arc-enroll" --version | grep -q "$version" || fail "installed binary does not run"
    rpm --root "$r" --dbpath /var/lib/rpm -e --nodeps --noscripts arc-enroll 2>&1 | grep -v -e "use Alien" -e "what you are doing" || true
    left=$(find "$r" -path "$r/var/lib/rpm" -prune -o -type f -print | head -5)
    [ -z "$left" ] || fail "files left after rpm -e: $left"
    echo "rpm-test: $rpm: installed into an empty rpm root, rpm -V clean, --version ran, erased cleanly"
  fi
done
if command -v rpmlint >/dev/null; then
  rpmlint -c "$here/rpm/rpmlint.toml" "$@"
else
  echo "rpm-test: rpmlint is not installed: not run (apt-get install rpmlint)"
fi
echo "rpm-test: ok ($# packages)"
