#!/usr/bin/env bash
# Install the host tools `make e2e` / `make deb` need, from Debian's packages, when missing.
# Idempotent; prints what it installs. Usage: setup-host.sh [e2e|deb|schema]...
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
want=()
need() { # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] || want+=("$2")
}
updated=
apt_install() {
    [ $# -gt 0 ] || return 0
    echo "setup-host: installing $*"
    [ -n "$updated" ] || { apt-get update -qq || true; updated=1; }
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
for what in "${@:-e2e deb schema}"; do
  for w in $what; do
    case "$w" in
      deb)    need dpkg-deb dpkg; need lintian lintian; need fakeroot fakeroot
              # make deb-test completes with the packaged script through bash-completion's loader.
              [ -f /usr/share/bash-completion/bash_completion ] || want+=(bash-completion) ;;
      schema) need cloud-init cloud-init ;;
      e2e)    need mmdebstrap mmdebstrap; need mcopy mtools; need debugfs e2fsprogs; need socat socat
              need tinyproxy tinyproxy; need mkfs.vfat dosfstools; need qemu-img qemu-utils
              need cloud-init cloud-init ;;
      *) echo "setup-host: unknown group $w" >&2; exit 2 ;;
    esac
  done
done
had_cloud_init=$(command -v cloud-init || true)
apt_install "${want[@]}"
# cloud-init is only wanted for `cloud-init schema`: keep it from configuring this host at its next boot.
if [ -z "$had_cloud_init" ] && command -v cloud-init >/dev/null && [ ! -e /run/cloud-init ]; then
    mkdir -p /etc/cloud && touch /etc/cloud/cloud-init.disabled
fi
case " ${*:-e2e} " in *" e2e "*|*e2e*)
  if ! command -v qemu-system-x86_64 >/dev/null; then
    # qemu-system-x86 must come from the same suite as an installed qemu-utils (VM-NOTES).
    if dpkg-query -W -f '${Version}' qemu-utils 2>/dev/null | grep -q bpo; then
      if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "setup-host: adding bookworm-backports (qemu-utils came from there)"
        echo "deb http://deb.debian.org/debian bookworm-backports main" >/etc/apt/sources.list.d/arc-enroll-e2e-backports.list
        updated=
      fi
      [ -n "$updated" ] || { apt-get update -qq || true; updated=1; }
      echo "setup-host: installing qemu-system-x86 from bookworm-backports"
      apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
    else
      apt_install qemu-system-x86
    fi
  fi ;;
esac
