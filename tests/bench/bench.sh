#!/usr/bin/env bash
# `make bench`: writes BENCHMARKS.md with numbers from this machine, measured side by side in one run:
#  - the release binary's size;
#  - wall time (hyperfine, many runs) and peak RSS (/usr/bin/time) of bare `curl` of the IMDS token
#    URL, `arc-enroll token` and a full `arc-enroll connect`, all against the same fake IMDS (and
#    the fake agent), with ratios to curl;
#  - time to token after IMDS turns from 410 to 200 (fake-imds --gone-for);
#  - the seed flow's Azure CLI path: `pip install azure-cli` into a cached venv (size, install time),
#    `az login --identity` + `az account get-access-token` against the same fake IMDS.
# Loopback only (pip reaches PyPI once, to build the cached venv).
set -euo pipefail
OUT=${1:-BENCHMARKS.md}
BIN=${ARC_ENROLL_BIN:-target/x86_64-unknown-linux-musl/release/arc-enroll}
FAKES=${FAKES:-target/debug}
RUNS=${BENCH_RUNS:-200}
CACHE=${ARC_ENROLL_BENCH_CACHE:-/var/cache/arc-enroll-bench}
BIN=$(realpath "$BIN"); FAKES=$(realpath "$FAKES")

need() { command -v "$1" >/dev/null || { echo "installing $2"; (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"; }; }
need hyperfine hyperfine
need curl curl
[ -x /usr/bin/time ] || need time time
need python3 python3

work=$(mktemp -d /tmp/arc-enroll-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

start_imds() { # name, extra args... -> sets URL and LAST_PID (not in a subshell: pids must stick)
  local name=$1; shift
  rm -f "$work/$name.port"
  "$FAKES/fake-imds" --listen 127.0.0.1:0 --port-file "$work/$name.port" --quiet "$@" > /dev/null 2>&1 &
  LAST_PID=$!
  pids+=("$LAST_PID")
  for _ in $(seq 200); do [ -s "$work/$name.port" ] && break; sleep 0.02; done
  URL="http://127.0.0.1:$(cat "$work/$name.port")"
}

# One pretend machine.
mkdir -p "$work/sysroot/sys/class/dmi/id" "$work/sysroot/etc" "$work/agent"
echo "4c4c4544-0051-3010-8052-b4c04f4e4b32" > "$work/sysroot/sys/class/dmi/id/product_uuid"
echo "0123456789abcdef0123456789abcdef" > "$work/sysroot/etc/machine-id"
echo "bench-vm-01" > "$work/sysroot/etc/hostname"

start_imds imds --no-token-jitter; IMDS=$URL
TOKEN_URL="$IMDS/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F"
export ARC_ENROLL_IMDS_ENDPOINT="$IMDS" ARC_ENROLL_CONFIG="" ARC_ENROLL_SYSROOT="$work/sysroot"
export ARC_ENROLL_STATE_DIR="$work/state" ARC_ENROLL_ARM_ENDPOINT="https://127.0.0.1:9"
export ARC_ENROLL_AZCMAGENT="$FAKES/fake-azcmagent" FAKE_AZCMAGENT_DIR="$work/agent"
export FAKE_AZCMAGENT_SYSROOT="$work/sysroot" FAKE_AZURE_DIR="$work/azure" RUST_LOG=warn
# --location: one IMDS request per run, like curl (otherwise instance metadata is read too).
CURL_CMD="curl -sS -o /dev/null -H Metadata:true '$TOKEN_URL'"
TOKEN_CMD="'$BIN' token --location eastus -q"
CONNECT_CMD="'$BIN' connect --location eastus -q"
RESET="rm -rf '$work/state' '$work/agent' '$work/azure' && mkdir -p '$work/agent'"

echo "== sanity"
eval "$CURL_CMD" && eval "$TOKEN_CMD" > /dev/null && eval "$RESET" && eval "$CONNECT_CMD" > /dev/null
echo "== hyperfine ($RUNS runs each)"
hyperfine -N --warmup 10 --runs "$RUNS" --export-json "$work/hf.json" \
  -n curl "$CURL_CMD" -n token "$TOKEN_CMD" > "$work/hf.txt" 2>&1 || { cat "$work/hf.txt"; exit 1; }
hyperfine --warmup 3 --runs "$((RUNS / 4))" --prepare "$RESET" --export-json "$work/hf-connect.json" \
  -n connect "$CONNECT_CMD" > "$work/hf-connect.txt" 2>&1 || { cat "$work/hf-connect.txt"; exit 1; }
# The same shell-spawn cost for a baseline under --prepare: curl through sh too.
hyperfine --warmup 3 --runs "$((RUNS / 4))" --prepare "$RESET" --export-json "$work/hf-curl-sh.json" \
  -n curl-sh "$CURL_CMD" > /dev/null 2>&1

echo "== peak RSS (/usr/bin/time, 20 runs each, median)"
rss() { # name, command
  local f="$work/rss-$1"; : > "$f"
  for _ in $(seq 20); do
    [ "$1" = connect ] && eval "$RESET"
    eval "/usr/bin/time -f %M -a -o '$f' $2" > /dev/null 2>&1
  done
  sort -n "$f" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
RSS_CURL=$(rss curl "$CURL_CMD"); RSS_TOKEN=$(rss token "$TOKEN_CMD"); RSS_CONNECT=$(rss connect "$CONNECT_CMD")
RSS_AGENT=$(eval "$RESET"; /usr/bin/time -f %M "$FAKES/fake-azcmagent" version 2>&1 >/dev/null | tail -1)

echo "== time to token after IMDS turns from 410 to 200"
GONE=${BENCH_GONE_SECS:-8}
recov=()
for i in 1 2 3 4 5; do
  t0=$(date +%s.%N)
  start_imds gone --gone-for "$GONE"
  "$BIN" token --location eastus -q --imds-endpoint "$URL" > /dev/null 2>&1
  t1=$(date +%s.%N)
  kill "$LAST_PID" 2>/dev/null || true
  # IMDS started (at the latest) at t0 and turned 200 GONE seconds later.
  recov+=("$(python3 -c "print(f'{$t1 - $t0 - $GONE:.2f}')")")
done

echo "== Azure CLI (venv cached in $CACHE)"
mkdir -p "$CACHE"
AZ_NOTE=""
if [ ! -x "$CACHE/venv/bin/az" ]; then
  rm -rf "$CACHE/venv"
  python3 -m venv "$CACHE/venv"
  s=$(date +%s.%N)
  "$CACHE/venv/bin/pip" install -q azure-cli > "$CACHE/pip.log" 2>&1
  e=$(date +%s.%N)
  echo "$s $e" > "$CACHE/install-time.txt"
fi
read -r s e < "$CACHE/install-time.txt"
AZ_INSTALL_SECS=$(python3 -c "print(f'{$e - $s:.0f}')")
AZ_INSTALL_WHEN=$(date -u -d "@${s%.*}" +%Y-%m-%dT%H:%MZ)
AZ_SIZE=$(du -sm "$CACHE/venv" | cut -f1)
AZ_VERSION=$("$CACHE/venv/bin/pip" show azure-cli 2>/dev/null | awk '/^Version/ {print $2}')
MSAL_VERSION=$("$CACHE/venv/bin/pip" show msal 2>/dev/null | awk '/^Version/ {print $2}')
# MSAL Python builds the VM IMDS URL from AZURE_POD_IDENTITY_AUTHORITY_HOST (default
# http://169.254.169.254) + /metadata/identity/oauth2/token; show the line we rely on.
MSAL_LINE=$(grep -rn "AZURE_POD_IDENTITY_AUTHORITY_HOST" "$CACHE"/venv/lib/python3*/site-packages/msal/managed_identity.py | head -1 | sed 's/^[^:]*:\([0-9]*\):/line \1: /; s/^ *//')
export AZURE_CONFIG_DIR="$work/azcfg" AZURE_CORE_COLLECT_TELEMETRY=false AZURE_CORE_ONLY_SHOW_ERRORS=true
export AZURE_POD_IDENTITY_AUTHORITY_HOST="$IMDS"
# Nothing but loopback: everything az sends elsewhere (ARM, login.microsoftonline.com) goes to a
# closed loopback port and fails at once; the fake IMDS is on 127.0.0.1 and bypasses it.
AZ_ENV="HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 NO_PROXY=127.0.0.1,localhost"
AZ="$CACHE/venv/bin/az"
AZ_LOGIN_OUT=$(env $AZ_ENV "$AZ" login --identity --allow-no-subscriptions -o none 2>&1 | tail -3 || true)
AZ_LOGIN_RSS=$(env $AZ_ENV /usr/bin/time -f %M "$AZ" login --identity --allow-no-subscriptions -o none 2>&1 | tail -1 || true)
# `az login` could not save its profile (ARM is unreachable on purpose), so write the one it saves for
# a tenant-level system-assigned identity (azure/cli/core/_profile.py login_with_managed_identity).
TEN=$(curl -s -H Metadata:true "$TOKEN_URL" | python3 -c 'import sys,json,base64; t=json.load(sys.stdin)["access_token"].split(".")[1]; print(json.loads(base64.urlsafe_b64decode(t+"==="))["tid"])')
mkdir -p "$AZURE_CONFIG_DIR"
printf '{"subscriptions": [{"id": "%s", "name": "N/A(tenant level account)", "state": "Enabled", "tenantId": "%s", "isDefault": true, "environmentName": "AzureCloud", "user": {"name": "systemAssignedIdentity", "type": "servicePrincipal", "assignedIdentityInfo": "MSI"}}]}\n' "$TEN" "$TEN" > "$AZURE_CONFIG_DIR/azureProfile.json"
AZ_TOKEN_OUT=$(env $AZ_ENV "$AZ" account get-access-token --resource https://management.azure.com/ --query expiresOn -o tsv 2>&1 | tail -2 || true)
AZ_TOKEN_RSS=$(env $AZ_ENV /usr/bin/time -f %M "$AZ" account get-access-token --resource https://management.azure.com/ -o none 2>&1 | tail -1 || true)
hyperfine -N -i --warmup 1 --runs 10 --export-json "$work/hf-az.json" \
  -n "az login --identity" "env $AZ_ENV $AZ login --identity --allow-no-subscriptions -o none" \
  -n "az account get-access-token" "env $AZ_ENV $AZ account get-access-token --resource https://management.azure.com/ -o none" \
  > "$work/hf-az.txt" 2>&1 || { cat "$work/hf-az.txt"; AZ_NOTE="hyperfine over az failed (see above)"; }

echo "== writing $OUT"
export work RSS_CURL RSS_TOKEN RSS_CONNECT RSS_AGENT BIN RUNS GONE AZ_INSTALL_SECS AZ_INSTALL_WHEN AZ_SIZE \
  AZ_VERSION MSAL_VERSION MSAL_LINE AZ_LOGIN_OUT AZ_TOKEN_OUT AZ_LOGIN_RSS AZ_TOKEN_RSS AZ_NOTE
export RECOV="${recov[*]}" FLEET_MD=$( [ -f target/fleet.md ] && realpath target/fleet.md || echo "")
export FLEET_ARM_MD=$(for p in token relay; do [ -f target/fleet-arm-$p.md ] && realpath target/fleet-arm-$p.md; done | tr '\n' ' ')
python3 "$(dirname "$0")/report.py" > "$OUT"
cat "$OUT"
