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

## Test prerequisites: tinyproxy (a real HTTP proxy for the proxy tests).
setup-test:
	@command -v tinyproxy >/dev/null || [ -x /usr/sbin/tinyproxy ] || { echo "installing tinyproxy"; (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tinyproxy; }

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
## against a fake IMDS and a fake agent, then boot a clone and check it enrolls as itself.
e2e: deb deb-test setup-e2e
	$(CARGO) build --locked --release --target $(TARGET) -p arc-enroll-fakes --bin fake-azcmagent
	$(CARGO) build --locked -p arc-enroll-fakes --bin fake-imds
	bash tests/e2e/run.sh --deb $$(ls $(DEB_DIR)/arc-enroll_*_amd64.deb | head -1) \
	  --fake-agent $(FAKE_AGENT_MUSL) --fake-imds $(FAKE_IMDS_BIN) --arc-enroll $(RELEASE_BIN)
