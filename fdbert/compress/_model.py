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
