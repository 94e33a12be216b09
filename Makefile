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

## Issue 7: reliability and performance under fire.
.PHONY: faults fleet
FLEET_N ?= 50,200,500

## The fault matrix alone, printing its table (case, exit code, wall time); `make test` runs it too.
faults: setup-test
	$(CARGO) build --workspace --locked
	$(CARGO) test --locked --test faults -- --nocapture

## N arc-enroll processes at once (release build) against a fake IMDS throttling at 20 requests/s.
fleet: build
	$(CARGO) build --locked -p arc-enroll-fakes
	$(FAKES_BIN)/fleet --arc-enroll $(RELEASE_BIN) --n $(FLEET_N) --out target/fleet.md

## BENCHMARKS.md: size, RSS and time against bare curl, 410 recovery, and the Azure CLI path.
## Not part of `make test`; the Azure CLI venv is cached in /var/cache/arc-enroll-bench.
bench: build
	$(CARGO) build --locked -p arc-enroll-fakes
	ARC_ENROLL_BIN=$(RELEASE_BIN) FAKES=$(FAKES_BIN) bash tests/bench/bench.sh BENCHMARKS.md
