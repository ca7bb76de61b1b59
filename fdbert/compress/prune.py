"""One-shot block magnitude pruning (Fast DistilBERT, Shen et al. 2022, sec. 3.1, without the
distillation fine-tuning that recovers accuracy afterwards).

Every encoder Linear W [N, K] is cut into blocks of R x C (default 1 x 4, the four input channels one
``vpdpbusd`` lane multiplies). A block's score is its L2 norm; the lowest-scoring blocks are set to
zero until the requested fraction of blocks is zero:

    scope="layer"   each weight matrix loses floor(sparsity * n_blocks) blocks (uniform sparsity)
    scope="global"  one threshold over the blocks of all encoder Linears (ranked together)

Ties are broken by position (a stable sort), so the result is deterministic. Embeddings, LayerNorms
and task heads are untouched. The returned model is float32 with zeros; ``model.compression
["pruning"]`` records sparsity, block and scope, and :func:`fdbert.quantize` then stores its
Linears as block-sparse INT8.
"""

from __future__ import annotations

import numpy as np

from ..blocksparse import parse_block
from ..weights import EncoderLayerWeights, Linear
from ._model import copy_model, is_quantized_model, linear_names

SCOPES = ("layer", "global")


def block_scores(w, block):  # f32 [N, K] -> f32 [ceil(N/R), ceil(K/C)]
    """score[r, c] = ||W[r*R:(r+1)*R, c*C:(c+1)*C]||_2 (blocks past N or K are zero-padded)."""
    R, C = block
    N, K = w.shape
    nb, kb = -(-N // R), -(-K // C)
    padded = np.zeros((nb * R, kb * C), np.float64)
    padded[:N, :K] = w
    return np.sqrt(np.square(padded).reshape(nb, R, kb, C).sum(axis=(1, 3)))  # [Nb, R, Kb, C] -> [Nb, Kb]


def block_mask(scores, n_prune):  # f [Nb, Kb], int -> bool [Nb, Kb] (True = keep)
    """Keep all but the n_prune lowest-scoring blocks (stable: earlier blocks go first on ties)."""
    order = np.argsort(scores, axis=None, kind="stable")
    keep = np.ones(scores.size, bool)
    keep[order[:n_prune]] = False
    return keep.reshape(scores.shape)


def apply_block_mask(w, keep, block):  # f32 [N, K], bool [Nb, Kb] -> f32 [N, K]
    """W with the blocks where keep is False set to zero."""
    R, C = block
    N, K = w.shape
    mask = np.repeat(np.repeat(keep, R, axis=0), C, axis=1)[:N, :K]  # [Nb*R, Kb*C] -> [N, K]
    return np.where(mask, w, np.float32(0)).astype(np.float32)


def keep_masks(weights, sparsity, block, scope="layer"):  # {key: f32 [N, K]} -> {key: bool [Nb, Kb]}
    """Which R x C blocks of each weight survive magnitude pruning to ``sparsity`` (True = keep).

    scope="layer": each matrix loses floor(sparsity * its blocks); scope="global": one ranking over the
    blocks of all matrices, floor(sparsity * all blocks) pruned (in the order the dict lists them on ties).
    """
    scores = {key: block_scores(w, block) for key, w in weights.items()}
    if scope == "layer":
        return {key: block_mask(s, int(np.floor(sparsity * s.size))) for key, s in scores.items()}
    keys = list(scores)
    flat = np.concatenate([scores[k].ravel() for k in keys]) if keys else np.zeros(0)
    keep_flat = block_mask(flat, int(np.floor(sparsity * flat.size)))
    keeps, start = {}, 0
    for k in keys:
        size = scores[k].size
        keeps[k] = keep_flat[start:start + size].reshape(scores[k].shape)
        start += size
    return keeps


def prune(model, sparsity=0.8, block=(1, 4), scope="layer"):
    """A new model whose encoder Linears have ``sparsity`` of their R x C blocks zeroed by magnitude."""
    if not 0.0 <= float(sparsity) <= 1.0:
        raise ValueError(f"sparsity must lie in [0, 1], got {sparsity!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if is_quantized_model(model):
        raise ValueError("prune: the model is already quantized; prune the float model, then quantize")
    block = parse_block(block)
    layers = model.weights.layers
    keeps = keep_masks({(i, name): getattr(layer, name).weight
                        for i, layer in enumerate(layers) for name in linear_names()},
                       sparsity, block, scope)
    new_layers = []
    for i, layer in enumerate(layers):
        mods = {name: getattr(layer, name) for name in ("sa_layer_norm", "output_layer_norm")}
        for name in linear_names():
            lin = getattr(layer, name)
            mods[name] = Linear(apply_block_mask(lin.weight, keeps[(i, name)], block), lin.bias)
        new_layers.append(EncoderLayerWeights(**mods, attention=layer.attention))
    pruned = copy_model(model, new_layers)
    pruned.compression = dict(getattr(model, "compression", None) or {},
                              pruning={"method": "one-shot block magnitude (L2)",
                                       "sparsity": float(sparsity), "block": list(block), "scope": scope})
    return pruned


def weight_sparsity(w, block=None):  # -> (element sparsity, block sparsity or None)
    """Fraction of zero weights, and of all-zero R x C blocks when a block is given."""
    w = np.asarray(w)
    elem = float(np.mean(w == 0)) if w.size else 0.0
    if block is None:
        return elem, None
    s = block_scores(w.astype(np.float32), block)
    return elem, float(np.mean(s == 0)) if s.size else 0.0
