#!/usr/bin/env bash
# make e2e: boot a real Debian VM under QEMU (TCG) with cloud-init, the arc-enroll .deb and a fake
# azcmagent; IMDS is a host fake-imds reached at 169.254.169.254 (guestfwd), the only other
# destination is a host tinyproxy at 169.254.169.5:3128 that lets nothing out but logs every
# request. Assert the VM enrolled once, IMDS direct, Azure traffic through the proxy. Then boot two
# clones of the powered-off disk with new SMBIOS UUIDs and NoCloud instance-ids (one keeping the
# parent's /etc/machine-id, one with it emptied as the golden-image recipe does) and assert each
# disconnected locally and enrolled under its own name, the parent's resource left alone; then a
# VM from the golden image one clone made. One Debian suite per run (tests/e2e/suites.sh runs
# several in parallel: `make e2e` boots bookworm and trixie).
#
# Each scenario is one function (scenario_NAME) run in the order of ARC_ENROLL_E2E_SCENARIOS; a
# scenario may use the disks of the ones before it (clones copy the parent's, golden a clone's).
#
# The relay scenario boots a fresh copy of the image as a Nexus VM enrolling through Private Relay
# (--private-relay): a host fake ARM (HybridCompute PUT, NetworkCloud assignRelay as a long-running
# operation) reachable only through the same tinyproxy, its CA trusted through cloud-init's
# ca_certs; the guest's fake agent reads the pre-created machine back through its proxy.url.
#
# Usage: run.sh [--suite bookworm|trixie] --deb DEB --fake-agent BIN --fake-imds BIN --arc-enroll BIN
#               [--fake-arm BIN]
# Env: ARC_ENROLL_E2E_CACHE (image cache, default /var/cache/arc-enroll-e2e),
#      ARC_ENROLL_E2E_KEEP=1 (keep the work dir), ARC_ENROLL_E2E_BOOT_TIMEOUT (seconds, default 900),
#      ARC_ENROLL_E2E_SCENARIOS (default "parent clones golden relay").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
SUITE=bookworm
while [ $# -gt 0 ]; do
  case "$1" in
    --suite) SUITE=$2; shift 2 ;;
    --deb) DEB=$(realpath "$2"); shift 2 ;;
    --fake-agent) FAKE_AGENT=$(realpath "$2"); shift 2 ;;
    --fake-imds) FAKE_IMDS=$(realpath "$2"); shift 2 ;;
    --fake-arm) FAKE_ARM=$(realpath "$2"); shift 2 ;;
    --arc-enroll) ARC_ENROLL=$(realpath "$2"); shift 2 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
: "${DEB:?--deb}" "${FAKE_AGENT:?--fake-agent}" "${FAKE_IMDS:?--fake-imds}" "${ARC_ENROLL:?--arc-enroll}"
BOOT_TIMEOUT=${ARC_ENROLL_E2E_BOOT_TIMEOUT:-900}
SCENARIOS=${ARC_ENROLL_E2E_SCENARIOS:-parent clones golden relay}
case " $SCENARIOS " in *" relay "*) : "${FAKE_ARM:?--fake-arm (the relay scenario needs it)}" ;; esac

T0=$(date +%s)
step() { printf '[e2e %s %4ss] %s\n' "$SUITE" "$(( $(date +%s) - T0 ))" "$*"; }
fail() {
  printf '[e2e %s %4ss] FAILED: %s\n' "$SUITE" "$(( $(date +%s) - T0 ))" "$*" >&2
  for b in "${BOOTED[@]}"; do show_logs "$b" >&2; done
  exit 1
}
BOOTED=()
PIDS=()
work=$(mktemp -d "/var/tmp/arc-enroll-e2e.$SUITE.XXXXXX")
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ "${ARC_ENROLL_E2E_KEEP:-}" = 1 ]; then echo "e2e: work dir kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

SUB=5c0f4ef5-0e5c-4a4c-9d0e-3a1f2b7c8d90
RG=rg-e2e
TENANT=7d3e9a51-2c4b-4f6e-8a1d-0b9c8e7f6a54
LOC=westeurope
PROXY_ADDR=169.254.169.5
PROXY_URL=http://$PROXY_ADDR:3128
HOSTNAME_=e2e-vm

# ---------------------------------------------------------------- image
t=$(date +%s)
base=$(bash "$here/image.sh" "$SUITE") || fail "image build"
step "base image ready in $(( $(date +%s) - t ))s: $base"

t=$(date +%s)
root=$work/root
mkdir -p "$root"
tar -xpf "$base/rootfs.tar" -C "$root" --numeric-owner
cp "$DEB" "$root/tmp/arc-enroll.deb"
chroot "$root" dpkg -i /tmp/arc-enroll.deb >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i in the image"; }
rm -f "$root/tmp/arc-enroll.deb"
[ -L "$root/etc/systemd/system/multi-user.target.wants/arc-enroll.service" ] || fail "the .deb did not enable arc-enroll.service"
# The fake agent where the real one lives. A thin wrapper stands in for the agent's own services:
# on `connect` it reaches ARM through the proxy in the agent's *configuration* (proxy.url), as the
# real agent's himds does (it does not inherit arc-enroll's environment). So the tinyproxy log only
# shows management.azure.com if arc-enroll set proxy.url; unset, the probe goes direct and fails.
install -D -m 0755 "$FAKE_AGENT" "$root/opt/azcmagent-fake/fake-azcmagent"
mkdir -p "$root/opt/azcmagent/bin"
cat >"$root/opt/azcmagent/bin/azcmagent" <<'EOF'
#!/bin/sh
# e2e.remote_azure=URL (the relay scenario): the host's fake ARM holds the pre-created machine;
# the fake agent reads it through its proxy.url and records no secret on this disk.
ra=$(sed -n 's/.*e2e\.remote_azure=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -n "$ra" ] && export FAKE_AZCMAGENT_REMOTE_AZURE="$ra" FAKE_AZCMAGENT_REDACT=private-key,access-token
if [ "$1" = connect ]; then
  p=$(python3 -c 'import json; print(json.load(open("/var/opt/azcmagent-fake/agent.json")).get("settings", {}).get("proxy.url", ""))' 2>/dev/null)
  if [ -n "$p" ]; then set -- "$@"; curl -sS -m 20 -x "$p" -o /dev/null https://management.azure.com/ >>/var/log/e2e-agent-probe.log 2>&1
  else curl -sS -m 10 --noproxy '*' -o /dev/null https://management.azure.com/ >>/var/log/e2e-agent-probe.log 2>&1; fi
  echo "probe with proxy.url='$p' done" >>/var/log/e2e-agent-probe.log
fi
exec /opt/azcmagent-fake/fake-azcmagent "$@"
EOF
chmod 0755 "$root/opt/azcmagent/bin/azcmagent"
# The operator re-run example runs once cloud-init is done; then the VM powers itself off.
install -D -m 0755 "$repo/examples/operator-rerun.sh" "$root/usr/local/share/e2e/operator-rerun.sh"
install -D -m 0755 "$repo/examples/golden-image.sh" "$root/usr/local/share/e2e/golden-image.sh"
# With e2e.generalize=1 on the kernel command line the VM also runs the golden-image recipe before
# powering off (keeping copies of the evidence the recipe clears).
cat >"$root/usr/local/share/e2e/finish.sh" <<'EOF'
#!/bin/sh
# What systemd and cloud-init of this Debian generation made of the boot, for the checks.
{ systemctl show arc-enroll.service -p ConditionResult -p Result -p ExecMainStatus -p ActiveState
  echo "--- journal"; journalctl -b -u arc-enroll.service --no-pager -o cat; } >/var/log/e2e-unit.log 2>&1
{ cloud-init --version; cloud-init status --long; echo "status exit $?"
  cloud-init schema --system; echo "schema exit $?"; } >/var/log/e2e-cloud-init.log 2>&1
/usr/local/share/e2e/operator-rerun.sh >/var/log/e2e-operator-rerun.log 2>&1
echo "operator-rerun exit $?" >>/var/log/e2e-operator-rerun.log
if grep -qw 'e2e.generalize=1' /proc/cmdline; then
  mkdir -p /var/log/e2e-before-generalize
  cp -p /var/lib/arc-enroll/state.json /var/opt/azcmagent-fake/agent.json /var/log/cloud-init-output.log \
    /etc/machine-id /var/log/e2e-before-generalize/ 2>/dev/null
  /usr/local/share/e2e/golden-image.sh >/var/log/e2e-golden-image.log 2>&1
  echo "golden-image exit $?" >>/var/log/e2e-golden-image.log
fi
sync
EOF
chmod 0755 "$root/usr/local/share/e2e/finish.sh"
cat >"$root/etc/systemd/system/e2e-finish.service" <<'EOF'
[Unit]
Description=e2e: operator re-run example, then power off
After=cloud-final.service arc-enroll.service
Wants=cloud-final.service

[Service]
Type=oneshot
ExecStart=/usr/local/share/e2e/finish.sh
ExecStartPost=/bin/systemctl poweroff --no-block

[Install]
WantedBy=cloud-init.target
EOF
# (cloud-final.service is ordered after multi-user.target on Debian, hence cloud-init.target here.)
mkdir -p "$root/etc/systemd/system/cloud-init.target.wants"
ln -sf /etc/systemd/system/e2e-finish.service "$root/etc/systemd/system/cloud-init.target.wants/e2e-finish.service"
# Skip first-boot work this test does not need (the disk has no partition table; no sshd).
cat >"$root/etc/cloud/cloud.cfg.d/91-e2e-speed.cfg" <<'EOF'
resize_rootfs: false
growpart: {mode: "off"}
ssh_genkeytypes: []
locale: C.UTF-8
EOF
disk=$work/parent.raw
mkfs.ext4 -q -F -L root -d "$root" "$disk" 3G >/dev/null || fail "mkfs.ext4 -d"
rm -rf "$root"
# The relay scenario boots a copy of the disk no boot has touched.
case " $SCENARIOS " in *" relay "*) cp --sparse=always "$disk" "$work/pristine.raw" ;; esac
step "disk with the .deb and the fake agent made in $(( $(date +%s) - t ))s"

# ---------------------------------------------------------------- user-data
"$ARC_ENROLL" user-data --config '' --resource-name '{hostname}-{vm_uuid8}' \
  --proxy "$PROXY_URL" --no-proxy 169.254.169.254,localhost,127.0.0.1 --timeout 10m \
  >"$work/user-data" 2>"$work/user-data.err" || { cat "$work/user-data.err"; fail "arc-enroll user-data"; }
"$ARC_ENROLL" user-data --config '' --resource-name '{hostname}-{vm_uuid8}' \
  --proxy "$PROXY_URL" --no-proxy 169.254.169.254,localhost,127.0.0.1 --timeout 10m --base64 >"$work/user-data.b64" 2>/dev/null
cloud-init schema --config-file "$work/user-data" >/dev/null || fail "cloud-init schema rejected the user-data"
step "user-data: $(wc -c <"$work/user-data") bytes, $(tr -d '\n' <"$work/user-data.b64" | wc -c) as base64; cloud-init schema: valid"

# ---------------------------------------------------------------- booting
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# boot NAME DISK UUID: start this boot's fake IMDS and tinyproxy, a NoCloud seed, QEMU (background).
boot() {
  local name=$1 disk=$2 uuid=$3 extra=${4:-} d=$work/$1
  mkdir -p "$d"
  "$FAKE_IMDS" --listen 127.0.0.1:0 --port-file "$d/imds.port" --record "$d/imds.jsonl" --quiet \
    --tenant "$TENANT" --subscription "$SUB" --resource-group "$RG" --location "$LOC" \
    --vm-name "$name" --vm-uuid "$uuid" ${BOOT_IMDS_ARGS:-} >"$d/imds.out" 2>&1 &
  PIDS+=($!)
  local pport; pport=$(free_port)
  echo '^127\.0\.0\.1$' >"$d/filter"
  cat >"$d/tinyproxy.conf" <<EOF
Port $pport
Listen 127.0.0.1
Timeout 30
LogFile "$d/tinyproxy.log"
LogLevel Connect
MaxClients 20
Allow 127.0.0.1
Filter "$d/filter"
FilterDefaultDeny Yes
FilterExtended On
DisableViaHeader Yes
EOF
  tinyproxy -d -c "$d/tinyproxy.conf" >"$d/tinyproxy.out" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$d/imds.port" ] && break; sleep 0.1; done
  [ -s "$d/imds.port" ] || fail "$name: fake-imds did not start: $(cat "$d/imds.out")"
  local iport; iport=$(cat "$d/imds.port")
  printf 'instance-id: %s\nlocal-hostname: %s\n' "iid-$name-$uuid" "$HOSTNAME_" >"$d/meta-data"
  cp "${BOOT_USER_DATA:-$work/user-data}" "$d/user-data"
  rm -f "$d/seed.img"
  mkfs.vfat -n CIDATA -C "$d/seed.img" 1024 >/dev/null
  mcopy -i "$d/seed.img" "$d/user-data" "$d/meta-data" ::
  echo "$uuid" >"$d/uuid"
  echo "$extra" >"$d/extra"
  date +%s >"$d/started"
  timeout "$BOOT_TIMEOUT" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 1 -m 1024 \
    -uuid "$uuid" -nodefaults -display none -no-reboot -serial "file:$d/console.log" \
    -kernel "$base/vmlinuz" -initrd "$base/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 net.ifnames=0 systemd.show_status=1 $extra" \
    -drive "file=$disk,format=raw,if=virtio" \
    -drive "file=$d/seed.img,format=raw,if=virtio,readonly=on" \
    -netdev "user,id=n0,restrict=on,net=169.254.169.0/24,host=169.254.169.2,dns=169.254.169.3,dhcpstart=169.254.169.15,guestfwd=tcp:169.254.169.254:80-cmd:socat - TCP:127.0.0.1:$iport,guestfwd=tcp:$PROXY_ADDR:3128-cmd:socat - TCP:127.0.0.1:$pport" \
    -device virtio-net-pci,netdev=n0 -device virtio-rng-pci \
    >"$d/qemu.out" 2>&1 &
  echo $! >"$d/qemu.pid"
  BOOTED+=("$name")
  step "$name: booting (uuid $uuid, fake IMDS :$iport, tinyproxy :$pport)"
}

# wait_boot NAME: wait for QEMU to exit (the guest powers itself off), pull the guest's files.
wait_boot() {
  local name=$1 d=$work/$1 rc=0
  wait "$(cat "$d/qemu.pid")" || rc=$?
  echo $(( $(date +%s) - $(cat "$d/started") )) >"$d/seconds"
  [ "$rc" = 0 ] || fail "$name: QEMU exited with $rc after $(cat "$d/seconds")s (124 = boot timeout ${BOOT_TIMEOUT}s)"
  step "$name: powered off after $(cat "$d/seconds")s"
  pull "$name"
}

# enrolled_at NAME RESOURCE: guest uptime (s) when a run printed "RESOURCE (...) — enrolled".
enrolled_at() {
  grep -a "]: arc-enroll: $2 (.*— enrolled" "$work/$1/console.log" | head -1 | sed -n 's/^\[ *\([0-9]*\)\..*/\1/p'
}

# pull NAME: copy the guest's logs and records out of its powered-off disk with debugfs.
pull() {
  local name=$1 d=$work/$1 disk
  disk=$(cat "$d/disk")
  mkdir -p "$d/guest"
  for f in /var/log/cloud-init-output.log /var/log/cloud-init.log /var/log/e2e-operator-rerun.log \
           /var/log/e2e-agent-probe.log /var/opt/azcmagent-fake/calls.jsonl /var/opt/azcmagent-fake/agent.json \
           /var/lib/arc-enroll/state.json /etc/machine-id /etc/arc-enroll/config.json \
           /var/log/e2e-golden-image.log /var/log/e2e-unit.log /var/log/e2e-cloud-init.log; do
    debugfs -R "dump -p $f $d/guest/$(basename "$f")" "$disk" >/dev/null 2>&1 || true
  done
  debugfs -R "ls -p /var/opt/azcmagent-fake/azure/machines/$SUB/$RG" "$disk" 2>/dev/null |
    awk -F/ '$6 ~ /\.json$/ {print $6}' >"$d/guest/azure-machines" || true
  mkdir -p "$d/guest/after-generalize"
  # Only a boot that ran the recipe reads its snapshots (a disk copied from it still carries them).
  grep -q 'e2e.generalize=1' "$d/extra" 2>/dev/null || return 0
  for f in state.json agent.json cloud-init-output.log machine-id; do
    if debugfs -R "dump -p /var/log/e2e-before-generalize/$f $d/guest/before-$f" "$disk" >/dev/null 2>&1 &&
       [ -s "$d/guest/before-$f" ]; then
      [ -e "$d/guest/$f" ] && mv "$d/guest/$f" "$d/guest/after-generalize/$f"
      mv "$d/guest/before-$f" "$d/guest/$f"
    else
      rm -f "$d/guest/before-$f"
    fi
  done
}

# cloud_init_version NAME: the guest's cloud-init version, from its own report.
cloud_init_version() {
  sed -n 's/^\(\/usr\/bin\/\)\{0,1\}cloud-init \([0-9][^ ]*\).*/cloud-init \2/p' "$work/$1/guest/e2e-cloud-init.log" 2>/dev/null | head -1
}

show_logs() {
  local name=$1 d=$work/$1
  [ -d "$d" ] || return 0
  echo "=============== $name: console (last 80 lines)"
  tail -n 80 "$d/console.log" 2>/dev/null || true
  [ -e "$d/guest/cloud-init-output.log" ] || pull "$name" 2>/dev/null || true
  echo "=============== $name: /var/log/cloud-init-output.log"
  cat "$d/guest/cloud-init-output.log" 2>/dev/null || echo "(not readable)"
  echo "=============== $name: cloud-init.log (warnings and errors)"
  grep -E 'WARNING|ERROR|Traceback' "$d/guest/cloud-init.log" 2>/dev/null | tail -n 40 || true
  echo "=============== $name: arc-enroll.service, cloud-init status and schema"
  cat "$d/guest/e2e-unit.log" "$d/guest/e2e-cloud-init.log" 2>/dev/null | tail -n 60 || true
  echo "=============== $name: fake agent calls"
  cut -c1-400 "$d/guest/calls.jsonl" 2>/dev/null || true
  echo "=============== $name: tinyproxy log"
  tail -n 20 "$d/tinyproxy.log" 2>/dev/null || true
}

# check NAME DESCRIPTION PYTHON-EXPRESSION-ON-FILES: assert with python3 over the pulled files.
check() {
  local name=$1 what=$2 expr=$3 d=$work/$1
  if python3 - "$d" "$expr" <<'EOF'
import json, os, sys
d, expr = sys.argv[1], sys.argv[2]
def text(p):
    try: return open(os.path.join(d, p), errors="replace").read()
    except OSError: return ""
def jsonl(p): return [json.loads(l) for l in text(p).splitlines() if l.strip()]
def js(p):
    t = text(p); return json.loads(t) if t.strip() else {}
calls = jsonl("guest/calls.jsonl")
def of(sub): return [c for c in calls if c.get("argv", [None])[0] == sub]
def arg(c, flag):
    a = c.get("argv", [])
    return a[a.index(flag) + 1] if flag in a and a.index(flag) + 1 < len(a) else None
imds = jsonl("imds.jsonl")
proxy_log = text("tinyproxy.log")
out = text("guest/cloud-init-output.log")
state = js("guest/state.json")
agent = js("guest/agent.json")
uuid = text("uuid").strip()
machines = text("guest/azure-machines").split()
arm_log = text("arm.log")
def host_machines():
    out = []
    for root, _, files in os.walk(os.path.join(d, "azure", "machines")):
        out += [json.load(open(os.path.join(root, f))) for f in files if f.endswith(".json")]
    return out
ok = eval(expr)
sys.exit(0 if ok else 1)
EOF
  then step "$name: ok: $what"; else fail "$name: $what"; fi
}

# ---------------------------------------------------------------- parent
# The first boot: cloud-init with the user-data, the packaged unit, the proxy, IMDS direct.
scenario_parent() {
  mkdir -p "$work/parent"; echo "$disk" >"$work/parent/disk"
  P_UUID=$(python3 -c 'import uuid; print(uuid.uuid4())')
  boot parent "$disk" "$P_UUID"
  wait_boot parent
  P8=${P_UUID:0:8}
  P_NAME="$HOSTNAME_-$P8"
  check parent "cloud-init ran arc-enroll connect and it succeeded" \
    "'arc-enroll: $P_NAME (' in out and 'FAILED' not in out"
  check parent "enrolled once: exactly one azcmagent connect, as $P_NAME" \
    "len(of('connect')) == 1 and arg(of('connect')[0], '--resource-name') == '$P_NAME' and agent.get('connected') is True"
  check parent "state.json records $P_NAME and this VM's UUID" \
    "state.get('resource_name') == '$P_NAME' and '$P_UUID' in json.dumps(state).lower()"
  check parent "IMDS reached directly: origin-form token requests, none through the proxy" \
    "any(r['path'] == '/metadata/identity/oauth2/token' and r['target'].startswith('/') and not r['via_proxy'] for r in imds) and all(r['target'].startswith('/') for r in imds) and '169.254.169.254' not in proxy_log"
  check parent "the agent got the proxy (env and proxy.url) and NO_PROXY keeps IMDS local" \
    "of('connect')[0]['env'].get('https_proxy') == '$PROXY_URL' and '169.254.169.254' in of('connect')[0]['env'].get('NO_PROXY', '') and agent.get('settings', {}).get('proxy.url') == '$PROXY_URL'"
  check parent "Azure traffic went through the proxy (tinyproxy saw CONNECT management.azure.com:443)" \
    "'CONNECT management.azure.com:443' in proxy_log"
  check parent "operator re-run example: already enrolled, nothing to do" \
    "'already enrolled as this machine' in text('guest/e2e-operator-rerun.log') and 'operator-rerun exit 0' in text('guest/e2e-operator-rerun.log')"
  check parent "the fake Azure holds the parent's resource" "'${P_NAME,,}.json' in machines"
  check parent "the packaged unit ran too, after cloud-init wrote the config (condition met), and succeeded" \
    "'ConditionResult=yes' in text('guest/e2e-unit.log') and 'Result=success' in text('guest/e2e-unit.log') and 'ExecMainStatus=0' in text('guest/e2e-unit.log')"
  check parent "the guest's own cloud-init ($(cloud_init_version parent)) accepts the user-data (cloud-init schema --system) and finished" \
    "'schema exit 0' in text('guest/e2e-cloud-init.log') and 'status: done' in text('guest/e2e-cloud-init.log') and 'degraded' not in text('guest/e2e-cloud-init.log')"
  step "parent: enrolled at guest uptime $(enrolled_at parent "$P_NAME")s (console), powered off after $(cat "$work/parent/seconds")s"
  SUMMARY+=("parent $(cat "$work/parent/seconds")s")
}

# ---------------------------------------------------------------- clones
# Needs the parent's disk.
scenario_clones() {
  # clone-kept: a plain copy (keeps the parent's /etc/machine-id, VM-NOTES); clone-blank: machine-id
  # emptied as the golden-image recipe does (systemd makes a new one at boot).
  cp --sparse=always "$disk" "$work/clone-kept.raw"
  cp --sparse=always "$disk" "$work/clone-blank.raw"
  : >"$work/empty"
  debugfs -w -f - "$work/clone-blank.raw" >/dev/null 2>&1 <<EOF
rm /etc/machine-id
write $work/empty /etc/machine-id
EOF
  P_MID=$(cat "$work/parent/guest/machine-id")
  for c in clone-kept clone-blank; do
    mkdir -p "$work/$c"; echo "$work/$c.raw" >"$work/$c/disk"
    extra=; [ "$c" = clone-kept ] && extra=e2e.generalize=1
    boot "$c" "$work/$c.raw" "$(python3 -c 'import uuid; print(uuid.uuid4())')" "$extra"
  done
  for c in clone-kept clone-blank; do wait_boot "$c"; done
  for c in clone-kept clone-blank; do
    C_UUID=$(cat "$work/$c/uuid"); C_NAME="$HOSTNAME_-${C_UUID:0:8}"
    check "$c" "disconnected locally only (--force-local-only), never deleting the parent's resource" \
      "any('--force-local-only' in c['argv'] for c in of('disconnect')) and all('--force-local-only' in c['argv'] for c in of('disconnect'))"
    check "$c" "enrolled under its own name $C_NAME (second connect ever on this disk)" \
      "len(of('connect')) == 2 and arg(of('connect')[1], '--resource-name') == '$C_NAME' and agent.get('connected') is True and agent.get('resourceName', '').lower() == '${C_NAME,,}'"
    check "$c" "cloud-init's arc-enroll run (new instance-id) reports the clone's own resource" \
      "'arc-enroll: $C_NAME (' in out and 'FAILED' not in out and '$P_NAME' not in out.split('arc-enroll: ')[-1]"
    check "$c" "state.json is the clone's" \
      "state.get('resource_name') == '$C_NAME' and '$C_UUID' in json.dumps(state).lower()"
    check "$c" "the parent's resource is left alone in the fake Azure, the clone's added" \
      "'${P_NAME,,}.json' in machines and '${C_NAME,,}.json' in machines"
    step "$c: enrolled as itself at guest uptime $(enrolled_at "$c" "$C_NAME")s (console)"
    check "$c" "the packaged unit ran on this boot and succeeded" \
      "'ConditionResult=yes' in text('guest/e2e-unit.log') and 'Result=success' in text('guest/e2e-unit.log') and 'ExecMainStatus=0' in text('guest/e2e-unit.log')"
    check "$c" "IMDS direct, agent traffic through the proxy" \
      "any(r['path'] == '/metadata/identity/oauth2/token' for r in imds) and all(r['target'].startswith('/') for r in imds) and 'CONNECT management.azure.com:443' in proxy_log"
  done
  check clone-kept "kept the parent's machine-id (VM-NOTES: a copy keeps it)" "text('guest/machine-id').strip() == '$P_MID'"
  check clone-blank "got a new machine-id" "text('guest/machine-id').strip() not in ('', '$P_MID')"
  SUMMARY+=("clones $(cat "$work/clone-kept/seconds")s and $(cat "$work/clone-blank/seconds")s in parallel")
}

# ---------------------------------------------------------------- golden image
# Needs clone-kept's disk (it ran the golden-image recipe).
scenario_golden() {
  # clone-kept ran examples/golden-image.sh (arc-enroll generalize, cloud-init clean, empty
  # machine-id) before powering off; a VM made from that disk must enroll as itself with no clone
  # handling needed: no new disconnect, a fresh cloud-init instance, a new machine-id.
  K_UUID=$(cat "$work/clone-kept/uuid"); K_NAME="$HOSTNAME_-${K_UUID:0:8}"
  check clone-kept "the golden-image recipe ran: generalize disconnected locally, state and machine-id cleared" \
    "'golden-image exit 0' in text('guest/e2e-golden-image.log') and len(of('disconnect')) == 2 and all('--force-local-only' in c['argv'] for c in of('disconnect')) and not text('guest/after-generalize/state.json').strip() and text('guest/after-generalize/machine-id').strip() == ''"
  cp --sparse=always "$work/clone-kept.raw" "$work/golden.raw"
  mkdir -p "$work/golden"; echo "$work/golden.raw" >"$work/golden/disk"
  boot golden "$work/golden.raw" "$(python3 -c 'import uuid; print(uuid.uuid4())')"
  wait_boot golden
  G_UUID=$(cat "$work/golden/uuid"); G_NAME="$HOSTNAME_-${G_UUID:0:8}"
  step "golden: enrolled at guest uptime $(enrolled_at golden "$G_NAME")s (console)"
  check golden "a VM from the generalized image enrolled as itself with no clone handling" \
    "len(of('connect')) == 3 and arg(of('connect')[2], '--resource-name') == '$G_NAME' and len(of('disconnect')) == 2 and agent.get('connected') is True and state.get('resource_name') == '$G_NAME'"
  check golden "cloud-init saw a fresh instance (clean) and its arc-enroll run reports $G_NAME" \
    "'arc-enroll: $G_NAME (' in out and '$K_NAME' not in out and 'FAILED' not in out"
  check golden "new machine-id, every earlier resource left alone in the fake Azure" \
    "text('guest/machine-id').strip() not in ('', '$P_MID') and all(n in machines for n in ('${P_NAME,,}.json', '${K_NAME,,}.json', '${G_NAME,,}.json'))"
  SUMMARY+=("golden-image VM $(cat "$work/golden/seconds")s")
}

# ---------------------------------------------------------------- Private Relay
# key_scan DISK PUBLIC_KEY_B64: how often the disk (every block, deleted files included) holds the
# private key that belongs to this public key, and the public key itself. Both DER forms carry
# the modulus n early: the private key as `02 01 00 02 82 01 01 00 n` (its version, then n), the
# public key as `30 82 01 0a 02 82 01 01 00 n`; both are searched raw, in hex and in base64 (all
# three alignments).
# Prints "private=N public=M".
key_scan() {
  python3 - "$1" "$2" <<'EOF'
import base64, os, sys
disk, pub = sys.argv[1], base64.b64decode(sys.argv[2])
assert pub[:9] == bytes.fromhex("3082010a0282010100"), "a PKCS#1 RSA-2048 public key"
# 36 bytes of n: the copy stays on the first line of a PEM (64 characters) at every alignment.
n = pub[9:9 + 36]
def forms(prefix):
    raw = prefix + n
    # base64 at each of the three alignments a copy can have (e.g. inside a PKCS#8 wrapper).
    b64 = [base64.b64encode(raw[k:k + 3 * ((len(raw) - k) // 3)]) for k in range(3)]
    return [raw, raw.hex().encode(), raw.hex().upper().encode()] + b64
# Prefixes long enough that no alignment's trimmed copy is shared: the private key's version and
# modulus header, the public key's whole header.
private, public = forms(bytes.fromhex("0201000282010100")), forms(bytes.fromhex("3082010a0282010100"))
counts = {"private": 0, "public": 0}
fd = os.open(disk, os.O_RDONLY)
size, pos, chunk = os.fstat(fd).st_size, 0, 1 << 24
while pos < size:
    try:
        pos = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:
        break
    end = os.lseek(fd, pos, os.SEEK_HOLE)
    while pos < end:
        # Each window overlaps the next by 512 bytes (longer than any pattern); a match is
        # counted in the window it starts in. The last step of an extent ends at the extent's
        # end, so the next SEEK_DATA starts there and skips nothing.
        step = min(chunk, end - pos)
        buf = os.pread(fd, min(step + 512, end - pos), pos)
        for k, pats in (("private", private), ("public", public)):
            for p in pats:
                i = buf.find(p)
                while 0 <= i < step:
                    counts[k] += 1
                    i = buf.find(p, i + 1)
        pos += step
print(f"private={counts['private']} public={counts['public']}")
EOF
}

# A Nexus VM enrolling through Private Relay, from a disk no boot has touched: the token names its
# NetworkCloud VM (xms_mirid); arc-enroll pre-creates the machine in the host's fake ARM with a
# one-time key, assigns the relay (a long-running operation, polled), and runs `connect existing`.
scenario_relay() {
  local d=$work/relay
  mkdir -p "$d/azure"
  # The scan first finds a real PKCS#1 key (openssl's), in PEM, in a file: a control for key_scan.
  openssl genrsa -traditional -out "$d/control.pem" 2048 2>/dev/null
  [ "$(key_scan "$d/control.pem" "$(openssl rsa -in "$d/control.pem" -RSAPublicKey_out -outform DER 2>/dev/null | base64 -w0)")" = "private=1 public=0" ] ||
    fail "relay: key_scan does not find a PKCS#1 private key in PEM"
  rm -f "$d/control.pem"
  cp --sparse=always "$work/pristine.raw" "$work/relay.raw"; echo "$work/relay.raw" >"$d/disk"
  "$FAKE_ARM" --listen 127.0.0.1:0 --port-file "$d/arm.port" --ca-dir "$d" --azure-dir "$d/azure" \
    --relay-polls 2 --relay-retry-after 2 >"$d/arm.out" 2>"$d/arm.log" &
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$d/arm.port" ] && break; sleep 0.1; done
  [ -s "$d/arm.port" ] || fail "relay: fake-arm did not start: $(cat "$d/arm.out" "$d/arm.log")"
  local aport arm_url; aport=$(cat "$d/arm.port"); arm_url=https://127.0.0.1:$aport
  # 127.0.0.1 is the host's loopback only to the proxy: inside the guest nothing listens there, so
  # NO_PROXY must not list it and every ARM request goes through tinyproxy.
  "$ARC_ENROLL" user-data --config '' --resource-name '{hostname}-{vm_uuid8}' --private-relay \
    --arm-endpoint "$arm_url" --proxy "$PROXY_URL" --no-proxy 169.254.169.254 --timeout 10m \
    >"$work/user-data-relay" 2>"$d/user-data.err" || { cat "$d/user-data.err"; fail "arc-enroll user-data --private-relay"; }
  # The fake ARM's CA, trusted the way a user trusts a corporate CA: cloud-init's ca_certs.
  { echo "ca_certs:"; echo "  trusted:"; echo "    - |"; sed 's/^/      /' "$d/ca.pem"; } >>"$work/user-data-relay"
  cloud-init schema --config-file "$work/user-data-relay" >/dev/null || fail "cloud-init schema rejected the relay user-data"
  R_UUID=$(python3 -c 'import uuid; print(uuid.uuid4())')
  BOOT_IMDS_ARGS="--vm-resource-type Microsoft.NetworkCloud/virtualMachines" BOOT_USER_DATA=$work/user-data-relay \
    boot relay "$work/relay.raw" "$R_UUID" "e2e.remote_azure=$arm_url"
  wait_boot relay
  R_NAME="$HOSTNAME_-${R_UUID:0:8}"
  local mpath="/subscriptions/$SUB/resourceGroups/$RG/providers/Microsoft.HybridCompute/machines/$R_NAME"
  # The packaged unit runs after cloud-init's network stage (config written, CA trusted) and
  # enrolls; cloud-init's own runcmd run then finds the machine enrolled.
  check relay "the packaged unit enrolled through Private Relay; cloud-init's run found it enrolled" \
    "'Private Relay assigned' in text('guest/e2e-unit.log') and 'arc-enroll: $R_NAME (' in text('guest/e2e-unit.log') and '— enrolled' in text('guest/e2e-unit.log') and 'Result=success' in text('guest/e2e-unit.log') and 'arc-enroll: $R_NAME (' in out and 'FAILED' not in out + text('guest/e2e-unit.log')"
  check relay "the Nexus VM id came from the token (xms_mirid, Microsoft.NetworkCloud/virtualMachines)" \
    "'Microsoft.NetworkCloud/virtualMachines/relay (from the token' in text('guest/e2e-unit.log')"
  check relay "the fake ARM got the PUT, the assignRelay POST and its polls, nothing refused" \
    "'PUT $mpath -> 200' in arm_log and 'assignRelay -> 202' in arm_log and arm_log.count('/operationStatuses/') == 3 and not any(' -> 4' in l or ' -> 5' in l for l in arm_log.splitlines() if not l.endswith('$R_NAME -> 404'))"
  check relay "one machine in the fake ARM, with this VM's vmId and a PKCS#1 public key" \
    "len(host_machines()) == 1 and host_machines()[0]['properties']['vmId'] == state.get('vm_id') and host_machines()[0]['properties']['clientPublicKey'].startswith('MIIBCgKCAQEA')"
  check relay "the agent ran connect existing once with the key in a 0600 --config file and --vmid, never a token" \
    "len(of('connect')) == 1 and of('connect')[0]['argv'][1] == 'existing' and arg(of('connect')[0], '--vmid') == state.get('vm_id') and of('connect')[0]['config_file']['mode'] == '600' and of('connect')[0]['config_file']['content']['private-key'].startswith('<redacted: ') and not any('access-token' in json.dumps([c['argv'], c.get('config_file')]) for c in calls) and agent.get('connected') is True"
  check relay "state.json records the pre-created, relayed machine" \
    "state.get('enrolled_via') == 'private-relay' and state.get('resource_name') == '$R_NAME' and state.get('resource_id', '').lower() == host_machines()[0]['id'].lower()"
  check relay "ARM reached only through the proxy (CONNECT 127.0.0.1:$aport), IMDS directly" \
    "'CONNECT 127.0.0.1:$aport' in proxy_log and all(r['target'].startswith('/') for r in imds) and '169.254.169.254' not in proxy_log"
  check relay "the guest's fake agent read the machine back through its proxy.url (a second GET of it, answered 200)" \
    "arm_log.count('GET $mpath -> 200') >= 1"
  local pub scan
  pub=$(python3 -c 'import json,sys,glob; print(json.load(open(glob.glob(sys.argv[1] + "/azure/machines/*/*/*.json")[0]))["properties"]["clientPublicKey"])' "$d")
  scan=$(key_scan "$work/relay.raw" "$pub")
  step "relay: guest disk scanned for the one-time key (raw, base64, hex; deleted blocks too): $scan"
  case "$scan" in
    "private=0 public="[1-9]*) step "relay: ok: the private key is nowhere on the guest disk; its public half is (the agent's copy of the resource: the scan sees the files)" ;;
    *) fail "relay: key scan of the guest disk: $scan (want private=0, and the public key found as a control)" ;;
  esac
  step "relay: enrolled at guest uptime $(enrolled_at relay "$R_NAME")s (console), powered off after $(cat "$d/seconds")s"
  SUMMARY+=("Private Relay VM $(cat "$d/seconds")s")
}

# ---------------------------------------------------------------- main
SUMMARY=()
for sc in $SCENARIOS; do
  declare -F "scenario_$sc" >/dev/null || fail "unknown scenario '$sc' (ARC_ENROLL_E2E_SCENARIOS)"
  "scenario_$sc"
done
step "PASSED ($SUITE): $(IFS=';'; echo "${SUMMARY[*]}" | sed 's/;/, /g'); total $(( $(date +%s) - T0 ))s"
