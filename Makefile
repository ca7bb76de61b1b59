# Quick start: `make demo` runs the main job, `make test` runs the spec tests.
# Both create ./.venv and install fdbert into it (editable, compiling the native extension).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
NATIVE_SRC := setup.py pyproject.toml $(wildcard fdbert_native/*.pyx fdbert_native/*.pxd fdbert_native/*.pxi fdbert_native/csrc/*)

.PHONY: demo test test-native test-pure bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-demo: $(BIN)/python $(NATIVE_SRC)
	$(BIN)/pip install -e '.[demo]'
	touch $@

$(VENV)/.installed-dev: $(BIN)/python $(NATIVE_SRC)
	$(BIN)/pip install -e '.[dev]'
	touch $@ $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	HF_HUB_OFFLINE=1 $(BIN)/fdbert demo

# The suite runs twice: as installed (native backend where it builds), then forced to pure Python.
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest spec_tests
	FDBERT_PURE_PYTHON=1 $(BIN)/python -m pytest spec_tests -m "not native_only"

bench: $(VENV)/.installed-dev
	$(BIN)/pip install -e '.[bench]'
	HF_HUB_OFFLINE=1 $(BIN)/fdbert bench

clean:
	rm -rf $(VENV) build *.egg-info fdbert_native/*.so fdbert_native/_*.c
