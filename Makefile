# agentapi: `make run` serves with SQLite and the offline model; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-ci generate check-generated lint lint-proto install litellm phoenix bench-ttft bench bench-quick clean console check-console chromium test-console

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e clients/python -e '.[dev]'
	# an older server install owned bin/agentapi and takes it along when upgraded: restore the client's
	test -x $(BIN)/agentapi || $(BIN)/pip install -q --force-reinstall --no-deps -e clients/python
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/agentapi serve --migrate

litellm:
	scripts/install-litellm.sh

# Arize Phoenix, the trace backend the tests export to and read back (tests/test_tracing_phoenix.py).
phoenix:
	scripts/install-phoenix.sh

test: $(STAMP) litellm phoenix
	$(BIN)/python -m pytest -q

# CI: every integration suite must run (no skip for MariaDB or LiteLLM), the
# generated code must match the protos, and buf lint must be clean.
test-ci: check-generated lint lint-proto
	AGENTAPI_REQUIRE_ALL=1 $(MAKE) test

generate: $(STAMP)
	$(BIN)/python scripts/generate.py

check-generated: generate
	git diff --exit-code --stat -- clients/python/src || (echo "generated code is stale: run make generate and commit" && exit 1)
	test -z "$$(git status --porcelain -- clients/python/src)" || (echo "untracked generated files: run make generate and commit" && exit 1)

# The web console (console/ -> gateway/console_dist/, committed): esbuild bundles the
# source with the locked npm packages; the output is deterministic, so CI rebuilds
# it and fails on any difference, as check-generated does for the protos.
CONSOLE_NPM := console/node_modules/.package-lock.json

$(CONSOLE_NPM): console/package.json console/package-lock.json
	cd console && npm ci --no-audit --no-fund

console: $(CONSOLE_NPM)
	cd console && node build.mjs

check-console: console
	git diff --exit-code --stat -- gateway/console_dist || (echo "the console build is stale: run make console and commit" && exit 1)
	test -z "$$(git status --porcelain -- gateway/console_dist)" || (echo "untracked console build files: run make console and commit" && exit 1)

# The console's browser tests drive Debian's Chromium (Playwright's own download is unreachable).
chromium:
	test -x /usr/bin/chromium || (apt-get update -q && apt-get install -y -q chromium)

test-console: $(STAMP)
	$(BIN)/python -m pytest -q tests/e2e

lint: $(STAMP)
	$(BIN)/ruff check server gateway tests scripts bench clients/python/src/agentapi
	$(BIN)/ruff format --check server gateway tests scripts bench clients/python/src/agentapi
	$(BIN)/python scripts/unasync_client.py --check
	$(BIN)/mypy --strict clients/python/src/agentapi

lint-proto:
	scripts/buf.sh lint
	scripts/buf.sh format -d --exit-code

# Time to first token of direct, LiteLLM and agentapi arms, interleaved in one run.
bench-ttft: $(STAMP) litellm
	$(BIN)/python -m bench.ttft 200

# Issue 7's benchmark: every arm interleaved in one run on this machine (needs MariaDB at
# 127.0.0.1:3306); writes bench/results/<date>.{json,png,md} and prints the table. ~10 min.
# The bench extra (matplotlib, psutil, pyinstrument) is installed into .venv when pyproject.toml changes.
bench: $(STAMP) litellm
	test $(VENV)/.bench-installed -nt pyproject.toml || ($(BIN)/pip install -q -e '.[bench]' && touch $(VENV)/.bench-installed)
	$(BIN)/python -m bench.run

# The same harness with small counts, under 60 s: proves every arm works, asserts nothing about speed.
bench-quick: $(STAMP) litellm
	test $(VENV)/.bench-installed -nt pyproject.toml || ($(BIN)/pip install -q -e '.[bench]' && touch $(VENV)/.bench-installed)
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) .venv-litellm .venv-phoenix var
