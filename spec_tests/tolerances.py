"""Named tolerances of fdbert's spec tests; each says why it is not zero.

Integer paths are compared exactly and have no entry here. A float tolerance is loosened only with a
reason written next to it.
"""

# fp32 reference vs Hugging Face torch (random weights, post-LN outputs of magnitude ~1): NumPy's BLAS
# and torch's sum in different orders, erf/exp differ in the last ulp, and L layers compound it.
# The acceptance bound; observed errors are 1e-6 to 2e-5 with hf_oracle's peaky random weights.
HF_FP32_ATOL = 1e-4

# Task-head logits (QA start/end, classification) vs HF: same reasons as HF_FP32_ATOL, one more
# Linear (and tanh/ReLU) on top. Unlike the LayerNorm'd hidden states, logits are not of magnitude
# ~1: on hf_oracle's peaky weights they reach ~10, and float32 rounding errors are relative to the
# values summed. A random run found a QA logit of 1.31 off by 1.3e-4 (a 1-head model with FFN width
# 1), where float64 fdbert and float64 HF agree to 4e-6 -- conditioning, not a bug. Hence an absolute
# and a relative part: |got - want| <= HF_HEADS_ATOL + HF_HEADS_RTOL * |want|.
HF_HEADS_ATOL = 1e-4
HF_HEADS_RTOL = 2e-4

# A sequence run inside a mixed-length packed batch vs run alone: the same ops on the same rows, so the
# only difference is a GEMM's summation order, which OpenBLAS picks by the number of rows M (M = 1 goes
# to gemv, small M to other kernels). The bound; it holds for the real MiniLM in fp32 (observed
# 0) and for random tiny models run in float64 (observed ~1e-15).
PACKING_ATOL = 1e-6

# The same comparison on random tiny models in fp32: OpenBLAS's M-dependent sgemm order gives ~1 ulp
# differences per GEMM, which LayerNorm over a small D (down to 1) and peaky random weights amplify
# through 3 layers: observed up to 2e-5 over 400 random models. A packing bug (a position off by one,
# attention leaking across sequences or into padding) shows as O(0.1-1).
PACKING_FP32_ATOL = 1e-4

# Float32 comparisons (PACKING_FP32_ATOL, HF_FP32_ATOL) draw models of width D >= 8 only. LayerNorm
# over D < 8 features with eps = 1e-12 divides by the spread of a handful of numbers, which amplifies
# a 1-ulp difference in summation order without bound (Hypothesis found 1.5e-4 for packing and
# 1.006e-4 against HF, both at D = 3). The float64 packing run keeps every D >= 1 at PACKING_ATOL, so
# fdbert's own logic is still checked on the degenerate shapes.
FP32_MIN_D = 8

# Real all-MiniLM-L6-v2 sentence embeddings (unit vectors) vs sentence-transformers on torch: cosine
# of every sentence. 1 - 1e-5 allows fp32 rounding over 6 layers and the mean pool, nothing more.
MINILM_MIN_COSINE = 0.99999

# A cosine the CLI prints with 3 decimals vs the torch pipeline: half a unit of the last printed digit,
# plus a hair for the value itself landing on a rounding boundary.
CLI_PRINTED_COSINE_ATOL = 5e-4 + 1e-5

# A distilled model exported to fdbert's INT8 format vs the torch fake-quant student it came from
# (fdbert/compress/torch_encoder.py). Every INT8 Linear computes the same exact integer accumulators
# and the same float32 epilogue in both; LayerNorm, the erf of GELU, softmax and the float GEMMs of
# attention round differently in the last ulp, and where such an ulp moves an activation across a
# u8 rounding boundary the next Linear sees one code of difference: rare and local. Bounds on every
# token's last hidden state, relative to its largest magnitude, and on each sentence embedding.
# Observed on tiny random models: native 3e-7, reference 7.5e-5 (one flipped code in ~1,000).
DISTILL_EXPORT_RTOL = 1e-3
DISTILL_EXPORT_MIN_COSINE = 1 - 1e-5

# A shipped distilled model (real all-MiniLM-L6-v2, 6 layers) on the native backend vs the reference:
# exact integer accumulators, float ops between them (LayerNorm, softmax, erf) rounding differently in
# the last ulp. Where such an ulp moves an activation across a u8 rounding boundary, the next Linear
# sees one code of difference, and on the real model that cascades through the following layers:
# most sentences agree to float rounding (the median bound), a few move further (observed: min cosine
# 0.99908 over 32 polarity sentences, Intel AMX path). A real kernel bug moves most sentences.
SHIPPED_BACKENDS_MEDIAN_COSINE = 1 - 1e-6
SHIPPED_BACKENDS_MIN_COSINE = 0.995

# ---- decoders (docs/decoder.md) ----
# Logits of random GPT-2 / Llama configs vs transformers in float32: the same reasons as HF_HEADS_*
# (summation order, exp/tanh/cos ulps, L layers), and logits are not of magnitude ~1 (up to ~20 on
# hf_decoder_oracle's weights), hence an absolute and a relative part, as for the heads.
DECODER_HF_ATOL = 1e-4
DECODER_HF_RTOL = 2e-4

# Cached decode (one token per step against the stored k, v) vs recomputing the whole sequence: the
# same ops on the same rows, except that GEMMs of M = 1 and of M = T rows sum in different orders
# (OpenBLAS picks the kernel by M). Observed ~1e-6 on the random configs; a cache bug (a position
# off by one, a key missing or leaking in) shows as O(1).
CACHE_ATOL = 1e-4
CACHE_RTOL = 1e-4

# The real SmolLM2-135M (30 layers, logits up to ~30) vs transformers' LlamaForCausalLM holding the same
# dequantized float32 weights: float32 rounding through 30 layers; observed 8e-5 (reference) and 1.2e-4
# (native linear: one fma chain per output instead of BLAS's blocked sums). An error in dequantization,
# the q/k permutation or RoPE shows as O(1).
SMOLLM2_LOGITS_ATOL = 1e-3
