# Tributary — the two commands of the README are `make demo` and `make test`.
# Everything they need (Postgres binaries, a Python venv with pymongo) is installed on first use.

SHELL := /bin/bash
CARGO ?= cargo
# Spec tests and sample datasets live beside the clone (never copied into the repository).
export TRIBUTARY_FIXTURES ?= $(abspath $(CURDIR)/../shared/fixtures)

.PHONY: all build test test-rust test-py test-fidelity test-fidelity-short lint deps venv demo bench fuzz test-real check-deploy clean

all: build

build:
	$(CARGO) build --release --workspace

deps:
	@bash scripts/ensure-postgres.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The Rust tests drive pymongo too (a client we did not write), so the venv comes first.
venv:
	@bash scripts/ensure-venv.sh

test-rust: deps venv
	$(CARGO) test --workspace

test-py:
	bash sim/tests/py/run.sh

# pymongo's own test suite (PyPI sdist 4.20.1, unpatched) against mongo-sim, one fresh simulator
# per file; fails on a failure not in sim/fidelity/expected-failures.txt or on a listed one that
# now passes. About 8 minutes on 2 cores, so `make test` runs only the short subset below
# (sim/FIDELITY.md).
test-fidelity:
	bash sim/fidelity/run.sh

# The part of it Tributary leans on (change streams, transactions, tailable cursors and
# getMore), about a minute; skips with one line when the sdist cannot be fetched.
test-fidelity-short:
	bash sim/fidelity/run.sh --short

# `promtool check rules` on deploy/prometheus/alerts.yml (installs Debian's `prometheus` when
# promtool is missing); the metric names deploy/ uses are checked by the Rust test ops::deploy.
check-deploy:
	@bash scripts/check-deploy.sh

# The whole suite: formatting and lints, the shipped alert rules (promtool), Rust unit +
# integration tests (real Postgres, the real MongoDB driver against mongo-sim over TCP), then
# pymongo and the MongoDB spec tests, and the short run of pymongo's own suite.
# The Python suites take the same time on the debug mongo-sim `cargo test` has just built as on a
# release one (measured: 19 s and 43 s either way), so `make test` skips the release build.
test: lint check-deploy test-rust
	$(CARGO) build -q -p mongo-sim
	MONGO_SIM_BIN="$$($(CARGO) metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/mongo-sim" \
		$(MAKE) test-py test-fidelity-short

demo: deps
	bash scripts/demo.sh

bench: deps
	bash scripts/bench.sh

# The document-space fuzzer (tests/fuzz, docs/testing.md) for as long as asked; `make test`
# runs a bounded round of it. Prints the documents and mappings tried.
FUZZ_SECONDS ?= 600
fuzz: deps
	TRIBUTARY_FUZZ_SECONDS=$(FUZZ_SECONDS) $(CARGO) test --test main fuzz::end_to_end -- --nocapture
	SIM_FUZZ_SECONDS=$(FUZZ_SECONDS) $(CARGO) test -p mongo-sim --test wire_fuzz -- --nocapture

# End-to-end suite against a real MongoDB replica set and Postgres (e.g. `docker compose up -d`;
# from the host, directConnection=true: the set's member calls itself mongo:27017, a name only the
# compose network resolves):
#   MONGO_URI='mongodb://localhost:27017/?directConnection=true' \
#   DATABASE_URL='postgres://postgres:tributary@localhost:5432/postgres' make test-real
test-real:
	@test -n "$$MONGO_URI" || { echo "set MONGO_URI to a MongoDB replica set (see docker-compose.yml)"; exit 2; }
	TRIBUTARY_TEST_MONGO_URI="$$MONGO_URI" TEST_DATABASE_URL="$${DATABASE_URL:-$$TEST_DATABASE_URL}" \
		$(CARGO) test --test main -- --test-threads=1 e2e

clean:
	$(CARGO) clean
