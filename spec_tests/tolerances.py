"""Named tolerances of fdbert's spec tests; each says why it is not zero.

Every tolerance of the suite lives here, the native backend's included: a test imports its bound by
name, so a grep for the name finds its reason. Integer paths are compared exactly and have no entry
here. A float tolerance is loosened only with a reason written next to it.
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
# Above D = 8 a drawn model can still be ill-conditioned: Hypothesis found 2.1e-4 against HF at D = 10
# (DistilBERT, 3 layers, 1 head; on an AVX2 AMD EPYC and again on a Xeon). It is conditioning, not an
# op of the reference rounding worse: every op of fdbert's float32 run is within 1-2 ulps of the same
# op in float64; the error enters in layer 1 (float32 there, float64 after: 2.2e-4) and random errors
# of the same per-row size give 8e-5 median, 2.7e-4 at the 90th percentile; torch's own layer-1
# error pattern gives 2.8e-5 (its float32 output lands 7e-6 from float64: luck of the direction). So
# an error above HF_FP32_ATOL passes only within FP32_CONDITIONING_FACTOR times what float32 rounding
# alone does to that model (hf_oracle.float32_sensitivity: 1.35e-5 on the case above, so its bound is
# 6.8e-4; on well-conditioned draws ~1e-7, so the bound stays 1e-4); a bug of O(0.1) still fails.
# The maths is checked without rounding by the float64 test: fdbert float64 vs HF float64 at every D.
FP32_CONDITIONING_FACTOR = 50
# fdbert float64 vs HF float64, every D >= 1: observed up to 4.6e-9, at D = 3 (LayerNorm over 3 features
# with eps 1e-12 amplifies a 1e-16 summation-order difference by ~1e7); at D >= 8 ~1e-14. A mistake in
# the maths gives O(0.01-1), so the bound leaves ~200x room over conditioning and still catches it.
HF_FP64_ATOL = 1e-6
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
# Observed on tiny random models: native 3e-7, reference 7.5e-5 (one flipped code in ~1,000). A flip
# where the next Linear's input scale and weights are large moves its token further: with the outlier
# channels' float share summed in add_outlier_product's fixed order (torch sums x[:, o] @ W[:, o]^T in
# its own), one token of 302 moved 1.2e-3 of the scale, the other 301 below 1e-6. So: every token
# within DISTILL_EXPORT_FLIP_RTOL (a flipped code, 10x the largest seen), at most
# DISTILL_EXPORT_FLIP_SHARE of them beyond DISTILL_EXPORT_RTOL; a wrong scale, rounding or layout
# moves every token by O(1e-2 .. 1).
DISTILL_EXPORT_RTOL = 1e-3
DISTILL_EXPORT_FLIP_RTOL = 1.2e-2
DISTILL_EXPORT_FLIP_SHARE = 0.01
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
# hf_decoder_oracle's weights), hence an absolute and a relative part, as for the heads. The absolute
# part scales with the largest |logit| of the row (at least 1): a logit is a dot product, and its
# rounding error follows sum |h_i w_i|, the size of the row's logits, not the logit's own value, which
# can be near 0 (Hypothesis found a llama3-scaled config, logits up to 9.6, off by 1.3e-4 at a small
# logit: the same bits before and after the refactor of issue 14).
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

# ---- the INT8 reference (test_int8.py, test_qlinear.py, test_compress.py) ----
# dequantize(quantize(x)) is within scale/2 of x in exact arithmetic; float32 adds the rounding of
# x / scale (relative 2^-24 of a value <= 255 in magnitude) and of (q - z) * scale (relative 2^-24).
QDQ_SLACK = 2.0 ** -15

# The reference's qlinear epilogue vs a float64 evaluation of the same equation: float32(acc - comp)
# rounds once (|acc| may exceed 2^24), then * mult, + bias, [gelu], [+ residual]: a handful of float32
# roundings relative to the largest term involved.
EPILOGUE_RTOL = 8 * 2.0 ** -24

# INT8 vs float32 normalised sentence embeddings of the tiny random models (D = 16: a single bad
# channel moves the cosine more than in a real model, and percentile clipping bites some sentences).
COMPRESS_TINY_MEAN_COSINE = 0.995
COMPRESS_TINY_MIN_COSINE = 0.95
# The accuracy target on the real model (docs/accuracy.md).
COMPRESS_MINILM_MEAN_COSINE = 0.995

# INT8 attention, native vs reference: at most this many u8 weights of a query row may round the
# other way (their exp differs by an ulp). Each changes the output by at most sv * 254 / den <= sv
# (den >= 255).
INT8_ATTENTION_MAX_WEIGHT_FLIPS = 3

# ---- the native backend vs the reference (test_native_*.py) ----
# layer_norm: |got - ref| <= LN_ATOL + LN_RTOL |ref| + LN_MEAN_ULPS eps32 (max|x_row| / std_row) |w|.
# Mean and variance are summed in 16 lanes (NumPy sums pairwise) and the native kernel multiplies by
# 1/sqrt(var + eps) where the reference divides: a few ulp of the normalised value (|.| <~ 5), times
# |weight| (observed <= 2e-6 at D <= 3000). The last term is conditioning, not kernel error: each
# float32 mean is off by ~ulp(max|x|), which x - mean carries into the output amplified by
# |w| / std; a row of mean 9.5 and std 0.15 puts the reference itself 7e-6 from the exact value.
LN_ATOL = 1e-5
LN_RTOL = 1e-5
LN_MEAN_ULPS = 4

# softmax: |got - ref| <= SOFTMAX_RTOL |ref| + SOFTMAX_ATOL. NumPy's float32 exp is within 3 ulp,
# ours within 1 (EXP_MAX_ULPS); the sums run in other orders; we multiply by 1/sum where the
# reference divides. ~17 ulp relative; observed <= 7e-7 at L = 1000. The atol covers subnormal e.
SOFTMAX_RTOL = 2e-6
SOFTMAX_ATOL = 1e-37

# erf / exp (the AVX-512 polynomials, and glibc's erff / expf on the generic path): at most this many
# ulp from the correctly rounded value, float32(f(float64(x))) -- which is also what
# scipy.special.erf returns for float32 input (it evaluates cephes' erf in double). Checked
# exhaustively over [0, 4.5] (erf) and [-104, 88.7] (exp) during development (docs/kernels.md);
# in the tests on a dense sample.
ERF_MAX_ULPS = 1
EXP_MAX_ULPS = 1

# GELU = (0.5 x)(1 + erf(x * f32(1/sqrt 2))), computed in this order by the reference, the native
# gelu op and the INT8 GEMM's fused GELU epilogue alike. The only difference is the erf: a native
# erf within ERF_MAX_ULPS = 1 ulp of scipy's. Bound: |got - ref| <= k ulp(ref) + GELU_ERF_ATOL |x|.
# GELU_ERF_ATOL is what one ulp of erf becomes: |erf| <= 1 makes that ulp <= 2^-24 absolute; two
# values of 1 + erf computed from erfs 2^-24 apart round (ulp 2^-23 in [1, 2); exact by Sterbenz for
# erf <= -1/2) to values at most 2^-23 apart; GELU multiplies that by 0.5 |x|: 2^-24 |x|. It is an
# absolute bound, not ulp of the result, because for x < 0 the result is tiny next to it (the
# cancellation in 1 + erf). (There were two values: 2^-24 for the fused epilogue, whose erf was
# correctly rounded, and a looser 2^-22 for the gelu op, whose polynomial erf is within 1 ulp; the
# derivation above needs only the 1-ulp bound, so 2^-24 holds for both.)
GELU_ERF_ATOL = 2.0 ** -24
# k of the bound above: the final product's rounding in each implementation (half an ulp each, and
# the two results may straddle a binade: 2 ulp) for the gelu op; one ulp for the epilogue's f32
# output (test_native_qgemm.py, and qlinear through fdbert.ops in test_native_qlinear.py), which
# is compared at the result's own ulp (residual adds round after).
GELU_ULPS = 2
GELU_F32_ULPS = 1
# A fused GELU feeding a u8 requantization: an erf ulp may move y / scale across a .5 boundary,
# and nothing else differs: at most one code.
GELU_U8_ATOL = 1

# attention (float32 kernel): |got - ref| <= max(1, max|v|) (ATTN_ATOL + 2 Dh 2^-24 S), S = max_ij
# scale sum_d |q_id k_jd|. ATTN_ATOL: the softmax's own error, then sums of Lk products p v in another
# order (observed <= 5e-7 with |v| ~ 1 and scores of size ~1). The second term is conditioning: each
# implementation's score is a Dh-term dot product (summed in another order) within the textbook bound
# Dh u S of the exact one (u = 2^-24), and an absolute score error d changes every p by a factor
# within exp(+-2d), so peaky softmaxes (scale 1, |q|, |k| ~ 2: scores ~ 100) differ by ~1e-5 with no
# kernel error.
ATTN_ATOL = 5e-6
# decoder_attention is the same float32 kernel, query head h reading kv head h // G (GQA): ATTN_ATOL's
# reasons, checked as a plain atol with |q|, |k|, |v| ~ 1 and Dh <= 64 (scores of a few units).
DECODER_ATTN_ATOL = 2e-5

# rms_norm: the sum of squares runs in 16 lanes (NumPy sums pairwise); one rounding of sum / D and of
# the sqrt differ at most by a few ulp of d, which every output inherits: RMS_RTOL ~ 8 ulp.
RMS_RTOL = 1e-6
# silu_mul: the AVX-512 exp is within 1 ulp (fp32_vecmath.h), NumPy's within 3; 1 + e, the division
# and the product add one rounding each: 8 ulp relative. The atol covers results that underflow.
SILU_RTOL = 1e-6
SILU_ATOL = 1e-30
# gelu_tanh: the native op and the reference compute z = sqrt(2/pi) (x + 0.044715 x^3) with the same
# float32 operations in the same order, so they differ only in y = 0.5 x (1 + tanh z) (the reference,
# NumPy's tanh) against y = x / (1 + exp(-2 z)) (native, the same value). Both are within about 2^-23 |x|
# of the exact y (observed 1.2e-7 |x| and 1.3e-7 |x| over [-12, 12]): an absolute bound in |x|, not in
# ulp of y, because for x < 0 the reference's 1 + tanh z cancels (tanh z near -1, its ulp 2^-24 next to
# a tiny result). |got - ref| <= GELU_TANH_ATOL |x|; observed <= 2^-22 |x|, so 2x of margin.
GELU_TANH_ATOL = 2.0 ** -21

# The fused native INT8 encoder block vs the NumPy reference, cosine per token on the tiny models
# and on the real all-MiniLM-L6-v2 (test_native_encoder_layer.py): the reasons of SHIPPED_BACKENDS_*
# (float ops between exact integer accumulators round differently in the last ulp, which may move a
# u8 code), on one layer. Observed on MiniLM: min 0.99980 over 24 layers x 8 sentences.
ENCODER_LAYER_MIN_TOKEN_COSINE = 0.999

# ---- pooling, normalisation, sampling, argument conversion (test_robust_*, test_minilm, test_generation_api)
# Mean pooling of the same float32 hidden states by two code paths (test_robust_heads.py): the packed
# path's np.add.reduceat and the test's sum over the padded axis add a sequence's n <= T = 6 rows in
# different orders, each within (n - 1) u sum_t |h_t| of the exact sum (u = 2^-24), so the means differ
# by at most 2 (T - 1) u max|h|; the float32 quotient adds u |mean|. |h| <= sqrt(D - 1) max|w| + max|b|
# for a LayerNorm output (5.35 for the tiny model: D = 16, |w| <= 1.295, |b| <= 0.331): 11 u 5.35 =
# 3.5e-6. Normalising divides that by |mean| (observed >= 3.4) and adds a few u of a unit vector.
# Observed 4.8e-7 over 8,000 random batches. A pooling bug (a padded token counted, the wrong divisor)
# is off by O(0.1).
MEAN_POOL_ATOL = 4e-6

# |l2-normalised float32 embedding| vs 1 (test_minilm.py, D = 384): the embedding was divided by a
# float32 norm, and the test recomputes the norm in float32. Each norm sums D squares with NumPy's
# pairwise sum, whose roundings (a few dozen, relative) add like a random walk; the square root and
# the division round once more. 1e-6 is 17 ulp of 1; observed 1.2e-7 (2 ulp) over 200 sentences. A
# normalisation bug (no division, the norm of the wrong axis) is off by O(1).
UNIT_NORM_ATOL = 1e-6

# token_probabilities (float64 inside) of float32 logits log(p) vs the exact p (test_generation_api.py):
# each logit is off by the rounding of float32(p) (2^-24 relative, so 2^-24 in log p) and of the float32
# log (1 ulp of |log p| < 2: 2^-23), so a difference of two logits is off by at most 3 * 2^-23, and
# a kept probability p_i moves by at most p_i (1 - p_i) times that <= 1/4 * 3 * 2^-23 = 8.9e-8.
# Observed 2.7e-9. A wrong renormalisation or cut is off by >= 0.01.
SAMPLING_PROBS_ATOL = 1e-7

# ops.linear on Python lists vs the float64 product (test_robust_ops.py): the contract converts a list
# with NumPy (float64 here: observed 0), but a float32 conversion is as valid. In float32 the K = 8
# term dot product is within K u sum_k |x_k w_k| of the exact value, and for the test's fixed X, W
# sum_k |x_k w_k| / |y| <= 18.2: 8 * 2^-24 * 18.2 = 8.7e-6 relative.
LIST_INPUT_LINEAR_RTOL = 1e-5

# A whole INT8 all-MiniLM-L6-v2 (dense, and 80% 1x4-sparse) quantized in the test, native backend vs
# reference (test_native_qlinear.py): SHIPPED_BACKENDS_MIN_COSINE's reasons (a float ulp moves a u8
# code, which cascades through 6 layers), checked on every one of 64 sentences. Observed min cosine
# 0.99864 dense, 0.99993 sparse (Intel AMX path).
INT8_MINILM_BACKENDS_MIN_COSINE = 0.998

# The accuracy target of float32 linears with INT8 attention only (per-token codes, no calibration;
# docs/int8.md section 10) on the real model, mean cosine to float32 (test_compress.py): the attention
# codes alone cost less than COMPRESS_MINILM_MEAN_COSINE's full INT8. Measured 0.99986 (docs/accuracy.md).
COMPRESS_MINILM_ATTENTION_MEAN_COSINE = 0.9995

# A served embedding vs an offline model.encode of the same text, on the NumPy reference backend (the
# native backend is compared bit for bit): the server runs the text in a batch of another size, and
# NumPy's BLAS picks its summation order by the number of rows, so a row differs by a few float32 ulp
# through 6 layers (the reasons of PACKING_FP32_ATOL, on the real MiniLM's unit-norm outputs).
SERVE_EMBEDDING_RTOL = 1e-4
SERVE_EMBEDDING_ATOL = 1e-5
