# rnnstream: `make run` sets up .venv and serves the demo model; `make test` runs lint, types, the docs build and the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run demo demo-models test lint docs bench soak perf-analyzer redis-server haproxy cluster-demo browser clean

run: $(RUN_STAMP)
	$(PY) -m rnnstream serve

demo: $(RUN_STAMP)
	$(PY) -m rnnstream demo

test: $(TEST_STAMP) lint docs
	$(PY) -m pytest

lint: $(TEST_STAMP)
	$(PY) -m ruff check src tests scripts
	$(PY) -m mypy

# The documentation site (mkdocs.yml, docs/, the API reference from the docstrings): any warning fails it.
# `.venv/bin/mkdocs serve` previews it live. NO_MKDOCS_2_WARNING quiets mkdocs-material's notice about MkDocs 2.
docs: $(TEST_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

BENCH_STAMP := $(VENV)/.installed-bench

# Benchmarks (not part of `make test`): the seed blog's experiment, the engine against ONNX Runtime,
# PyTorch and Keras, context length, streams and stores, generation, the server under 1,000 streams,
# history priming, bf16 drift, and the capacity model's inputs (HAProxy, 3 replicas, Redis Cluster)
# (the server ~5 minutes of it). Figures, charts and the serving and capacity reports go to bench-results/.
bench: $(BENCH_STAMP)
	mkdir -p bench-results
	$(PY) -m rnnstream bench seed --png bench-results/bench_seed.png
	$(PY) -m rnnstream bench engine --json bench-results/engine.json --png bench-results/bench_engine.png
	$(PY) -m rnnstream bench context
	$(PY) -m rnnstream bench streams
	$(PY) -m rnnstream bench generate
	bash -o pipefail -c '$(PY) -m rnnstream bench serve | tee bench-results/serve.txt'
	$(PY) -m rnnstream bench prime
	$(PY) -m rnnstream bench precision
	bash -o pipefail -c '$(PY) -m rnnstream bench capacity --topology | tee bench-results/capacity.txt'

# The fuzz suites of `make test` (hypothesis against a real server over HTTP, WebSocket and gRPC; schemathesis
# against its OpenAPI document; mutated model files against the importers; histories interleaved with steps)
# with ten times the cases and fresh seeds (~10 minutes); prints the cases by target and status.
soak: $(TEST_STAMP)
	RNNSTREAM_FUZZ_SCALE=10 $(PY) -m pytest -s -p no:cacheprovider tests/server/test_fuzz.py tests/server/test_openapi.py \
		tests/server/test_grpc_fuzz.py tests/server/test_model_versions.py tests/importers/test_corrupted_files.py \
		tests/server/test_priming.py
	RNNSTREAM_FUZZ_SCALE=10 RNNSTREAM_FUZZ_PRECISION=int8 $(PY) -m pytest -s -p no:cacheprovider tests/server/test_fuzz.py

# Triton's perf_analyzer (C++, from the tritonclient 2.44 wheel) against `rnnstream serve seed`, over HTTP and
# gRPC streaming with sequences (scripts/perf_analyzer.py); needs Debian's libb64-0d, installed here.
perf-analyzer: $(TEST_STAMP)
	@if ! ldconfig -p | grep -q libb64.so.0d; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libb64-0d; \
	fi
	$(PY) scripts/perf_analyzer.py

# Retrain the bundled text model and CO2 forecaster (Keras, fixed seeds; ~15 minutes on 2 cores).
demo-models: $(TEST_STAMP)
	$(PY) scripts/train_demo_models.py all

$(BENCH_STAMP): $(TEST_STAMP)
	$(PY) -m pip install --quiet -e ".[test,bench]"
	touch $@

# The live page's test drives Debian's Chromium (headless, through Playwright's driver from PyPI).
browser:
	@if ! command -v chromium >/dev/null; then \
		echo "installing chromium from Debian's packages (for the live page's browser test)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; \
	fi

# The Redis tests start their own redis-server (and a 3-node cluster with redis-cli) on free ports.
redis-server:
	@if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then \
		echo "installing redis-server and redis-cli from Debian's packages"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server redis-tools; \
	fi

# HAProxy (round-robin, HTTP and WebSocket) in front of 3 replicas of the seed model, state in a Redis Cluster of
# 3 masters with a replica each, writes acknowledged once a replica has them; Ctrl-C stops it (docs/deployment.md).
cluster-demo: $(RUN_STAMP) redis-server haproxy
	$(PY) -m rnnstream cluster-demo

# The deployment test (tests/cluster/) and `make cluster-demo` put Debian's HAProxy in front of the replicas.
haproxy:
	@if ! command -v haproxy >/dev/null; then \
		echo "installing haproxy from Debian's packages"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq haproxy; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

KERNEL := setup.py $(wildcard src/rnnstream/backends/*.c src/rnnstream/backends/*.h)

$(RUN_STAMP): pyproject.toml $(KERNEL) | $(PY)
	$(PY) -m pip install --quiet -e ".[server,redis,client]"
	touch $@

$(TEST_STAMP): pyproject.toml $(KERNEL) | $(PY) redis-server haproxy browser
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@ $(RUN_STAMP)

clean:
	rm -rf $(VENV) build dist site src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
