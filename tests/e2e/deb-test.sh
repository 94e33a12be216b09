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
# Bash completion for real: bash-completion's loader finds the packaged script by the command's
# name, and the completion function answers `arc-enroll connect --<TAB>` and value completions.
complete_words() { # complete_words WORD... -> one candidate per line, as bash would offer them
  bash --norc --noprofile -c '
    source /usr/share/bash-completion/bash_completion || exit 9
    _completion_loader arc-enroll  # returns 124 ("retry"); falls back to _minimal when nothing found
    fn=$(complete -p arc-enroll | sed -n "s/.*-F \([^ ]*\) .*/\1/p")
    [ -n "$fn" ] && [ "$fn" != _minimal ] || { echo "bash-completion found no script for arc-enroll" >&2; exit 8; }
    COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
    "$fn" arc-enroll "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}" 2>/dev/null
    printf "%s\n" "${COMPREPLY[@]}"' complete_words "$@"
}
expect_completion() { # expect_completion "EXPECTED (space-separated, in order)" WORD...
  local want=$1; shift
  local got; got=$(complete_words "$@" | grep -v '^$' | tr '\n' ' ' | sed 's/ $//')
  [ "$got" = "$want" ] || { echo "deb-test: completing '$*' gave '$got', want '$want'" >&2; exit 1; }
  echo "deb-test: completion '$*' -> $got"
}
opts=$(complete_words arc-enroll connect --)
for o in --clone-policy --cloud --proxy --no-proxy --install-agent --help; do
  grep -qx -- "$o" <<<"$opts" || { echo "deb-test: 'arc-enroll connect --<TAB>' lacks $o: $(echo $opts)" >&2; exit 1; }
done
echo "deb-test: completion 'arc-enroll connect --' -> $(wc -l <<<"$opts") options"
expect_completion "connect" arc-enroll con
expect_completion "--base64" arc-enroll user-data --ba
expect_completion "reconnect fail ignore" arc-enroll connect --clone-policy ""
expect_completion "AzureCloud AzureUSGovernment AzureChinaCloud Azure.Local" arc-enroll connect --cloud ""
# --token-source (workload identity federation) exists only once that feature is merged: its
# value completion is checked whenever `connect --help` lists the flag.
if arc-enroll connect --help | grep -q -- '--token-source'; then
  grep -qx -- --token-source <<<"$opts" || { echo "deb-test: 'connect --<TAB>' lacks --token-source" >&2; exit 1; }
  expect_completion "imds gcp aws file github" arc-enroll connect --token-source ""
else
  echo "deb-test: completion of --token-source not checked: this build's 'connect --help' has no --token-source"
fi
[ -L /etc/systemd/system/multi-user.target.wants/arc-enroll.service ] || { echo "deb-test: unit not enabled" >&2; exit 1; }
echo "deb-test: dpkg --purge $pkg"
dpkg --purge $pkg
trap - EXIT
for f in /usr/bin/arc-enroll /lib/systemd/system/arc-enroll.service /etc/systemd/system/multi-user.target.wants/arc-enroll.service; do
  [ ! -e "$f" ] && [ ! -L "$f" ] || { echo "deb-test: $f left behind after purge" >&2; exit 1; }
done
echo "deb-test: ok (installed, ran --version, purged cleanly)"
