#!/usr/bin/env python3
"""`make ansible-test`: the Ansible role in examples/ansible played against three hosts.

Every host is this machine with `ansible_connection: local`, each with its own sysroot
(machine-id, product_uuid, hostname), state dir, settings file, install path, fake azcmagent
(a wrapper with its own FAKE_AZCMAGENT_DIR) and fake IMDS (its own VM and identity). The
hosts share one fake ARM (HTTPS, test CA) and one fake "Azure" directory, like VMs in one
subscription. web02 reaches ARM through a real proxy (tinyproxy) that wants a password.

  web01  system-assigned identity; resource name {hostname}-{vm_uuid8}
  web02  system-assigned identity; proxy with a password; agent settings (config.mode monitor)
  db03   asks for a user-assigned identity the VM does not have: IMDS 400 Identity not found
The binary comes from the controller's dist/ (web01, artifact named by the architecture
fact), a given file (web02) and a release URL on loopback with SHA256SUMS (db03, get_url).

Runs (all but the last at -vvv, so the secret scan sees the most Ansible prints):
  0. --check on fresh machines: reports what it would do, creates nothing
  0b. a wrong SHA-256 (web01 copy, db03 get_url): the hosts fail, nothing is installed
  1. first run: web01, web02 enrolled (changed); db03 fails with exit 3 and the advice
  2. second run: changed=0 on every host; db03 still fails
  3. --check: changed=0, no file of any host changes, no agent connect
  4. web01 becomes a clone (new product_uuid and machine-id), web02's agent settings drift:
     --check reports what connect would do, still changing nothing
  5. the real run: web01 re-enrolled as itself (changed), web02 settings repaired (changed)
  6. and again, at the default verbosity (printed in full): changed=0
Then the secret scan: every token the fake IMDSes issued (--issued-tokens) and the proxy
password, as 16-character fragments, raw and base64/hex/percent-encoded, over all output; and
its control: a copy task like the role's without no_log does leak the password at -vvv.

Environment: ANSIBLE_PLAYBOOK (the venv's ansible-playbook), ARC_ENROLL_BIN (the release
binary), FAKES (dir with fake-imds, fake-arm, fake-azcmagent), TINYPROXY (optional path),
ANSIBLE_TEST_KEEP=1 keeps the work dir.
"""

import base64
import binascii
import grp
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "examples" / "ansible" / "playbook.yml"
ANSIBLE_PLAYBOOK = os.environ.get("ANSIBLE_PLAYBOOK", "ansible-playbook")
BIN = Path(os.environ.get("ARC_ENROLL_BIN", ROOT / "target/x86_64-unknown-linux-musl/release/arc-enroll"))
FAKES = Path(os.environ.get("FAKES", ROOT / "target/debug"))
HOSTS = ["web01", "web02", "db03"]
UAMI_NOT_ATTACHED = "11111111-2222-3333-4444-555555555555"

passed = 0
failed = 0
procs = []


def check(cond, what, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"  ok    {what}")
    else:
        failed += 1
        print(f"  FAIL  {what}")
        if detail:
            print("        " + str(detail).replace("\n", "\n        ")[:4000])


def start(argv, **kw):
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    procs.append(p)
    return p


def wait_file(path, secs=10):
    end = time.time() + secs
    while time.time() < end:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise SystemExit(f"{path} did not appear within {secs}s")


def version():
    m = re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M)
    return m.group(1)


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


RECAP = re.compile(
    r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)",
    re.M,
)


def recap(out):
    """{host: {ok, changed, unreachable, failed, skipped, rescued, ignored}} from PLAY RECAP."""
    tail = out[out.rfind("PLAY RECAP"):]
    keys = ["ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored"]
    return {m.group(1): dict(zip(keys, map(int, m.groups()[1:]))) for m in RECAP.finditer(tail)}


def recap_text(out):
    i = out.rfind("PLAY RECAP")
    return out[i:].strip() if i >= 0 else "(no PLAY RECAP)"


def task_status(out, task):
    """{host: status} for the task whose header contains `task` (status: ok, changed, fatal, skipping)."""
    res = {}
    for chunk in re.split(r"^TASK \[", out, flags=re.M)[1:]:
        title = chunk.split("]", 1)[0]
        if task in title:
            for m in re.finditer(r"^(ok|changed|fatal|failed|skipping): \[([^\]]+)\]", chunk, re.M):
                host = m.group(2).split(" -> ")[0]
                res.setdefault(host, m.group(1))
    return res


def summary_lines(out):
    """The fleet summary's lines (the debug msg list of the last summary task)."""
    chunks = [c for c in re.split(r"^TASK \[", out, flags=re.M) if c.startswith("arc_enroll : Fleet summary")]
    if not chunks:
        return []
    m = re.search(r'"msg": \[(.*?)\n\s*\]', chunks[-1], re.S)
    if not m:
        return []
    return [json.loads(s) for s in re.findall(r'^\s*("(?:[^"\\]|\\.)*"),?$', m.group(1), re.M)]


def fatal_msg(out, host):
    """The `msg` of the `fatal: [host]: FAILED! => {...}` block (multi-line JSON at -vvv)."""
    m = re.search(rf"^fatal: \[{re.escape(host)}\]: FAILED! => (\{{.*\}})$", out, re.M) or re.search(
        rf"^fatal: \[{re.escape(host)}\]: FAILED! => (\{{.*?^\}})", out, re.M | re.S)
    if not m:
        return ""
    try:
        return json.loads(m.group(1)).get("msg", "")
    except ValueError:
        return m.group(1)


def snapshot(root):
    """Every file under the host sandboxes (content hash, mode, mtime), minus the fakes' own
    call records (calls.jsonl, log/), which `status`/`check` add to by asking the agent."""
    snap = {}
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root)
        if rel.name == "calls.jsonl" or "log" in rel.parts:
            continue
        st = p.lstat()
        if p.is_file():
            snap[str(rel)] = (hashlib.sha256(p.read_bytes()).hexdigest(), oct(st.st_mode), st.st_mtime_ns)
        else:
            snap[str(rel)] = ("dir", oct(st.st_mode))
    return snap


def agent_calls(hostdir, sub):
    f = hostdir / "agent" / "calls.jsonl"
    if not f.exists():
        return []
    calls = [json.loads(l) for l in f.read_text().splitlines() if l.strip()]
    return [c for c in calls if c.get("argv", [None])[:1] == [sub]]


# ---- secret scan ------------------------------------------------------------------------------

FRAG = 16


def forms(secret):
    """The secret as it could appear: raw, percent-encoded, hex, base64 (std and url-safe, at
    each of the three byte alignments, so a fragment of the encoding of any substring matches)."""
    b = secret.encode()
    out = {secret, urllib.parse.quote(secret, safe=""), b.hex(), b.hex().upper()}
    for off in range(3):
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            e = enc(b[off:]).decode().rstrip("=")
            # the last 1-2 characters depend on what follows; drop them
            out.add(e[:-2] if len(e) > 2 else e)
    return out


def fragments(secrets_):
    frags = {}
    for name, s in secrets_:
        for f in forms(s):
            for i in range(0, max(1, len(f) - FRAG + 1)):
                w = f[i:i + FRAG]
                if len(w) == FRAG:
                    frags.setdefault(w, name)
    return frags


def scan(text, frags):
    hits = {}
    for i in range(0, len(text) - FRAG + 1):
        w = text[i:i + FRAG]
        if w in frags:
            hits.setdefault(frags[w], (i, w))
    return hits


# ---- the world --------------------------------------------------------------------------------


def main():
    t_all = time.time()
    for f in ["fake-imds", "fake-arm", "fake-azcmagent"]:
        if not (FAKES / f).exists():
            raise SystemExit(f"{FAKES / f} is missing: cargo build --workspace")
    if not BIN.exists():
        raise SystemExit(f"{BIN} is missing: make build")
    keep = os.environ.get("ANSIBLE_TEST_KEEP") == "1"
    work = Path(tempfile.mkdtemp(prefix="arc-enroll-ansible-"))
    hosts_root = work / "hosts"
    print(f"ansible-test: work dir {work}")
    ver = version()

    # The release artifacts, as `make release` names them, with a SHA256SUMS beside them.
    dist = work / "dist"
    dist.mkdir()
    artifact = dist / f"arc-enroll-{ver}-x86_64-linux"
    shutil.copy2(BIN, artifact)
    digest = sha256(artifact)
    (dist / "SHA256SUMS").write_text(f"{digest}  {artifact.name}\n")

    # A release server on loopback for the get_url path.
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(dist), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    release_url = f"http://127.0.0.1:{server.server_address[1]}/releases/v{ver}"
    (dist / "releases").mkdir()
    (dist / "releases" / f"v{ver}").symlink_to(dist, target_is_directory=True)

    # One fake ARM and one fake Azure for the subscription; a proxy that wants a password.
    azure = work / "azure"
    azure.mkdir()
    start([str(FAKES / "fake-arm"), "--port-file", str(work / "arm.port"), "--ca-dir", str(work / "ca"),
           "--azure-dir", str(azure), "--quiet"])
    arm = f"https://127.0.0.1:{wait_file(work / 'arm.port')}"
    ca = work / "ca" / "ca.pem"
    wait_file(ca)

    tinyproxy = os.environ.get("TINYPROXY") or shutil.which("tinyproxy") or "/usr/sbin/tinyproxy"
    alphabet = string.ascii_letters + string.digits
    proxy_password = "".join(secrets.choice(alphabet) for _ in range(24))
    proxy_user = "arcfleet"
    if not Path(tinyproxy).exists():
        raise SystemExit("tinyproxy is not installed: `make setup-test` installs it")
    with_proxy = True
    if with_proxy:
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        proxy_port = s.getsockname()[1]
        s.close()
        tp = work / "tinyproxy"
        tp.mkdir()
        (tp / "filter").write_text("^127\\.0\\.0\\.1$\n")
        (tp / "tinyproxy.conf").write_text(
            f"Port {proxy_port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{tp / 'tinyproxy.log'}\"\nLogLevel Connect\n"
            f"MaxClients 20\nAllow 127.0.0.1\nFilter \"{tp / 'filter'}\"\nFilterDefaultDeny Yes\nFilterExtended On\n"
            f"DisableViaHeader Yes\nBasicAuth {proxy_user} {proxy_password}\n")
        start([tinyproxy, "-d", "-c", str(tp / "tinyproxy.conf")])
        end = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", proxy_port), timeout=1).close()
                break
            except OSError:
                if time.time() > end:
                    raise SystemExit("tinyproxy did not start")
                time.sleep(0.05)

    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    machines = {
        "web01": ("4c4c4544-0051-3010-8052-b4c04f4e4b01", "0123456789abcdef0123456789ab0001"),
        "web02": ("4c4c4544-0051-3010-8052-b4c04f4e4b02", "0123456789abcdef0123456789ab0002"),
        "db03": ("4c4c4544-0051-3010-8052-b4c04f4e4b03", "0123456789abcdef0123456789ab0003"),
    }
    hostvars = {}
    token_files = []
    for h in HOSTS:
        d = hosts_root / h
        sysroot = d / "sysroot"
        (sysroot / "etc").mkdir(parents=True)
        (sysroot / "sys/class/dmi/id").mkdir(parents=True)
        (d / "agent").mkdir()
        set_machine(d, *machines[h], h)
        imds_args = [str(FAKES / "fake-imds"), "--port-file", str(work / f"imds-{h}.port"), "--quiet",
                     "--issued-tokens", str(work / f"tokens-{h}"), "--vm-name", h, "--vm-uuid", machines[h][0],
                     "--location", "westeurope"]
        if h == "db03":
            imds_args += ["--user-assigned", "uami-db03"]
        start(imds_args)
        token_files.append(work / f"tokens-{h}")
        # This host's agent: the fake, with this host's own directory and machine.
        agent = d / "azcmagent"
        agent.write_text(
            "#!/bin/sh\n"
            f"FAKE_AZCMAGENT_DIR='{d / 'agent'}' FAKE_AZCMAGENT_SYSROOT='{sysroot}' FAKE_AZURE_DIR='{azure}' \\\n"
            f"  exec '{FAKES / 'fake-azcmagent'}' \"$@\"\n")
        agent.chmod(0o755)
        config = {"resource_group": "rg-fleet", "tags": {"fleet": "ansible-test"}}
        if h == "web01":
            config["resource_name"] = "{hostname}-{vm_uuid8}"
        if h == "web02":
            config["agent"] = {"config.mode": "monitor"}
            if with_proxy:
                config["proxy"] = f"http://{proxy_user}:{proxy_password}@127.0.0.1:{proxy_port}"
                config["no_proxy"] = "169.254.169.254"
        if h == "db03":
            config["identity"] = {"client_id": UAMI_NOT_ATTACHED}
        hv = {
            "arc_enroll_install_path": str(d / "usr/local/bin/arc-enroll"),
            "arc_enroll_config_path": str(d / "etc/arc-enroll/config.json"),
            "arc_enroll_state_dir": str(d / "var/lib/arc-enroll"),
            "arc_enroll_sysroot": str(sysroot),
            "arc_enroll_azcmagent": str(agent),
            "arc_enroll_imds_endpoint": f"http://127.0.0.1:{wait_file(work / f'imds-{h}.port')}",
            "arc_enroll_config": config,
        }
        # Three ways to get the binary: web01 from the controller's dist/ (artifact name from the
        # architecture fact), web02 a given file, db03 downloaded (get_url) with the checksum
        # taken from the release's SHA256SUMS.
        if h == "web01":
            hv["arc_enroll_local_dir"] = str(dist)
        if h == "web02":
            hv["arc_enroll_local_file"] = str(BIN)
        if h == "db03":
            hv["arc_enroll_release_url"] = release_url
            hv["arc_enroll_sha256"] = {}
            hv["arc_enroll_sha256sums_file"] = str(dist / "SHA256SUMS")
        hostvars[h] = hv

    inventory = {
        "all": {"children": {"arc_fleet": {
            "hosts": hostvars,
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "ansible_become": False,
                "arc_enroll_version": ver,
                "arc_enroll_sha256": {"x86_64": digest},
                "arc_enroll_owner": user,
                "arc_enroll_group": group,
                "arc_enroll_arm_endpoint": arm,
                "arc_enroll_environment": {
                    "SSL_CERT_FILE": str(ca),
                    # what `check` probes: the fake ARM, never the real cloud's endpoints
                    "ARC_ENROLL_CHECK_ENDPOINTS": arm,
                },
            },
        }}}
    }
    # an empty config, so no ansible.cfg of the machine or the user changes the runs
    (work / "ansible.cfg").write_text("[defaults]\n")
    inv = work / "inventory.yml"
    inv.write_text(json.dumps(inventory, indent=2))

    env = dict(os.environ)
    env.update({
        "ANSIBLE_HOME": str(work / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
        "ANSIBLE_REMOTE_TMP": str(work / "ansible-remote-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "0",
        "ANSIBLE_FORKS": "5",
        "ANSIBLE_PIPELINING": "1",
        "ANSIBLE_CONFIG": str(work / "ansible.cfg"),
    })
    for k in list(env):
        if k.startswith("ARC_ENROLL_") or k.startswith("FAKE_"):
            del env[k]

    outputs = []

    # The README's example inventory parses, with its three hosts in arc_fleet.
    r = subprocess.run([str(Path(ANSIBLE_PLAYBOOK).with_name("ansible-inventory")), "-i",
                        str(PLAYBOOK.with_name("inventory.example.yml")), "--list"],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    try:
        example_hosts = json.loads(r.stdout)["arc_fleet"]["hosts"]
    except (ValueError, KeyError):
        example_hosts = []
    check(r.returncode == 0 and len(example_hosts) == 3, "the example inventory parses: arc_fleet has 3 hosts",
          r.stdout[-1500:])

    def play(name, *args, verbose=True, show=False):
        t = time.time()
        r = subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(inv), str(PLAYBOOK), *(["-vvv"] if verbose else []), *args],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        secs = time.time() - t
        outputs.append((name, r.stdout))
        (work / f"{name}.log").write_text(r.stdout)
        print(f"\n== {name}: ansible-playbook {'-vvv ' if verbose else ''}{' '.join(args)} -> exit {r.returncode} in {secs:.1f} s")
        print(r.stdout.rstrip() if show else recap_text(r.stdout))
        for line in summary_lines(r.stdout):
            print(f"   summary | {line}")
        return r.returncode, r.stdout, recap(r.stdout), secs

    timings = {}

    # 0. --check on machines that have nothing yet: reports what it would do, creates nothing.
    snap = snapshot(hosts_root)
    rc, out, rec, timings["check-fresh"] = play("run0-check-fresh", "--check")
    check(rc == 0 and all(rec.get(h, {}).get("failed") == 0 for h in HOSTS), "check, fresh: no host failed", rec)
    check(all(rec.get(h, {}).get("changed", 0) >= 2 for h in HOSTS),
          "check, fresh: every host reports the changes it would make (binary, settings)", rec)
    check(snapshot(hosts_root) == snap, "check, fresh: no file created", set(snapshot(hosts_root)) ^ set(snap))
    lines = summary_lines(out)
    check(all(f"{h}: check: arc-enroll is not installed: would install it, write the settings and enroll "
              "(preflight needs the binary)" in lines for h in HOSTS), "check, fresh: the summary says so", lines)

    # 0b. A wrong SHA-256 (copy on web01, get_url on db03): refused, nothing installed.
    rc, out, rec, timings["wrong-sha256"] = play(
        "run0b-wrong-sha256", "--limit", "web01,db03", "-e", json.dumps({"arc_enroll_sha256": {"x86_64": "0" * 64}}))
    for h in ["web01", "db03"]:
        check(rec.get(h, {}).get("failed") == 1, f"wrong SHA-256: {h} failed", recap_text(out))
        check(not Path(hostvars[h]["arc_enroll_install_path"]).exists(), f"wrong SHA-256: nothing installed on {h}")
        check(any(l.startswith(f"{h}: FAILED before arc-enroll ran") for l in summary_lines(out)),
              f"wrong SHA-256: the summary says {h} failed before arc-enroll ran", summary_lines(out))
    check(f"SHA-256 {digest}, expected {'0' * 64}" in fatal_msg(out, "web01"),
          "wrong SHA-256 (copy): the message names both checksums", fatal_msg(out, "web01"))
    check("0" * 64 in fatal_msg(out, "db03") and digest in fatal_msg(out, "db03"),
          "wrong SHA-256 (get_url): the message names both checksums", fatal_msg(out, "db03"))

    # 1. First run.
    rc, out, rec, timings["first"] = play("run1-first", "--diff")
    check(rc == 2, "first run: ansible-playbook exits 2 (a host failed)", rc)
    for h in ["web01", "web02"]:
        r = rec.get(h, {})
        check(r.get("failed") == 0 and r.get("changed", 0) >= 1, f"first run: {h} changed, not failed", r)
    check(rec.get("db03", {}).get("failed") == 1, "first run: db03 failed", rec.get("db03"))
    st = task_status(out, "Run arc-enroll connect")
    check(st.get("web01") == "changed" and st.get("web02") == "changed" and st.get("db03") == "ok",
          "first run: the connect task is changed on web01/web02 (enrolled), not on db03", st)
    st = task_status(out, "Fail this host with arc-enroll")
    check(st == {"web01": "skipping", "web02": "skipping", "db03": "fatal"},
          "first run: db03 fails in the exit-code task, the others skip it", st)
    msg = fatal_msg(out, "db03")
    check("arc-enroll connect exited 3" in msg and "no managed-identity token" in msg
          and "Identity not found" in msg and UAMI_NOT_ATTACHED in msg and "assign the identity to the VM" in msg,
          "first run: db03's failure has the exit code, the result line's message and the advice", msg)
    lines = summary_lines(out)
    check(len(lines) == 3, "first run: the summary has one line per host", lines)
    rid = {}
    for h in ["web01", "web02"]:
        line = next((l for l in lines if l.startswith(h + ": ")), "")
        m = re.match(rf"{h}: (/subscriptions/\S+/Microsoft\.HybridCompute/machines/(\S+)) \(enrolled\)$", line)
        check(m is not None, f"first run: summary line for {h} has its resource id and 'enrolled'", line)
        rid[h] = m.group(1) if m else ""
    check(rid.get("web01", "").endswith("/web01-4c4c4544"), "first run: web01's name from {hostname}-{vm_uuid8}", rid)
    check(any(l.startswith("db03: FAILED exit 3 (no_token): ") for l in lines), "first run: summary line for db03", lines)
    for h in HOSTS:
        d = hosts_root / h
        inst = Path(hostvars[h]["arc_enroll_install_path"])
        check(inst.exists() and sha256(inst) == digest and inst.stat().st_mode & 0o777 == 0o755,
              f"first run: {h}: binary installed, SHA-256 matches, 0755")
        cfg = Path(hostvars[h]["arc_enroll_config_path"])
        check(cfg.exists() and cfg.stat().st_mode & 0o777 == 0o600
              and json.loads(cfg.read_text()) == hostvars[h]["arc_enroll_config"],
              f"first run: {h}: config.json written from the role variable, 0600")
        n = len(agent_calls(d, "connect"))
        check(n == (1 if h != "db03" else 0), f"first run: {h}: {n} agent connect call(s)")
    check(Path(hostvars["web01"]["arc_enroll_state_dir"], "state.json").exists(), "first run: web01 has state")
    check("content not shown" in out and proxy_password not in out,
          "first run: the config task ran with its content hidden")
    if with_proxy:
        log = (work / "tinyproxy" / "tinyproxy.log").read_text(errors="replace")
        check("CONNECT" in log, "first run: web02 reached ARM through the authenticating proxy", log[-800:])

    # 2. Second run: nothing changes.
    calls_before = {h: len(agent_calls(hosts_root / h, "connect")) for h in HOSTS}
    rc, out, rec, timings["second"] = play("run2-second")
    for h in HOSTS:
        check(rec.get(h, {}).get("changed") == 0, f"second run: {h} changed=0", rec.get(h))
    check(rec.get("web01", {}).get("failed") == 0 and rec.get("web02", {}).get("failed") == 0
          and rec.get("db03", {}).get("failed") == 1, "second run: web01/web02 ok, db03 failed again", rec)
    lines = summary_lines(out)
    for h in ["web01", "web02"]:
        check(f"{h}: {rid.get(h)} (already enrolled as this machine; nothing to do)" in lines,
              f"second run: summary says {h} was already enrolled", lines)
    check(calls_before == {h: len(agent_calls(hosts_root / h, "connect")) for h in HOSTS},
          "second run: no agent connect")

    # 3. --check on the enrolled fleet: nothing changes.
    snap = snapshot(hosts_root)
    rc, out, rec, timings["check"] = play("run3-check", "--check", "--diff")
    for h in HOSTS:
        check(rec.get(h, {}).get("changed") == 0, f"check mode: {h} changed=0", rec.get(h))
    check(rec.get("web01", {}).get("failed") == 0 and rec.get("web02", {}).get("failed") == 0
          and rec.get("db03", {}).get("failed") == 1, "check mode: web01/web02 ok, db03 fails its preflight", rec)
    check(snapshot(hosts_root) == snap, "check mode: no file of any host changed",
          set(snapshot(hosts_root).items()) ^ set(snap.items()))
    check(calls_before == {h: len(agent_calls(hosts_root / h, "connect")) for h in HOSTS}, "check mode: no agent connect")
    check(task_status(out, "Run arc-enroll connect") in ({}, {h: "skipping" for h in HOSTS}),
          "check mode: connect never ran", task_status(out, "Run arc-enroll connect"))
    lines = summary_lines(out)
    for h in ["web01", "web02"]:
        check(f"{h}: check: enrolled as {rid.get(h)}: connect would change nothing" in lines,
              f"check mode: summary says connect would change nothing on {h}", lines)
    db = next((l for l in lines if l.startswith("db03: ")), "")
    check("not enrolled: connect would enroll" in db and "Identity not found" in db,
          "check mode: db03 would enroll, and its token problem is reported", db)

    # 4. web01 becomes a clone of itself (a new VM from its disk), web02's agent settings drift.
    set_machine(hosts_root / "web01", "9e0a7b2c-1111-2222-3333-444455556666", "fedcba9876543210fedcba9876543210", "web01")
    r = subprocess.run([hostvars["web02"]["arc_enroll_azcmagent"], "config", "set", "config.mode", "full"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    check(r.returncode == 0, "drift: web02's agent config.mode set to full behind arc-enroll's back", r.stdout)
    snap = snapshot(hosts_root)
    rc, out, rec, timings["check-after-change"] = play("run4-check-after-change", "--check")
    for h in HOSTS:
        check(rec.get(h, {}).get("changed") == 0, f"check mode after changes: {h} changed=0", rec.get(h))
    check(snapshot(hosts_root) == snap, "check mode after changes: no file of any host changed",
          set(snapshot(hosts_root).items()) ^ set(snap.items()))
    lines = summary_lines(out)
    check(f"web01: check: a clone of {rid.get('web01')}: connect would act per clone_policy (default: re-enroll as itself)" in lines,
          "check mode after changes: web01 is reported as a clone", lines)
    check(f"web02: check: enrolled as {rid.get('web02')}: connect would repair agent settings config.mode" in lines,
          "check mode after changes: web02's drift is reported", lines)

    # 5. The real run: the clone re-enrolls as itself, the drift is repaired.
    rc, out, rec, timings["after-change"] = play("run5-after-change")
    st = task_status(out, "Run arc-enroll connect")
    check(st.get("web01") == "changed" and st.get("web02") == "changed",
          "after changes: connect is changed on web01 (clone re-enrolled) and web02 (settings repaired)", st)
    check(rec.get("web01", {}).get("changed") == 1 and rec.get("web02", {}).get("changed") == 1
          and rec.get("db03", {}).get("changed") == 0, "after changes: recap changed=1 exactly where arc-enroll acted", rec)
    lines = summary_lines(out)
    check(any(re.match(r"web01: /subscriptions/\S+/machines/web01-9e0a7b2c \(enrolled\)$", l) for l in lines),
          "after changes: web01 enrolled as itself (web01-9e0a7b2c)", lines)
    check(f"web02: {rid.get('web02')} (already enrolled as this machine; agent settings repaired)" in lines,
          "after changes: web02's settings repaired", lines)

    # 6. And again, at the default verbosity (what an operator sees): nothing to do.
    rc, out, rec, timings["again (default verbosity)"] = play("run6-again", verbose=False, show=True)
    for h in HOSTS:
        check(rec.get(h, {}).get("changed") == 0, f"again: {h} changed=0", rec.get(h))
    check(len(summary_lines(out)) == 3 and "exited 3 (no_token)" in fatal_msg(out, "db03"),
          "again: at the default verbosity too, the summary and db03's reason are shown", out[-3000:])

    # The secret scan, over every run's full -vvv output.
    tokens = [t for f in token_files if f.exists() for t in f.read_text().split() if t]
    check(len(tokens) >= 6, f"secret scan: the fake IMDSes issued {len(tokens)} tokens (web01, web02 in several runs)")
    named = [(f"token #{i + 1}", t) for i, t in enumerate(tokens)]
    if with_proxy:
        named.append(("proxy password", proxy_password))
    frags = fragments(named)
    # the scanner finds what it is meant to find
    planted = {
        "a raw token fragment": f"xx{tokens[-1][len(tokens[-1]) // 2:][:20]}yy",
        "a base64-encoded token": base64.b64encode(tokens[0].encode()).decode(),
        "a hex-encoded token fragment": tokens[1][200:230].encode().hex(),
    }
    if with_proxy:
        planted["the percent-encoded password"] = urllib.parse.quote("p@" + proxy_password, safe="")
        planted["the base64 of user:password (Proxy-Authorization)"] = base64.b64encode(
            f"{proxy_user}:{proxy_password}".encode()).decode()
    for what, text in planted.items():
        check(scan(text, frags), f"secret scan: the scanner finds {what}")
    total = 0
    for name, text in outputs:
        total += len(text)
        hits = scan(text, frags)
        check(not hits, f"secret scan: no token or proxy password in {name} ({len(text)} characters at -vvv)",
              {k: (i, w, text[max(0, i - 80):i + 80]) for k, (i, w) in hits.items()})
    # The scan can fail: the same kind of copy task without no_log prints the password (--diff).
    if with_proxy:
        r = subprocess.run(
            [str(Path(ANSIBLE_PLAYBOOK).with_name("ansible")), "-i", str(inv), "web02", "-vvv", "--diff", "-m", "ansible.builtin.copy",
             "-a", json.dumps({"content": json.dumps(hostvars["web02"]["arc_enroll_config"]),
                               "dest": str(work / "control-config.json"), "mode": "0600"})],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        check(r.returncode == 0 and "proxy password" in scan(r.stdout, frags),
              "secret scan control: a copy task without no_log leaks the password with --diff, and the scan sees it",
              r.stdout[-1500:])
    print(f"\nansible-test: scanned {total} characters of Ansible output for {len(named)} secrets "
          f"({len(frags)} fragments of {FRAG} characters)")
    print("ansible-test: wall time per ansible-playbook run (3 hosts; wrong-sha256: 2): "
          + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    print(f"ansible-test: total {time.time() - t_all:.1f} s")
    if not keep and failed == 0:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"ansible-test: logs kept in {work}")


def set_machine(d, product_uuid, machine_id, hostname):
    sysroot = d / "sysroot"
    (sysroot / "sys/class/dmi/id/product_uuid").write_text(product_uuid + "\n")
    (sysroot / "etc/machine-id").write_text(machine_id + "\n")
    (sysroot / "etc/hostname").write_text(hostname + "\n")


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
    print(f"ansible-test: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
