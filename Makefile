# The two commands: `make demo` (quickstart on a local store) and `make test` (every test).
# `make bench` (not part of `make test`) measures memotag against bare SQLite and its peers.
# `make compat` (not part of `make test`) runs this tree against earlier releases (compat/).
# Both install what they need: Python tools go into .venv/ at the repo root.

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
CARGO ?= cargo

.PHONY: demo test test-rust test-python test-netfs venv develop bench compat clean lint

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet "maturin>=1.5,<2" "pytest>=7" numpy pandas

venv: $(VPY)

demo: develop
	$(VPY) examples/quickstart.py demo.memo
	@echo "\n--- the same script again: everything is now read from demo.memo ---\n"
	$(VPY) examples/quickstart.py demo.memo

# Builds the Python extension into .venv (release mode: the hot path is measured, not assumed).
develop: $(VPY)
	cd python && ../$(VENV)/bin/maturin develop --release --quiet

test: test-rust test-python test-netfs

test-python: develop
	$(VPY) -m pytest python/tests -q

# Shared mode over a real network filesystem: one directory mounted twice over sshfs (installs
# openssh-server and sshfs with apt). Prints one SKIPPED line where it cannot run (not root, no
# /dev/fuse, no apt).
test-netfs: develop
	CARGO="$(CARGO)" NETFS_PYTHON="$(abspath $(VPY))" bash tests/netfs/run.sh

# --no-fail-fast: a failing test binary does not keep the others from running (and reporting).
test-rust:
	$(CARGO) build --release --all-targets
	$(CARGO) test --release --no-fail-fast --workspace --exclude memotag-python

# Benchmarks (docs/benchmarks.md): the Rust benches (benches/run.sh -> <target>/bench/rust.json),
# then memotag against joblib.Memory, diskcache and lru_cache from Python (benches/peers.py ->
# <target>/bench/peers.json and peers.png). <target> is $$CARGO_TARGET_DIR or ./target.
# MEMOTAG_BENCH_QUICK=1 make bench: shorter measurements, 10k and 100k sizes, fewer peer calls.
BENCH_OUT = $${CARGO_TARGET_DIR:-target}/bench
ifeq ($(MEMOTAG_BENCH_QUICK),1)
BENCH_ENV := MEMOTAG_CRITERION_ARGS="--warm-up-time 0.5 --measurement-time 1 --sample-size 10" \
	MEMOTAG_BENCH_SIZES=10000,100000 MEMOTAG_DISK_N=10000
PEERS_ARGS ?= --n 500 --array-reps 10
else
BENCH_ENV :=
PEERS_ARGS ?=
endif

bench: $(VPY)
	$(VPY) -m pip install --quiet joblib diskcache matplotlib
	$(MAKE) develop
	$(BENCH_ENV) benches/run.sh
	$(VPY) benches/peers.py $(PEERS_ARGS)
	@echo "\nbenchmark outputs: $(BENCH_OUT)/rust.json, $(BENCH_OUT)/peers.json, $(BENCH_OUT)/peers.png"

# Compatibility with earlier releases (compat/run.sh, README "Compatibility checks"): builds each
# release point of compat/releases into <target>/compat/<tag>/ (once per commit), then runs the
# old/new matrix of compat/scenarios.py; the matrix is printed and kept in
# <target>/compat/matrix-<tag>.txt. COMPAT_RELEASES="v0.1.0" picks releases, COMPAT_ROUNDS the
# rounds of the concurrent-writer scenarios (default 3).
compat: develop
	CARGO="$(CARGO)" PYTHON="$(PYTHON)" COMPAT_NEW_PYTHON="$(abspath $(VPY))" \
		MATURIN="$(abspath $(VENV))/bin/maturin" bash compat/run.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	rm -rf target $(VENV) demo.memo demo.memo-* demo.memo.blobs
