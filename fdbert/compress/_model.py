"""Helpers shared by prune / quantize / save: walking and copying a model's encoder layers."""

from __future__ import annotations

import dataclasses

from ..weights import EncoderLayerWeights, EncoderWeights, QuantizedLinear


def linear_names():
    return EncoderLayerWeights.LINEARS  # ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2")


def is_quantized_model(model) -> bool:
    return any(isinstance(getattr(layer, name), QuantizedLinear)
               for layer in model.weights.layers for name in linear_names())


def copy_model(model, new_layers):
    """A new Encoder sharing config, tokenizer, pooling, embeddings and heads, with new layers."""
    w = model.weights
    new = type(model)(model.config, EncoderWeights(w.embeddings, new_layers, w.heads), model.tokenizer,
                      model.pooling, name=model.name)
    new.compression = dict(getattr(model, "compression", None) or {})
    return new


def with_attention(model, attention):
    """A copy of ``model`` (sharing every weight) whose layers all use ``attention`` ("fp32" or
    "int8"): what ``quantize(..., attention=...)`` would give, without calibrating again."""
    return copy_model(model, [dataclasses.replace(layer, attention=attention)
                              for layer in model.weights.layers])


def float_model(model):
    """A float32 copy of ``model``: every INT8 Linear dequantized, W = codes * w_scale per output
    channel with its float32 outlier columns put back (dense; zero blocks stay zero). The dequantized
    weights are exactly the values the INT8 kernels multiply by; a float model comes back as it is."""
    import numpy as np
    from ..weights import Linear
    if not is_quantized_model(model):
        return model
    layers = []
    for layer in model.weights.layers:
        mods = {}
        for name in linear_names():
            lin = getattr(layer, name)
            if isinstance(lin, QuantizedLinear):
                w = lin.dense_codes().astype(np.float32) * lin.w_scale[:, None]
                w[:, lin.outliers] = lin.outlier_weight
                lin = Linear(w, lin.bias.copy())
            mods[name] = lin
        layers.append(dataclasses.replace(layer, **mods, attention="fp32"))
    return copy_model(model, layers)
