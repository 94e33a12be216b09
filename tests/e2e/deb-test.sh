#!/usr/bin/env bash
# Install the .deb on this machine, check what it put where, run it, purge it.
set -euo pipefail
deb=$1
pkg=arc-enroll
if dpkg-query -W -f '${Status}' $pkg 2>/dev/null | grep -q installed; then
  echo "deb-test: $pkg is already installed here; refusing to touch it" >&2; exit 1
fi
cleanup() { dpkg --purge $pkg >/dev/null 2>&1 || true; }
trap cleanup EXIT
echo "deb-test: dpkg -i $deb"
dpkg -i "$deb"
/usr/bin/arc-enroll --version
for f in /usr/bin/arc-enroll /lib/systemd/system/arc-enroll.service \
         /usr/share/doc/arc-enroll/examples/config.json /usr/share/man/man1/arc-enroll.1.gz \
         /usr/share/bash-completion/completions/arc-enroll /usr/share/zsh/vendor-completions/_arc-enroll \
         /usr/share/fish/vendor_completions.d/arc-enroll.fish; do
  [ -e "$f" ] || { echo "deb-test: $f is missing" >&2; exit 1; }
done
# The example config is valid (unknown keys or bad values would exit 2).
arc-enroll proxy --config /usr/share/doc/arc-enroll/examples/config.json https://management.azure.com/
man -l /usr/share/man/man1/arc-enroll.1.gz >/dev/null 2>&1 || zcat /usr/share/man/man1/arc-enroll.1.gz | grep -q '^.TH arc-enroll'
bash -c 'source /usr/share/bash-completion/completions/arc-enroll && complete -p arc-enroll' >/dev/null
[ -L /etc/systemd/system/multi-user.target.wants/arc-enroll.service ] || { echo "deb-test: unit not enabled" >&2; exit 1; }
echo "deb-test: dpkg --purge $pkg"
dpkg --purge $pkg
trap - EXIT
for f in /usr/bin/arc-enroll /lib/systemd/system/arc-enroll.service /etc/systemd/system/multi-user.target.wants/arc-enroll.service; do
  [ ! -e "$f" ] && [ ! -L "$f" ] || { echo "deb-test: $f left behind after purge" >&2; exit 1; }
done
echo "deb-test: ok (installed, ran --version, purged cleanly)"
