"""Helpers shared by prune / quantize / save: walking and copying a model's encoder layers."""

from __future__ import annotations

from ..weights import EncoderLayerWeights, EncoderWeights


def linear_names():
    return EncoderLayerWeights.LINEARS  # ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2")


def is_quantized_model(model) -> bool:
    from ..reference.qlinear import QuantizedLinear
    return any(isinstance(getattr(layer, name), QuantizedLinear)
               for layer in model.weights.layers for name in linear_names())


def copy_model(model, new_layers):
    """A new Encoder sharing config, tokenizer, pooling, embeddings and heads, with new layers."""
    w = model.weights
    new = type(model)(model.config, EncoderWeights(w.embeddings, new_layers, w.heads), model.tokenizer,
                      model.pooling, name=model.name)
    new.compression = dict(getattr(model, "compression", None) or {})
    return new
