# ringcast — the two commands the README promises, and their helpers.
#
#   make run    build and start the node with its embedded defaults
#   make test   the whole suite: format, lints, unit, property and integration tests
#
# Everything the suite needs is installed by the targets themselves, so a
# fresh machine with only the Rust toolchain can run both.

CARGO ?= cargo
NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)

TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
VENV := .venv

.PHONY: run test fmt-check clippy unit selfcheck python-clients client-unit browser fuzz-smoke bench fuzz autobahn

# make run serves the demo on loopback, where publishing needs no key.
# Other flags: make run ARGS="--shards 4"; another address:
# make run RUN_ARGS="--listen 0.0.0.0:8080 --demo" ARGS="--publish-key-file keys.txt"
RUN_ARGS ?= --listen 127.0.0.1:8080 --demo --data-dir target/ringcast-data
ARGS ?=
run:
	$(CARGO) run --release -p ringcast -- $(RUN_ARGS) $(ARGS)

test: fmt-check clippy unit selfcheck python-clients client-unit browser fuzz-smoke

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The multi-node tests start their own redis-server (and nginx): Debian's,
# installed on first use.
unit:
	./scripts/cluster-deps.sh
ifeq ($(NEXTEST),yes)
	$(CARGO) nextest run --workspace --no-fail-fast
	$(CARGO) test --workspace --doc
else
	$(CARGO) test --workspace --no-fail-fast
endif

selfcheck:
	$(CARGO) run -q -p ringcast-codec --example selfcheck

# The server against independent Python clients (the `websockets` library,
# urllib); the virtualenv is created on first use.
$(VENV)/.installed: tests/python/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

python-clients: $(VENV)/.installed
	./scripts/cluster-deps.sh
	$(CARGO) build -p ringcast
	RINGCAST_BIN=$(TARGET_DIR)/debug/ringcast $(VENV)/bin/python tests/python/ws_clients.py

# The browser client's own logic (backoff, cursors, de-duplication, the
# SSE parser), with Node's built-in test runner.
client-unit:
	node --test client/test/

# The client and the demo in real Chromium (Debian's, installed on first
# use with playwright-core from npm), against a debug build of the node;
# the cluster test starts its own redis-server.
browser:
	./scripts/browser-deps.sh
	./scripts/cluster-deps.sh
	$(CARGO) build -p ringcast
	cd tests/browser && RINGCAST_BIN=$(abspath $(TARGET_DIR))/debug/ringcast node --test --test-concurrency=1 --test-timeout=120000 ./

# criterion benchmarks; results go to docs/benchmarks.md by hand, with the date.
bench:
	$(CARGO) bench -p ringcast-codec

# Coverage-guided fuzzing of every target (codec/fuzz, server/fuzz),
# FUZZ_SECONDS per target (default 60), with AddressSanitizer.
FUZZ_SECONDS ?= 60
fuzz:
	./scripts/fuzz.sh $(FUZZ_SECONDS)

# The same targets, briefly, as part of the suite: FUZZ_TEST_SECONDS each
# (default 20), panics only (no sanitizer: about 3x the executions; only
# the uring crate has `unsafe`, and no target reaches it).
FUZZ_TEST_SECONDS ?= 20
fuzz-smoke:
	FUZZ_SANITIZER=none ./scripts/fuzz.sh $(FUZZ_TEST_SECONDS)

# WebSocket conformance (Autobahn|Testsuite 1-7, 10) against a release build;
# needs Python 2.7 (see scripts/autobahn.sh).
autobahn:
	$(CARGO) build --release -p ringcast
	./scripts/autobahn.sh $(TARGET_DIR)/release/ringcast
