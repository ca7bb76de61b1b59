"""fdbert's encoder in torch, for training: the float and the
INT8 block of ``fdbert/blocks/encoder.py`` with fake quantization that follows docs/int8.md.

The parameters are fdbert's own (``fdbert.weights``), so a trained student goes back into an fdbert
model without a name table. Batches are padded [B, T] with right padding (positions count from 0 at
each sequence's first token, as fdbert's packed batches do); padded keys are masked out of attention,
and padded rows are ignored by every loss.

**Fake quantization** (:class:`QuantLinear`, used in the last phase of :func:`fdbert.distill`). The
forward value of an INT8 Linear is computed the way the INT8 kernels compute it:

    xq  = clip(rint(x / s) + z, 0, 255)               static per-tensor u8 (calibrated, fixed)
    W'  = W with the outlier input columns zeroed      (they stay float32)
    s_w = max_k |W'[n, k]| / 127  (1.0 for a row below FLT_MIN)
    wq  = clip(rint(W' / s_w), -127, 127)              symmetric per-output-channel s8
    acc = (xq - z) @ wq^T                              integers, exact in float32 while every partial
                                                       sum is below 2^24 (K = 1536: |acc| <= 2^24 needs
                                                       mean |(xq - z) wq| <= 10,900 of 32,385)
    y   = acc * float32(s * s_w) + b  [+ x[:, o] @ W[:, o]^T]

which is, term for term, ``float32(acc - comp) * mult + bias`` of fdbert's qlinear epilogue. The
backward pass is the straight-through estimator: dy/dx = dequant(wq) inside the calibrated range and
0 outside it (the clip), dy/dW' = dequant(xq) (the rounding of W' passes gradients straight through).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

F32_TINY = float(np.finfo(np.float32).tiny)


def _param(a) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.array(a, dtype=np.float32, copy=True)))


class _FakeQuantLinearFn(torch.autograd.Function):
    """y = (xq - z) @ wq^T * (s * s_w) + b, exactly as the INT8 kernels; straight-through gradients."""

    @staticmethod
    def forward(ctx, x, w, b, s, z):  # [M, K], [N, K], [N], float, float -> [M, N]
        q = torch.clamp(torch.round(x / s) + z, 0.0, 255.0)       # torch.round: half to even, as rint
        xc = q - z                                                   # exact small integers
        amax = w.abs().amax(dim=1)
        sw = amax / 127.0
        sw = torch.where(sw >= F32_TINY, sw, torch.ones_like(sw))
        wq = torch.clamp(torch.round(w / sw[:, None]), -127.0, 127.0)
        mult = (torch.tensor(s, dtype=torch.float32) * sw)          # float32(s * s_w), rounded once
        y = (xc @ wq.T) * mult + b
        in_range = (x / s + z >= -0.5) & (x / s + z <= 255.5)
        ctx.save_for_backward(in_range, xc, wq, sw)
        ctx.s = s
        return y

    @staticmethod
    def backward(ctx, gy):
        in_range, xc, wq, sw = ctx.saved_tensors
        gx = (gy @ (wq * sw[:, None])) * in_range
        gw = gy.T @ (xc * ctx.s)
        return gx, gw, gy.sum(0), None, None


class QuantLinear(nn.Module):
    """A Linear whose input is static-u8 and whose weight is per-channel-s8 fake-quantized (see the
    module docstring); ``outliers`` input channels stay float32."""

    def __init__(self, lin: nn.Linear, x_scale: float, x_zero_point: int, outliers):
        super().__init__()
        self.lin = lin
        self.x_scale, self.x_zero_point = float(np.float32(x_scale)), float(x_zero_point)
        o = torch.as_tensor(np.asarray(outliers, np.int64))
        self.register_buffer("outliers", o)
        keep = torch.ones(lin.weight.shape[1])
        keep[o] = 0.0
        self.register_buffer("inlier_columns", keep)

    @property
    def weight(self):
        return self.lin.weight

    @property
    def bias(self):
        return self.lin.bias

    def forward(self, x):  # [..., K] -> [..., N]
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])                                               # [M, K]
        w = self.lin.weight * self.inlier_columns                                   # W': outliers zeroed
        y = _FakeQuantLinearFn.apply(x2, w, self.lin.bias, self.x_scale, self.x_zero_point)
        if len(self.outliers):
            y = y + x2[:, self.outliers] @ self.lin.weight[:, self.outliers].T
        return y.reshape(*shape[:-1], y.shape[-1])


class TorchLayer(nn.Module):
    """One post-LN encoder block (fdbert.blocks.encoder), fdbert's parameter names."""

    LINEARS = ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2")

    def __init__(self, layer, n_heads: int, eps: float):
        super().__init__()
        self.n_heads, self.eps = n_heads, eps
        for name in self.LINEARS:
            lin = getattr(layer, name)
            m = nn.Linear(lin.weight.shape[1], lin.weight.shape[0])
            m.weight, m.bias = _param(lin.weight), _param(lin.bias)
            setattr(self, name, m)
        for name in ("sa_layer_norm", "output_layer_norm"):
            ln = getattr(layer, name)
            m = nn.LayerNorm(ln.weight.shape[0], eps=eps)
            m.weight, m.bias = _param(ln.weight), _param(ln.bias)
            setattr(self, name, m)

    def forward(self, x, key_mask):  # [B, T, D], bool [B, T] -> [B, T, D]
        B, T, D = x.shape
        H = self.n_heads
        Dh = D // H
        q = self.q_lin(x).view(B, T, H, Dh).transpose(1, 2)          # [B, T, D] -> [B, H, T, Dh]
        k = self.k_lin(x).view(B, T, H, Dh).transpose(1, 2)          # [B, T, D] -> [B, H, T, Dh]
        v = self.v_lin(x).view(B, T, H, Dh).transpose(1, 2)          # [B, T, D] -> [B, H, T, Dh]
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(Dh))   # [B, H, T, T]
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)  # [B, H, T, Dh] -> [B, T, D]
        x = self.sa_layer_norm(x + self.out_lin(a))
        h = self.lin2(F.gelu(self.lin1(x)))                          # exact erf GELU
        return self.output_layer_norm(x + h)


class TorchEncoder(nn.Module):
    """fdbert's DistilBERT/BERT encoder in torch. ``forward`` returns the hidden states after the
    embeddings and after every layer: a list of L + 1 tensors [B, T, D]."""

    def __init__(self, model):
        super().__init__()
        c, w = model.config, model.weights
        e = w.embeddings
        self.config = c
        self.word_embeddings = nn.Parameter(torch.from_numpy(np.array(e.word_embeddings, np.float32)),
                                            requires_grad=False)     # frozen: the teacher's table
        self.position_embeddings = _param(e.position_embeddings)
        self.token_type_embeddings = (None if e.token_type_embeddings is None
                                      else _param(e.token_type_embeddings))
        self.emb_layer_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.emb_layer_norm.weight = _param(e.layer_norm.weight)
        self.emb_layer_norm.bias = _param(e.layer_norm.bias)
        self.layers = nn.ModuleList(TorchLayer(layer, c.n_heads, c.layer_norm_eps) for layer in w.layers)

    def forward(self, ids, mask, token_type_ids=None):  # int [B, T], bool [B, T] -> [L+1] x [B, T, D]
        T = ids.shape[1]
        x = F.embedding(ids, self.word_embeddings) + self.position_embeddings[:T][None]
        if self.token_type_embeddings is not None:
            tt = torch.zeros_like(ids) if token_type_ids is None else token_type_ids
            x = x + F.embedding(tt, self.token_type_embeddings)
        x = self.emb_layer_norm(x)
        hidden = [x]
        for layer in self.layers:
            x = layer(x, mask)
            hidden.append(x)
        return hidden

    # ---- the encoder Linears, the things pruning and quantization act on ------------------------
    def linears(self) -> dict:
        """(layer, name) -> the nn.Linear (inside a QuantLinear once quantized)."""
        out = {}
        for i, layer in enumerate(self.layers):
            for name in TorchLayer.LINEARS:
                m = getattr(layer, name)
                out[(i, name)] = m.lin if isinstance(m, QuantLinear) else m
        return out

    def quantize_linears(self, qparams: dict) -> None:
        """Swap every encoder Linear for a :class:`QuantLinear`: qparams (layer, name) ->
        (x_scale, x_zero_point, outliers)."""
        for i, layer in enumerate(self.layers):
            for name in TorchLayer.LINEARS:
                m = getattr(layer, name)
                if isinstance(m, QuantLinear):
                    m = m.lin
                s, z, o = qparams[(i, name)]
                setattr(layer, name, QuantLinear(m, s, z, o))


def mean_pool(h, mask):  # [B, T, D], bool [B, T] -> [B, D]
    """sentence-transformers' mean pooling over the real tokens."""
    m = mask.to(h.dtype)[..., None]
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)
