# Two commands matter: `make run` starts a node, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test test-sqlite test-postgresql lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(RUN_STAMP)

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

lint: $(TEST_STAMP)
	$(BIN)/ruff check node web keys federation tests

clean:
	rm -rf $(VENV) .pytest_cache
