"""Post-training static quantization of a model's encoder Linears to INT8 (docs/int8.md).

    1. calibrate: run the float model on sample texts, record each Linear's input range
       (:mod:`.calibrate`, min-max or percentile)
    2. activation (scale, zero point) per Linear input from its range; Q, K and V share one input,
       so they get the union of their ranges
    3. weights -> symmetric per-output-channel s8, stored block-sparse (BSR) when the model was pruned
    4. report: each Linear's INT8 output error against float on the calibration data (:mod:`.report`)

Only the six encoder Linears per layer become INT8; embeddings, LayerNorm, softmax, the residual
stream and task heads stay float32 (docs/int8.md says why). Attention stays float32 too unless
``attention="int8"``: its two matmuls then run in INT8 with codes computed on the fly per token
(fdbert.reference.attention_int8; no calibration needed).
"""

from __future__ import annotations

import numpy as np

from .. import int8
from ..reference.qlinear import qlinear
from ..weights import EncoderLayerWeights, QuantizedLinear
from ._model import copy_model, is_quantized_model, linear_names
from .calibrate import calibrate, run_recorded
from .prune import weight_sparsity
from .report import LayerReport, QuantizationReport

QKV = ("q_lin", "k_lin", "v_lin")


def quantize(model, calibration_texts, method="minmax", percentile=99.99, progress=True, *,
             outlier_threshold=6.0, batch_size=32, measure_error=True, attention="fp32"):
    """A new model whose encoder Linears are :class:`QuantizedLinear` (BSR if the model was pruned).

    Input channels whose calibrated magnitude exceeds ``outlier_threshold`` stay float32 (a handful
    per layer; ``None`` quantizes every channel, the pure per-tensor scheme). The report is ``new_model.quantization_report`` (:class:`QuantizationReport`; ``print`` it).
    ``measure_error=False`` skips the extra pass over the texts that measures each Linear's error.
    ``attention="int8"`` makes every layer's attention INT8 (``fdbert.ops.attention_int8``).
    """
    if is_quantized_model(model):
        raise ValueError("quantize: the model is already quantized")
    if attention not in EncoderLayerWeights.ATTENTION_KINDS:
        raise ValueError(f"quantize: attention must be one of {EncoderLayerWeights.ATTENTION_KINDS}, "
                         f"got {attention!r}")
    texts = list(calibration_texts)
    cal = calibrate(model, texts, method, percentile, outlier_threshold, batch_size, progress)
    pruning = (getattr(model, "compression", None) or {}).get("pruning")
    block = tuple(pruning["block"]) if pruning else None
    rep = QuantizationReport(method, float(percentile) if method == "percentile" else None, len(texts))
    new_layers, by_weight = [], {}
    for i, layer in enumerate(model.weights.layers):
        shared = _union([cal[(i, n)] for n in QKV])   # Q, K, V read the same x
        for n in QKV:
            cal[(i, n)] = shared
        mods = {name: getattr(layer, name) for name in ("sa_layer_norm", "output_layer_norm")}
        for name in linear_names():
            lin = getattr(layer, name)
            c = cal[(i, name)]
            lo, hi = c.lo, c.hi
            x_scale, x_zp = int8.activation_qparams(lo, hi)
            ql = QuantizedLinear.from_float(lin.weight, lin.bias, x_scale, x_zp, block, c.outliers)
            mods[name] = ql
            by_weight[(i, name)] = ql
            codes = ql.dense_codes()
            elem, blk = weight_sparsity(codes, block)
            live = codes.any(axis=1)          # all-zero rows have the placeholder scale 1.0
            ws = ql.w_scale[live] if live.any() else ql.w_scale
            rep.rows.append(LayerReport(i, name, ql.shape, block, elem, blk, lo, hi, float(x_scale),
                                        int(x_zp), float(ws.min()), float(ws.max()),
                                        outliers=[int(o) for o in c.outliers]))
        new_layers.append(EncoderLayerWeights(**mods, attention=attention))
    if measure_error:
        _measure_errors(model, texts, by_weight, rep, batch_size, progress)
    quantized = copy_model(model, new_layers)
    quantized.compression["quantization"] = {
        "scheme": "static per-tensor asymmetric u8 activations, symmetric per-channel s8 weights",
        "method": method, "percentile": rep.percentile, "outlier_threshold": outlier_threshold,
        "n_texts": len(texts), "attention": attention,
        "sparse_block": list(block) if block else None}
    quantized.quantization_report = rep
    return quantized


def _union(cals):
    """One Calibration covering all of ``cals`` (same input channels)."""
    from .calibrate import Calibration
    outl = np.unique(np.concatenate([c.outliers for c in cals])).astype(np.int32)
    return Calibration(min(c.lo for c in cals), max(c.hi for c in cals),
                       np.minimum.reduce([c.channel_lo for c in cals]),
                       np.maximum.reduce([c.channel_hi for c in cals]), outl)


def _measure_errors(model, texts, qlayers, rep, batch_size, progress):
    """rel_err of each Linear: ||qlinear(quantize(x)) - (x W^T + b)|| / ||x W^T + b|| over the texts."""
    sq_err = {k: 0.0 for k in qlayers}
    sq_ref = {k: 0.0 for k in qlayers}

    def observe(key, x, w, b):
        ql = qlayers[key]
        y = x @ w.T if b is None else x @ w.T + b
        yq = qlinear(int8.quantize_u8(x, ql.x_scale, ql.x_zero_point), ql)
        if len(ql.outliers):
            yq = yq + x[:, ql.outliers] @ ql.outlier_weight.T
        sq_err[key] += float(np.square((yq - y).astype(np.float64)).sum())
        sq_ref[key] += float(np.square(y.astype(np.float64)).sum())

    run_recorded(model, texts, observe, batch_size, progress, desc="measure INT8 error")
    for row in rep.rows:
        key = (row.layer, row.name)
        row.rel_err = float(np.sqrt(sq_err[key] / sq_ref[key])) if sq_ref[key] > 0 else 0.0
