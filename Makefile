# Two entry points (see README): `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench system-deps venv

venv: $(STAMP)

# torch is installed FIRST and pinned: a bare range makes pip fetch a multi-GB CUDA build.
# GPU users: install the CUDA build of torch>=2.11 for their driver into .venv before `make`.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# GDAL command-line tools (ogrinfo/gdalinfo) for the real-client tests; Debian package.
system-deps:
	@command -v ogrinfo >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq gdal-bin >/dev/null; }

demo: $(STAMP)
	$(BIN)/cracksurvey process examples/survey --overwrite

test: $(STAMP) system-deps
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check cracksurvey tests workflows

bench: $(STAMP)
	$(BIN)/python workflows/benchmark.py
