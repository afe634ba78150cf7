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
	$(BIN)/python -m cracksurvey.warm
	touch $(STAMP)

# Real clients for the tests, from Debian: GDAL tools (ogrinfo/gdalinfo), QGIS Python bindings
# (headless, for the system python3) and Chromium (report rendering). Measured here: about 3 min
# for python3-qgis + chromium on a fresh machine; skipped when they are already there.
SYSTEM_DEPS := gdal-bin python3-qgis chromium
system-deps:
	@missing=""; for p in $(SYSTEM_DEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing (a few minutes, once)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

demo: $(STAMP)
	$(BIN)/cracksurvey process examples/survey --overwrite
	$(BIN)/cracksurvey process examples/street --overwrite

# CI (.ci/run) runs `make test`: the lint runs first, then every test and docstring example.
# The tests whose numbers depend on the CPU's instruction set run a second time with the CPU
# capped to AVX2 (the kernels of torch, oneDNN, numba, numpy and OpenBLAS as an AVX2-only CPU such
# as AMD Zen 3 runs them; precision auto is then fp32), so a machine with AVX-512 or AMX checks
# the AVX2 kind too. On an AVX2-only CPU it is the same run again. Any test or command can run
# this way: `env $(AVX2_ONLY) ...` (docs/performance.md, "Precision").
AVX2_ONLY := ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 NUMBA_CPU_NAME=haswell \
	NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" OPENBLAS_CORETYPE=Haswell
ISA_TESTS := tests/test_cpu_ops.py tests/test_precision.py tests/test_shipped_model.py \
	tests/test_model.py tests/test_width.py tests/test_width_pipeline.py \
	tests/test_width_profile.py tests/test_topo.py tests/test_verify.py tests/test_tiling.py

test: $(STAMP) system-deps lint
	$(BIN)/python -m pytest
	env $(AVX2_ONLY) $(BIN)/python -m pytest $(ISA_TESTS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check cracksurvey tests workflows qgis_plugin
	$(BIN)/ruff format --check cracksurvey
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python workflows/benchmark.py
