#!/usr/bin/env bash
# `make demo`: a full enrollment on loopback, as cloud-init would run it on first boot.
# A fake IMDS answers 410 (updating) and 429 (throttled) before it gives a token; a fake ARM
# (HTTPS, its own test CA) says the identity's role is not there yet on the first look (a new
# role assignment still propagating); a fake azcmagent then connects.
# Nothing leaves this machine; no root needed.
set -euo pipefail
BIN=${ARC_ENROLL_BIN:-target/x86_64-unknown-linux-musl/release/arc-enroll}
FAKES=${FAKES:-target/debug}
work=$(mktemp -d /tmp/arc-enroll-demo.XXXXXX)
cleanup() {
  for p in ${imds_pid:-} ${arm_pid:-}; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# A pretend machine: its identity files live under a sysroot.
mkdir -p "$work/sysroot/sys/class/dmi/id" "$work/sysroot/etc" "$work/agent"
echo "4c4c4544-0051-3010-8052-b4c04f4e4b32" > "$work/sysroot/sys/class/dmi/id/product_uuid"
echo "0123456789abcdef0123456789abcdef" > "$work/sysroot/etc/machine-id"
echo "nexus-vm-01" > "$work/sysroot/etc/hostname"

"$FAKES/fake-imds" --listen 127.0.0.1:0 --port-file "$work/imds.port" --quiet \
  --script 410,410,429ra=1,200 --location westeurope --vm-name nexus-vm-01 > /dev/null &
imds_pid=$!
"$FAKES/fake-arm" --listen 127.0.0.1:0 --port-file "$work/arm.port" --ca-dir "$work/ca" \
  --azure-dir "$work/azure" --permissions-missing-polls 1 --quiet > /dev/null &
arm_pid=$!
for _ in $(seq 100); do [ -s "$work/imds.port" ] && [ -s "$work/arm.port" ] && break; sleep 0.1; done

export ARC_ENROLL_IMDS_ENDPOINT="http://127.0.0.1:$(cat "$work/imds.port")"
export ARC_ENROLL_AZCMAGENT="$FAKES/fake-azcmagent"
export ARC_ENROLL_SYSROOT="$work/sysroot" ARC_ENROLL_STATE_DIR="$work/state" ARC_ENROLL_CONFIG=""
export ARC_ENROLL_ARM_ENDPOINT="https://127.0.0.1:$(cat "$work/arm.port")" SSL_CERT_FILE="$work/ca/ca.pem"
export FAKE_AZCMAGENT_DIR="$work/agent" FAKE_AZCMAGENT_SYSROOT="$work/sysroot" FAKE_AZURE_DIR="$work/azure"
# The seed flow's variables work as they are (CONTRACT §2); the rest is derived from the token.
export RESOURCE_GROUP="rg-nexus-vms" NO_PROXY="169.254.169.254"

echo "== first boot: cloud-init runs 'arc-enroll' (everything below lands in /var/log/cloud-init-output.log)"
"$BIN" --resource-name '{hostname}-{vm_uuid8}' 2>&1
echo
echo "== second boot (or an operator re-runs it): nothing to do, Azure is not contacted"
"$BIN" --resource-name '{hostname}-{vm_uuid8}' 2>&1
echo
echo "== arc-enroll status"
"$BIN" status 2>&1
echo
echo "== what the fake agent was called with (the token went through a 0600 file, not argv)"
# (its whole inherited environment, "environ", is recorded for the tests' secret scanner; left out here)
grep '"connect"' "$work/agent/calls.jsonl" | sed -E 's/"access-token":"[^"]*"/"access-token":"<redacted by the demo>"/; s/,"environ":\{[^}]*\}//' | head -3
