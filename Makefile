# arc-enroll — build, test, demo. Works on a bare Debian machine: missing tools are installed.
SHELL := /bin/bash
CARGO ?= cargo
TARGET := x86_64-unknown-linux-musl
RELEASE_BIN := target/$(TARGET)/release/arc-enroll
FAKES_BIN := target/debug

.PHONY: all build test demo lint fmt clean setup-musl setup-test bench

all: build

## Toolchain setup (idempotent): the musl target and musl-tools (C compiler for ring).
setup-musl:
	@rustup target list --installed 2>/dev/null | grep -qx $(TARGET) || rustup target add $(TARGET)
	@command -v musl-gcc >/dev/null || { echo "installing musl-tools"; (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools; }

## Test prerequisites: tinyproxy (a real HTTP proxy for the proxy tests), curl (tests/ecosystem.rs
## compares the proxy rules with a real curl), openssl (a negative-serial certificate at test time).
setup-test:
	@command -v tinyproxy >/dev/null || [ -x /usr/sbin/tinyproxy ] || { echo "installing tinyproxy"; (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tinyproxy; }
	@command -v curl >/dev/null || { echo "installing curl"; (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl; }
	@command -v openssl >/dev/null || { echo "installing openssl"; (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl; }

## Static, stripped, LTO release binary.
build: setup-musl
	$(CARGO) build --release --locked --target $(TARGET) --bin arc-enroll
	@file $(RELEASE_BIN)
	@ls -l $(RELEASE_BIN)

## Every test: unit tests, the real binary against fakes, a real proxy.
test: setup-test
	$(CARGO) build --workspace --locked
	$(CARGO) test --workspace --locked
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) fmt --all -- --check

## A full enrollment against the bundled fake IMDS and fake azcmagent, on loopback.
demo: build
	$(CARGO) build --locked -p arc-enroll-fakes
	ARC_ENROLL_BIN=$(RELEASE_BIN) FAKES=$(FAKES_BIN) bash examples/demo.sh

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean

## ---- Release: static x86_64 and aarch64 binaries, .debs, .rpms, SHA256SUMS under dist/ ----
AARCH64 := aarch64-unknown-linux-musl
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
CARGO_OUT := $(or $(CARGO_TARGET_DIR),target)
DIST := dist
DIST_X86 := $(DIST)/arc-enroll-$(VERSION)-x86_64-linux
DIST_ARM := $(DIST)/arc-enroll-$(VERSION)-aarch64-linux
# ring's C and assembly, and the final link, go through Debian's aarch64 cross gcc; rustc links
# the musl crt objects and libc.a that ship with the rustup target (self-contained), so no
# aarch64 musl from Debian is needed.
AARCH64_ENV := CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
	CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar
# Tests speed the binary's clock up (ARC_ENROLL_TIME_SCALE); under emulation every request is
# slower, so the runner divides that speed-up by this factor (socket time-outs stay realistic).
EMULATION_SLOWDOWN ?= 10
QEMU_AARCH64 = $(shell command -v qemu-aarch64 || command -v qemu-aarch64-static)

.PHONY: release test-release setup-aarch64 setup-qemu setup-rpm rpm-test

## The aarch64 musl target and the cross compiler/linker (idempotent).
setup-aarch64:
	@rustup target list --installed 2>/dev/null | grep -qx $(AARCH64) || rustup target add $(AARCH64)
	@command -v aarch64-linux-gnu-gcc >/dev/null || { echo "installing gcc-aarch64-linux-gnu"; (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu; }

## rpmbuild and rpmlint for the .rpm files (Debian's rpm and rpmlint packages).
setup-rpm:
	@command -v rpmbuild >/dev/null || { echo "installing rpm"; (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rpm; }
	@command -v rpmlint >/dev/null || { echo "installing rpmlint"; (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rpmlint; }

## qemu-aarch64 (user-mode emulation) to run the aarch64 binary on this machine.
setup-qemu:
	@command -v qemu-aarch64 >/dev/null || command -v qemu-aarch64-static >/dev/null || { echo "installing qemu-user"; (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user; }

release: setup-musl setup-aarch64 setup-rpm assets
	$(CARGO) build --release --locked --target $(TARGET) --bin arc-enroll
	$(AARCH64_ENV) $(CARGO) build --release --locked --target $(AARCH64) --bin arc-enroll
	rm -rf $(DIST) && mkdir -p $(DIST)
	cp $(CARGO_OUT)/$(TARGET)/release/arc-enroll $(DIST_X86)
	cp $(CARGO_OUT)/$(AARCH64)/release/arc-enroll $(DIST_ARM)
	@for b in $(DIST_X86) $(DIST_ARM); do \
	  if command -v file >/dev/null; then file -b $$b | grep -Eq 'statically linked|static-pie linked' || { echo "$$b is not static: $$(file -b $$b)"; exit 1; }; \
	  elif readelf -l $$b 2>/dev/null | grep -q INTERP; then echo "$$b has a dynamic loader"; exit 1; fi; \
	done
	bash packaging/build-deb.sh $(DIST_X86) $(ASSETS_DIR) $(DIST) amd64
	bash packaging/build-deb.sh $(DIST_ARM) $(ASSETS_DIR) $(DIST) arm64
	bash packaging/build-rpm.sh $(DIST_X86) $(ASSETS_DIR) $(DIST) x86_64
	bash packaging/build-rpm.sh $(DIST_ARM) $(ASSETS_DIR) $(DIST) aarch64
	bash packaging/rpm-test.sh $(DIST)/arc-enroll-$(VERSION)-1.x86_64.rpm $(DIST)/arc-enroll-$(VERSION)-1.aarch64.rpm
	cd $(DIST) && sha256sum arc-enroll-$(VERSION)-*-linux arc-enroll_$(VERSION)_*.deb arc-enroll-$(VERSION)-1.*.rpm > SHA256SUMS && sha256sum -c --quiet SHA256SUMS
	@n=$$(wc -l < $(DIST)/SHA256SUMS); [ "$$n" = 6 ] || { echo "SHA256SUMS has $$n lines, want 6 (2 binaries, 2 .debs, 2 .rpms)"; exit 1; }
	@cd $(DIST) && ls -l && cat SHA256SUMS
	@command -v file >/dev/null && file $(DIST_X86) $(DIST_ARM) || true

## Inspect the .rpm files in dist/ again (make release runs this too): rpm -qip/-qlp, payload, rpmlint.
rpm-test: setup-rpm
	bash packaging/rpm-test.sh $(DIST)/arc-enroll-$(VERSION)-1.x86_64.rpm $(DIST)/arc-enroll-$(VERSION)-1.aarch64.rpm

## The binary tests (every tests/*.rs) against the dist/ aarch64 binary under qemu-aarch64; the
## fakes and the test harness stay native. Not part of `make test`, which stays fast.
test-release: release setup-qemu setup-test
	$(CARGO) build --workspace --locked
	@log=$$(mktemp) && runner=$$(mktemp $(abspath $(CARGO_OUT))/qemu-aarch64-runner.XXXXXX) && trap 'rm -f $$log $$runner' EXIT && \
	{ echo '#!/bin/sh'; echo "echo x >> $$log"; \
	  echo 'if [ -n "$$ARC_ENROLL_TIME_SCALE" ]; then ARC_ENROLL_TIME_SCALE=$$(awk -v s="$$ARC_ENROLL_TIME_SCALE" -v f=$(EMULATION_SLOWDOWN) "BEGIN { s /= f; print (s < 1 ? 1 : s) }"); export ARC_ENROLL_TIME_SCALE; fi'; \
	  echo 'exec $(QEMU_AARCH64) "$$@"'; } > $$runner && chmod +x $$runner && \
	ARC_ENROLL_BIN=$(abspath $(DIST_ARM)) ARC_ENROLL_BIN_RUNNER=$$runner ARC_ENROLL_EXPECT_TARGET=$(AARCH64) \
	  $(CARGO) test --locked --no-fail-fast -p arc-enroll --test '*' 2>&1 | tee $$log.out; rc=$${PIPESTATUS[0]}; \
	counts=$$(awk '/^test result:/ { for (i = 2; i <= NF; i++) { if ($$i ~ /^passed/) p += $$(i-1); if ($$i ~ /^failed/) f += $$(i-1) } } END { printf "%d passed, %d failed", p, f }' $$log.out); \
	echo "test-release: $$counts in the binary tests against $(DIST_ARM); $$(wc -l < $$log) arc-enroll runs under $(QEMU_AARCH64)"; \
	rm -f $$log.out; exit $$rc

## Issue 7: reliability and performance under fire.
.PHONY: faults fleet fleet-arm
FLEET_N ?= 50,200,500

## The fault matrix alone, printing its table (case, exit code, wall time); `make test` runs it too.
faults: setup-test
	$(CARGO) build --workspace --locked
	$(CARGO) test --locked --test faults -- --nocapture

## N arc-enroll processes at once (release build) against a fake IMDS throttling at 20 requests/s,
## then the ARM scenario (issue 17): FLEET_ARM_N VMs, each its own identity, against one fake ARM
## with ARM's token buckets (at most FLEET_ARM_MAX_RUNNING at once; FLEET_ARM_SCALE scales the
## buckets; --baseline also runs each N with the buckets off for the machine-bound wall time).
## Each VM needs a few file descriptors in the driver (its fake IMDS, ARM connections), so the
## soft limit is raised to the hard one first.
FLEET_ARM_N ?= 200,1000,2000
FLEET_ARM_MAX_RUNNING ?= 200
FLEET_ARM_SCALE ?= 1,0.1
FLEET_ARM_PATHS ?= token relay
fleet: build
	$(CARGO) build --locked -p arc-enroll-fakes
	$(FAKES_BIN)/fleet --arc-enroll $(RELEASE_BIN) --n $(FLEET_N) --out target/fleet.md
	$(MAKE) --no-print-directory fleet-arm

## The ARM scenario alone.
fleet-arm: build
	$(CARGO) build --locked -p arc-enroll-fakes
	ulimit -n $$(ulimit -Hn) && ulimit -n && for p in $(FLEET_ARM_PATHS); do \
	  $(FAKES_BIN)/fleet --scenario arm --arc-enroll $(RELEASE_BIN) \
	  --n $(FLEET_ARM_N) --max-running $(FLEET_ARM_MAX_RUNNING) --arm-scale $(FLEET_ARM_SCALE) \
	  --path $$p --baseline --out target/fleet-arm-$$p.md || exit 1; done

## BENCHMARKS.md: size, RSS and time against bare curl, 410 recovery, and the Azure CLI path.
## Not part of `make test`; the Azure CLI venv is cached in /var/cache/arc-enroll-bench.
bench: build
	$(CARGO) build --locked -p arc-enroll-fakes
	ARC_ENROLL_BIN=$(RELEASE_BIN) FAKES=$(FAKES_BIN) bash tests/bench/bench.sh BENCHMARKS.md

## ---- Packaging and the real-VM end-to-end test (docs/e2e.md) ----
DEB_DIR := target/deb
ASSETS_DIR := target/assets
FAKE_AGENT_MUSL := target/$(TARGET)/release/fake-azcmagent
FAKE_IMDS_BIN := target/debug/fake-imds

.PHONY: deb deb-test assets setup-deb e2e setup-e2e

setup-deb:
	@bash tests/e2e/setup-host.sh deb

## Man page and bash/zsh/fish completions, generated from the clap definitions.
assets:
	$(CARGO) run --locked --quiet --example gen-assets -- $(ASSETS_DIR)

## The .deb: static binary in /usr/bin, systemd unit, example config, man page, completions; lintian.
deb: build assets setup-deb
	@deb=$$(bash packaging/build-deb.sh $(RELEASE_BIN) $(ASSETS_DIR) $(DEB_DIR)) && \
	  ls -l $$deb && dpkg-deb --info $$deb | sed -n '/Package:/,$$p' && \
	  echo "lintian $$deb" && lintian --fail-on error,warning --suppress-tags-from-file packaging/lintian-suppressed $$deb

## Install the .deb on this machine, run it, purge it (leaves nothing behind).
deb-test: deb
	bash tests/e2e/deb-test.sh $(DEB_DIR)/arc-enroll_*_amd64.deb

setup-e2e:
	@bash tests/e2e/setup-host.sh e2e

## Boot a real Debian VM (QEMU TCG) with cloud-init and the .deb, enroll it through a real proxy
## against a fake IMDS and a fake agent, then boot clones and check each enrolls as itself; once
## per Debian suite (bookworm: cloud-init 22.4, systemd 252; trixie: cloud-init 25.1, systemd 257),
## the suites in parallel (E2E_MODE=sequential to run one after the other).
E2E_SUITES ?= bookworm trixie
E2E_MODE ?= parallel
e2e: deb deb-test setup-e2e
	$(CARGO) build --locked --release --target $(TARGET) -p arc-enroll-fakes --bin fake-azcmagent
	$(CARGO) build --locked -p arc-enroll-fakes --bin fake-imds --bin fake-arm
	bash tests/e2e/suites.sh "$(E2E_SUITES)" $(E2E_MODE) --deb $$(ls $(DEB_DIR)/arc-enroll_*_amd64.deb | head -1) \
	  --fake-agent $(FAKE_AGENT_MUSL) --fake-imds $(FAKE_IMDS_BIN) --fake-arm $(FAKES_BIN)/fake-arm --arc-enroll $(RELEASE_BIN)

## ---- Issue 18: the Ansible role (examples/ansible) against three local hosts and the fakes ----
ANSIBLE_CORE_VERSION := 2.19.14
ANSIBLE_VENV := $(CARGO_OUT)/ansible-venv-$(ANSIBLE_CORE_VERSION)

.PHONY: ansible-test ansible-venv

## A virtual environment with ansible-core from PyPI, cached under target/.
ansible-venv: $(ANSIBLE_VENV)/bin/ansible-playbook
$(ANSIBLE_VENV)/bin/ansible-playbook:
	@python3 -c 'import ensurepip' 2>/dev/null || { echo "installing python3-venv"; (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; }
	rm -rf $(ANSIBLE_VENV) && python3 -m venv $(ANSIBLE_VENV)
	$(ANSIBLE_VENV)/bin/pip install --quiet --disable-pip-version-check 'ansible-core==$(ANSIBLE_CORE_VERSION)'

## The role installs the release binary on three hosts (local connection, one sandbox each),
## enrolls two and fails one (identity not found); re-run, --check, clone and drift; secret scan.
ansible-test: build setup-test ansible-venv
	$(CARGO) build --locked -p arc-enroll-fakes
	ANSIBLE_PLAYBOOK=$(abspath $(ANSIBLE_VENV))/bin/ansible-playbook ARC_ENROLL_BIN=$(abspath $(RELEASE_BIN)) \
	  FAKES=$(abspath $(FAKES_BIN)) $(ANSIBLE_VENV)/bin/python tests/ansible/test_role.py
