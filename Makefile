# Two commands matter: `make run` starts a node, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS_STAMP := $(VENV)/.installed-tools
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

# Installs come from the lock files in requirements/, every file pinned and checked against its
# sha256: tools.txt holds pip, the build backend (setuptools, from [build-system]) and uv, which
# writes the locks; run.txt the node's dependencies; test.txt those plus the test dependencies, at
# the same versions. Nothing is built in an isolated environment (which would fetch setuptools
# unchecked): builds use the locked setuptools, and the project itself goes in last, editable,
# without dependencies and without looking at any index. (setuptools' notice that folders named like
# the package in the working directory may shadow it is silenced: here they are the package.)
PIP := $(BIN)/python -m pip --disable-pip-version-check
LOCKED := $(PIP) install --quiet --require-hashes --no-build-isolation
PROJECT := PYTHONWARNINGS='ignore:Editable installation' \
	$(PIP) install --quiet --no-deps --no-build-isolation --no-index -e .

.PHONY: install run test test-sqlite test-postgresql lint bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(TOOLS_STAMP): requirements/tools.txt | $(BIN)/python
	$(PIP) install --quiet --require-hashes -r requirements/tools.txt
	touch $@

$(RUN_STAMP): pyproject.toml requirements/run.txt $(TOOLS_STAMP)
	$(LOCKED) -r requirements/run.txt
	$(PROJECT)
	touch $@

$(TEST_STAMP): pyproject.toml requirements/run.txt requirements/test.txt $(TOOLS_STAMP)
	$(LOCKED) -r requirements/test.txt
	$(PROJECT)
	touch $@ $(RUN_STAMP)

# `make lock` writes the lock files from pyproject.toml for Python 3.11 on Linux x86_64 (each pin
# lists the hashes of all its release files). Versions already locked are kept, so run it after
# changing pyproject.toml's dependencies. `make lock UPGRADE=aiohttp` moves one package (or several,
# space-separated) to its newest allowed version; `make lock UPGRADE=all` moves every package.
UPGRADE ?=
UV_COMPILE = $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-unknown-linux-gnu --custom-compile-command 'make lock' \
	$(if $(filter all,$(UPGRADE)),--upgrade,$(foreach p,$(UPGRADE),--upgrade-package $(p)))
BUILD_REQUIRES = $(BIN)/python -c 'import tomllib; \
	print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'

lock: $(TOOLS_STAMP)
	{ printf 'pip\nuv\n'; $(BUILD_REQUIRES); } | $(UV_COMPILE) - -o requirements/tools.txt
	$(UV_COMPILE) pyproject.toml --extra test -c requirements/tools.txt -o requirements/test.txt
	$(UV_COMPILE) pyproject.toml -c requirements/tools.txt -c requirements/test.txt \
		-o requirements/run.txt

# `make install`: the node and its locked dependencies into .venv, nothing started; a server runs
# .venv/bin/healthnode under systemd (docs/OPERATIONS.md, "Installing on Debian").
install: $(RUN_STAMP)

# `make run PORT=8081 DOMAIN=forum.example.org`: the port to listen on and the public name every
# IRI and link is minted from. Given, they override data/healthnode.toml and the environment;
# otherwise those apply, and then the defaults (port 8080, domain localhost:PORT, a development
# node on http://).
PORT ?=
DOMAIN ?=

run: $(RUN_STAMP)
	$(BIN)/healthnode serve $(if $(PORT),--port $(PORT)) $(if $(DOMAIN),--domain $(DOMAIN))

# The suite runs on SQLite always, and on PostgreSQL when HEALTHNODE_TEST_PG_URL is set
# (.ci/run sets it under CI=true).
test: $(TEST_STAMP)
	$(BIN)/ruff check node web keys federation tests bench
	HEALTHNODE_TEST_DATABASE=sqlite $(BIN)/python -m pytest -q
	@if [ -n "$$HEALTHNODE_TEST_PG_URL" ]; then \
		echo "== the same suite on PostgreSQL =="; \
		HEALTHNODE_TEST_DATABASE=postgresql $(BIN)/python -m pytest -q; \
	else \
		echo "(PostgreSQL run skipped: HEALTHNODE_TEST_PG_URL is not set)"; \
	fi

# Speed and memory figures, as ratios against baselines measured in the same run (bench/README.md).
bench: $(RUN_STAMP)
	$(BIN)/python -m bench.fanout
	$(BIN)/python -m bench.fanout --servers 1 --shared 0 --latency 0.2
	$(BIN)/python -m bench.inbox
	$(BIN)/python -m bench.thread
	$(BIN)/python -m bench.floors
	$(BIN)/python -m bench.load  # PostgreSQL runs too when HEALTHNODE_BENCH_PG_URL is set

lint: $(TEST_STAMP)
	$(BIN)/ruff check node web keys federation tests

clean:
	rm -rf $(VENV) .pytest_cache
