"""Sparse models that keep their accuracy: gradual 1x4 block pruning with knowledge distillation, then
quantization-aware fine-tuning, exported to fdbert's INT8 block-sparse format (Fast DistilBERT, Shen
et al. 2022, sec. 3.1; Zafrir et al. 2021, Prune Once for All; Kurtic et al. 2022, oBERT's GMP).

    >>> student = fdbert.distill(teacher, texts, sparsity=0.8)     # needs the [compress] extra
    >>> student.save("minilm-80")

The teacher is the float32 model; the student starts as a copy of it and trains in three phases
(``steps`` in all; the fractions are :class:`DistillConfig` fields):

    prune    [0, ramp_end)          sparsity s_t = s (1 - (1 - t / t_ramp)^3), cubic (Zhu & Gupta
                                    2017), updated every ``mask_interval`` steps: the lowest-L2 R x C
                                    blocks are masked (``scope`` "global": one ranking over all encoder
                                    Linears, as the paper and the recipes; "layer": per matrix)
    fine-tune [ramp_end, qat_start) masks locked at s; the student recovers
    QAT      [qat_start, steps)     the student is calibrated exactly as fdbert.quantize does (min-max,
                                    float outlier channels) and trains through fake quantization with
                                    straight-through gradients (fdbert/compress/torch_encoder.py)

Masks are applied to the weights after every optimizer step (and to the gradients before it). The
loss against the teacher, on the texts' real tokens only:

    embedding  1 - cos(e_s, e_t)                  the model's pooled sentence embeddings (weight w_emb)
    hidden     sum_l mean ||h_s^l - h_t^l||^2 / mean ||h_t^l||^2
                                                  every layer's hidden state, each term relative to the
                                                  teacher's energy so no layer dominates (weight w_hidden)
    logits     KL(softmax(z_t / T) || softmax(z_s / T)) T^2  for a classification head (Hinton et al.
                                                  2015; T = 2 as the paper's recipes), plus cross-entropy
                                                  on hard labels where given

Teacher outputs come from fdbert's own float32 forward (native when built). Every run is a pure
function of its inputs and ``seed``: batch t is drawn from the seeded permutation of epoch t // E, so
a run resumed from a checkpoint computes exactly what the uninterrupted run computes (on the same CPU
and thread count: torch's kernels pick their instructions by CPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..blocksparse import parse_block
from ..errors import FdbertError, ShapeError
from ..packing import pack_sequences, unpack
from ..weights import EncoderLayerWeights, Linear, QuantizedLinear
from ._model import copy_model, is_quantized_model, linear_names
from .prune import apply_block_mask, keep_masks

SCOPES = ("global", "layer")
SCORES = ("l2", "l2-act")
PRECISIONS = ("fp32", "bf16")
HIDDEN_NORMS = ("energy", "channel")
CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class DistillConfig:
    sparsity: float = 0.8          # fraction of R x C blocks of the encoder Linears set to zero
    initial_sparsity: float = 0.0  # where the ramp starts (Zhu & Gupta's s_i): distill sets it to the
                                   # block sparsity of an ``init`` student (capped at ``sparsity``)
    block: tuple = (1, 4)          # (R, C): 1 output channel x 4 input channels (the VNNI lane)
    scope: str = "global"          # "global" ranking over all Linears, or per "layer" matrix
    score: str = "l2"              # block score: "l2" = ||W_block||; "l2-act" = ||W_block * rms(x)||,
                                   # each input channel weighted by the teacher's activation RMS (Wanda)
    steps: int = 3000
    batch_size: int = 32
    max_length: int = 128          # tokens per training text (longer ones are truncated)
    lr: float = 1e-4               # AdamW peak learning rate
    warmup: float = 0.05           # fraction of steps of linear warm-up
    ramp_end: float = 0.6          # fraction of steps at which the target sparsity is reached
    mask_interval: int = 50        # steps between mask updates during the ramp
    qat_start: float = 0.85        # fraction of steps after which training is quantization-aware
    quantize: bool = True          # False: no QAT phase, export float32 (pruned)
    w_emb: float = 1.0             # loss weights (module docstring)
    w_hidden: float = 1.0
    hidden_norm: str = "energy"    # "energy": each layer's error / the teacher's mean ||h||^2;
                                   # "channel": every channel scaled by the teacher's RMS on the batch
    w_logits: float = 1.0
    w_labels: float = 1.0
    temperature: float = 2.0
    n_calibration: int = 512       # texts that calibrate the activation ranges before QAT
    outlier_threshold: float | None = 6.0   # as fdbert.quantize: channels above stay float32
    precision: str = "fp32"        # "bf16": the prune and fine-tune phases under torch.autocast (bfloat16
                                   # matmuls, float32 master weights); QAT always runs in float32
    seed: int = 0
    checkpoint_every: int = 200    # steps between checkpoints (0: none but the final / Ctrl-C one)

    def validate(self) -> "DistillConfig":
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must lie in [0, 1), got {self.sparsity}")
        if not 0.0 <= self.initial_sparsity <= self.sparsity:
            raise ValueError(f"initial_sparsity must lie in [0, sparsity], got {self.initial_sparsity}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        for name in ("steps", "batch_size", "max_length", "mask_interval", "n_calibration"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if not (0.0 <= self.warmup <= self.qat_start and 0.0 <= self.ramp_end <= self.qat_start <= 1.0):
            raise ValueError("need 0 <= warmup <= qat_start, 0 <= ramp_end <= qat_start <= 1, got "
                             f"warmup {self.warmup}, ramp_end {self.ramp_end}, qat_start {self.qat_start}")
        if not (self.lr > 0 and self.temperature > 0):
            raise ValueError("lr and temperature must be > 0")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")
        if self.hidden_norm not in HIDDEN_NORMS:
            raise ValueError(f"hidden_norm must be one of {HIDDEN_NORMS}, got {self.hidden_norm!r}")
        if min(self.w_emb, self.w_hidden, self.w_logits, self.w_labels) < 0:
            raise ValueError("loss weights must be >= 0")
        return self

    # ---- the schedule, as pure functions of the step --------------------------------------------
    def ramp_steps(self) -> int:
        return int(round(self.ramp_end * self.steps))

    def qat_step(self) -> int:
        return int(round(self.qat_start * self.steps)) if self.quantize else self.steps

    def sparsity_at(self, t: int) -> float:
        """The mask's target sparsity from step t on: cubic ramp from initial_sparsity, updated every
        mask_interval steps."""
        ramp = self.ramp_steps()
        if t >= ramp or ramp == 0:
            return self.sparsity
        t0 = (t // self.mask_interval) * self.mask_interval      # the last update at or before t
        s0 = self.initial_sparsity
        return s0 + (self.sparsity - s0) * (1.0 - (1.0 - t0 / ramp) ** 3)

    def is_mask_update(self, t: int) -> bool:
        ramp = self.ramp_steps()
        return self.sparsity > 0 and (t == ramp or (t < ramp and t % self.mask_interval == 0))

    def lr_at(self, t: int) -> float:
        """Linear warm-up, constant while pruning (and warming up), then linear decay to 5% at the last
        step."""
        warm = int(round(self.warmup * self.steps))
        if t < warm:
            return self.lr * (t + 1) / warm
        ramp = max(self.ramp_steps(), warm)
        if t < ramp or self.steps <= ramp:
            return self.lr
        return self.lr * (1.0 - 0.95 * (t - ramp) / max(self.steps - 1 - ramp, 1))


@dataclass
class DistillReport:
    config: dict
    history: list = field(default_factory=list)     # per logged step: step, loss terms, sparsity, lr
    seconds: float = 0.0
    block_sparsity: float = 0.0                     # of the final masks, over all encoder Linears
    stored_block_sparsity: float | None = None      # of the exported s8 BSR (a kept block may round to 0)
    qat_calibration: dict | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- inputs ---------------------------------------------------------------------------------------
def check_texts(texts) -> list[str]:
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("distill needs training texts; got none")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(f"training texts must be non-empty strings; text #{bad[0]} is {texts[bad[0]]!r}")
    return texts


def check_block_divides(model, block) -> None:
    R, C = block
    for i, layer in enumerate(model.weights.layers):
        for name in linear_names():
            N, K = getattr(layer, name).weight.shape
            if N % R or K % C:
                raise ShapeError(f"block {R}x{C} does not divide layer {i} {name} [{N}, {K}]: "
                                 "every weight must split into whole blocks")


def batch_plan(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of one epoch: a seeded permutation, cut into windows of 50 batches, each window
    sorted by length (so a batch pads little), its batches in seeded random order."""
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    window = batch_size * 50
    batches = []
    for w0 in range(0, len(perm), window):
        chunk = perm[w0:w0 + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


class _Data:
    """Token ids of the training texts and the batch of every step."""

    def __init__(self, model, texts, labels, cfg: DistillConfig):
        tok = model.tokenizer
        if tok is None:
            raise FdbertError("the teacher has no tokenizer (tokenizer.json); distill trains on texts")
        old = tok.max_length
        tok._tok.enable_truncation(min(cfg.max_length, old))
        try:
            encs = tok._tok.encode_batch(texts)
        finally:
            tok._tok.enable_truncation(old)
        self.ids = [e.ids for e in encs]
        self.types = [e.type_ids for e in encs]
        self.labels = None if labels is None else np.asarray(labels, np.int64)
        self.lengths = np.array([len(i) for i in self.ids])
        self.cfg = cfg
        self._epoch, self._plan = None, None

    def batch(self, t: int) -> np.ndarray:
        per_epoch = math.ceil(len(self.ids) / self.cfg.batch_size)
        epoch, i = divmod(t, per_epoch)
        if epoch != self._epoch:
            self._epoch, self._plan = epoch, batch_plan(self.lengths, self.cfg.batch_size, self.cfg.seed, epoch)
        return self._plan[i]

    def packed(self, idx):
        return pack_sequences([self.ids[i] for i in idx], [self.types[i] for i in idx])


# ---- the teacher, in fdbert ----------------------------------------------------------------------
def teacher_outputs(teacher, batch, want_hidden: bool):  # PackedBatch -> (hidden [L+1] x [B, T, D] | None, pooled [B, D])
    """Hidden states after the embeddings and every layer, padded [B, T, D] (right padding), and the
    model's pooled sentence embedding [B, D], from fdbert's float32 forward."""
    from .. import ops
    from ..blocks import heads
    from ..blocks.embeddings import embeddings
    c, w = teacher.config, teacher.weights
    teacher._check_tokens(batch)
    cu = batch.cu_seqlens
    x = embeddings(batch.input_ids, batch.positions, batch.token_type_ids, w.embeddings, c.layer_norm_eps)
    hidden = [x]
    for layer in w.layers:
        x = ops.encoder_layer(x, cu, layer, c)
        hidden.append(x)
    pooled = heads.first_token(x, cu) if teacher.pooling.mode == "cls" else heads.mean_pool(x, cu)
    padded = [unpack(h, batch) for h in hidden] if want_hidden else None
    return padded, pooled, x


def input_rms(model, texts) -> dict:  # -> (layer, name) -> f32 [K]
    """Root mean square of each input channel of every encoder Linear over ``texts`` (all tokens)."""
    from .calibrate import run_recorded
    sq, n = {}, {}

    def observe(key, x, w, b):
        sq[key] = sq.get(key, 0.0) + np.square(x.astype(np.float64)).sum(axis=0)
        n[key] = n.get(key, 0) + len(x)

    run_recorded(model, texts, observe, progress=False)
    return {k: np.sqrt(sq[k] / max(n[k], 1)).astype(np.float32) for k in sq}


# ---- the student ----------------------------------------------------------------------------------
def _torch():
    try:
        import torch
    except ImportError:
        raise FdbertError("distill needs torch: pip install 'fdbert[compress]'") from None
    return torch


class _Student:
    """The torch student, its masks, optimizer and (in the QAT phase) activation quantizers."""

    def __init__(self, teacher, cfg: DistillConfig, init=None):
        torch = _torch()
        from .torch_encoder import TorchEncoder
        self.cfg, self.teacher = cfg, teacher
        self.net = TorchEncoder(teacher if init is None else init)
        self.head = _head_module(teacher)
        self.params = [p for p in self.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0)
        self.masks = {}          # (layer, name) -> bool [Nb, Kb]
        self.mask_tensors = {}   # (layer, name) -> f32 [N, K]
        self.qparams = None      # (layer, name) -> (x_scale, x_zero_point, outliers) once QAT starts
        self.input_rms = None    # (layer, name) -> f32 [K], for score="l2-act"

    def parameters(self):
        yield from self.net.parameters()
        if self.head is not None:
            yield from self.head.parameters()

    def weights(self) -> dict:
        return {k: lin.weight for k, lin in self.net.linears().items()}

    def set_masks(self, sparsity: float) -> None:
        torch = _torch()
        block = self.cfg.block
        R, C = block
        ws = {k: w.detach().numpy() for k, w in self.weights().items()}
        if self.input_rms is not None:
            ws = {k: w * self.input_rms[k][None, :] for k, w in ws.items()}
        self.masks = keep_masks(ws, sparsity, block, self.cfg.scope)
        self.mask_tensors = {k: torch.from_numpy(np.repeat(np.repeat(m, R, 0), C, 1).astype(np.float32))
                             for k, m in self.masks.items()}
        self.apply_masks()

    def apply_masks(self) -> None:
        torch = _torch()
        with torch.no_grad():
            for k, w in self.weights().items():
                if k in self.mask_tensors:
                    w.mul_(self.mask_tensors[k])

    def mask_grads(self) -> None:
        for k, w in self.weights().items():
            if k in self.mask_tensors and w.grad is not None:
                w.grad.mul_(self.mask_tensors[k])

    def block_sparsity(self) -> float:
        if not self.masks:
            return 0.0
        kept = sum(int(m.sum()) for m in self.masks.values())
        total = sum(m.size for m in self.masks.values())
        return 1.0 - kept / total

    def float_model(self):
        """An fdbert Encoder with the student's current float32 weights (masked)."""
        return student_to_model(self.net, self.head, self.teacher)

    def start_qat(self, texts, progress: bool) -> dict:
        """Calibrate the student as fdbert.quantize would, then fake-quantize its Linears."""
        from .quantize import quantize
        q = quantize(self.float_model(), texts[:self.cfg.n_calibration], progress=progress,
                     outlier_threshold=self.cfg.outlier_threshold, measure_error=False)
        self.set_qparams({(i, n): (float(getattr(l, n).x_scale), int(getattr(l, n).x_zero_point),
                                   [int(o) for o in getattr(l, n).outliers])
                          for i, l in enumerate(q.weights.layers) for n in linear_names()})
        return {f"{i}.{n}": list(v) for (i, n), v in self.qparams.items()}

    def set_qparams(self, qparams) -> None:
        self.qparams = qparams
        self.net.quantize_linears(qparams)

    def state(self) -> dict:
        return {"net": self.net.state_dict(), "head": None if self.head is None else self.head.state_dict(),
                "opt": self.opt.state_dict(), "masks": {f"{i}.{n}": m for (i, n), m in self.masks.items()},
                "qparams": None if self.qparams is None else
                {f"{i}.{n}": list(v) for (i, n), v in self.qparams.items()}}

    def load_state(self, st: dict) -> None:
        torch = _torch()
        R, C = self.cfg.block
        if st["qparams"] is not None:
            self.set_qparams({_key(k): (v[0], v[1], v[2]) for k, v in st["qparams"].items()})
        self.net.load_state_dict(st["net"])
        if self.head is not None:
            self.head.load_state_dict(st["head"])
        self.opt.load_state_dict(st["opt"])
        self.masks = {_key(k): np.asarray(m, bool) for k, m in st["masks"].items()}
        self.mask_tensors = {k: torch.from_numpy(np.repeat(np.repeat(m, R, 0), C, 1).astype(np.float32))
                             for k, m in self.masks.items()}


def _key(s: str):
    i, n = s.split(".", 1)
    return int(i), n


def _head_module(teacher):
    """A torch classification head (pre_classifier/pooler + classifier) when the teacher has one."""
    h = teacher.weights.heads
    if h.classifier is None:
        return None
    torch = _torch()
    from torch import nn
    first = h.pre_classifier if teacher.config.model_type == "distilbert" else h.pooler
    mods = nn.ModuleDict()
    for name, lin in (("first", first), ("classifier", h.classifier)):
        m = nn.Linear(lin.weight.shape[1], lin.weight.shape[0])
        m.weight = nn.Parameter(torch.from_numpy(np.array(lin.weight, np.float32)))
        m.bias = nn.Parameter(torch.from_numpy(np.array(lin.bias, np.float32)))
        mods[name] = m
    mods.kind = teacher.config.model_type
    return mods


def _head_logits(head, cls):  # [B, D] -> [B, C]
    torch = _torch()
    z = head["first"](cls)
    z = torch.relu(z) if head.kind == "distilbert" else torch.tanh(z)
    return head["classifier"](z)


def student_to_model(net, head, teacher):
    """An fdbert Encoder (float32) with the torch student's weights; embeddings' word table shared
    with the teacher (it is frozen)."""
    from ..weights import EmbeddingWeights, LayerNorm

    def arr(p):
        return np.ascontiguousarray(p.detach().numpy().astype(np.float32, copy=True))

    layers = []
    for tl, ol in zip(net.layers, teacher.weights.layers):
        mods = {}
        for name in linear_names():
            m = getattr(tl, name)
            m = getattr(m, "lin", m)
            mods[name] = Linear(arr(m.weight), arr(m.bias))
        for name in ("sa_layer_norm", "output_layer_norm"):
            ln = getattr(tl, name)
            mods[name] = LayerNorm(arr(ln.weight), arr(ln.bias))
        layers.append(EncoderLayerWeights(**mods, attention=ol.attention))
    e = teacher.weights.embeddings
    emb = EmbeddingWeights(e.word_embeddings, arr(net.position_embeddings),
                           None if net.token_type_embeddings is None else arr(net.token_type_embeddings),
                           LayerNorm(arr(net.emb_layer_norm.weight), arr(net.emb_layer_norm.bias)))
    model = copy_model(teacher, layers)
    model.weights.embeddings = emb
    if head is not None:
        hw = dataclasses.replace(teacher.weights.heads)
        first = Linear(arr(head["first"].weight), arr(head["first"].bias))
        if teacher.config.model_type == "distilbert":
            hw.pre_classifier = first
        else:
            hw.pooler = first
        hw.classifier = Linear(arr(head["classifier"].weight), arr(head["classifier"].bias))
        model.weights.heads = hw
    return model


def export(student: _Student, cfg: DistillConfig):
    """The trained student as an fdbert model: INT8 block-sparse Linears with the QAT phase's
    activation parameters (or float32 with zero blocks without QAT)."""
    model = student.float_model()
    if student.qparams is None:
        return model
    block = cfg.block if cfg.sparsity > 0 else None
    layers = []
    for i, layer in enumerate(model.weights.layers):
        mods = {n: getattr(layer, n) for n in ("sa_layer_norm", "output_layer_norm")}
        for n in linear_names():
            lin = getattr(layer, n)
            s, z, o = student.qparams[(i, n)]
            w = apply_block_mask(lin.weight, student.masks[(i, n)], cfg.block) if student.masks else lin.weight
            mods[n] = QuantizedLinear.from_float(w, lin.bias, s, z, block, o)
        layers.append(EncoderLayerWeights(**mods, attention=layer.attention))
    out = copy_model(model, layers)
    out.weights.embeddings = model.weights.embeddings
    out.weights.heads = model.weights.heads
    return out


# ---- the loop -------------------------------------------------------------------------------------
def _loss(student: _Student, data: _Data, teacher, idx, cfg: DistillConfig):
    torch = _torch()
    import torch.nn.functional as F
    from .torch_encoder import mean_pool
    batch = data.packed(idx)
    want_hidden = cfg.w_hidden > 0
    t_hidden, t_pooled, t_last = teacher_outputs(teacher, batch, want_hidden)
    B, T = batch.padded_shape
    ids = torch.zeros((B, T), dtype=torch.long)
    tt = torch.zeros((B, T), dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.bool)
    rows, cols = torch.from_numpy(batch.rows), torch.from_numpy(batch.cols)
    ids[rows, cols] = torch.from_numpy(batch.input_ids)
    tt[rows, cols] = torch.from_numpy(batch.token_type_ids)
    mask[rows, cols] = True
    bf16 = cfg.precision == "bf16" and student.qparams is None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        hidden = student.net(ids, mask, tt)
    hidden = [h.float() for h in hidden]
    terms = {}
    total = hidden[-1].new_zeros(())
    if cfg.w_emb > 0:
        e_s = hidden[-1][:, 0] if teacher.pooling.mode == "cls" else mean_pool(hidden[-1], mask)
        terms["emb"] = (1.0 - F.cosine_similarity(e_s, torch.from_numpy(t_pooled), dim=-1, eps=1e-12)).mean()
        total = total + cfg.w_emb * terms["emb"]
    if want_hidden:
        m = mask[..., None].float()
        n_tok = m.sum()
        h_terms = []
        for h_s, h_t in zip(hidden, t_hidden):
            h_t = torch.from_numpy(h_t)
            sq = (h_s - h_t) ** 2 * m                                           # [B, T, D]
            if cfg.hidden_norm == "energy":
                h_terms.append(sq.sum() / ((h_t ** 2) * m).sum().clamp_min(1e-12))
            else:
                rms2 = ((h_t ** 2) * m).sum((0, 1)) / n_tok                     # [D]
                h_terms.append((sq.sum((0, 1)) / rms2.clamp_min(1e-12)).sum() / (n_tok * h_t.shape[-1]))
        terms["hidden"] = torch.stack(h_terms).sum()
        total = total + cfg.w_hidden * terms["hidden"]
    if student.head is not None and (cfg.w_logits > 0 or (cfg.w_labels > 0 and data.labels is not None)):
        from ..blocks import heads
        cls_t = heads.first_token(t_last, batch.cu_seqlens)
        z_t = torch.from_numpy(np.asarray(teacher_logits(teacher, cls_t), np.float32))
        z_s = _head_logits(student.head, hidden[-1][:, 0])
        T_ = cfg.temperature
        if cfg.w_logits > 0:
            terms["logits"] = F.kl_div(F.log_softmax(z_s / T_, -1), F.log_softmax(z_t / T_, -1),
                                       log_target=True, reduction="batchmean") * T_ * T_
            total = total + cfg.w_logits * terms["logits"]
        if cfg.w_labels > 0 and data.labels is not None:
            terms["labels"] = F.cross_entropy(z_s, torch.from_numpy(data.labels[idx]))
            total = total + cfg.w_labels * terms["labels"]
    return total, {k: float(v.detach()) for k, v in terms.items()}


def teacher_logits(teacher, cls):  # [B, D] -> [B, C]
    from ..blocks import heads
    h = teacher.weights.heads
    if teacher.config.model_type == "distilbert":
        return heads.distilbert_classifier(cls, h.pre_classifier, h.classifier)
    return heads.bert_classifier(cls, h.pooler, h.classifier)


class _Interrupt:
    """Turns Ctrl-C and SIGTERM into a flag the loop checks between steps (so a checkpoint is whole)."""

    def __init__(self):
        self.hit = None

    def __enter__(self):
        self._old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:   # not the main thread: signals stay as they are
                pass
        return self

    def _handler(self, signum, frame):
        if self.hit is not None:          # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.hit = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Interrupted(FdbertError):
    """The run stopped on Ctrl-C / SIGTERM after saving a checkpoint; ``--resume`` continues it."""


def save_checkpoint(path: Path, step: int, student: _Student, report: DistillReport, fingerprint: str) -> None:
    """Write the whole training state atomically (a temporary file, then a rename)."""
    torch = _torch()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "student": student.state(), "report": report.as_dict(),
                "fingerprint": fingerprint}, tmp)
    os.replace(tmp, path)


def _fingerprint(cfg: DistillConfig, texts, labels, teacher, init=None) -> str:
    """What a checkpoint must match to be resumed: the config, the texts, the teacher and the init."""
    import hashlib
    h = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=list).encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    if labels is not None:
        h.update(np.asarray(labels, np.int64).tobytes())
    for model in (teacher,) if init is None else (teacher, init):
        for layer in model.weights.layers:
            h.update(np.ascontiguousarray(layer.q_lin.weight).tobytes()[:4096])
    return h.hexdigest()


def check_init(init, teacher, block):
    """The float32 form of an ``init`` student (INT8 models dequantized: fdbert/compress/_model.py's
    float_model) and its block sparsity; FdbertError unless it has the teacher's architecture and
    shares its frozen word-embedding table."""
    from ._model import float_model
    from .prune import block_scores
    init = float_model(init)
    c, ci = teacher.config, init.config
    for f in ("model_type", "d_model", "n_layers", "n_heads", "d_ffn", "vocab_size", "max_positions"):
        if getattr(c, f, None) != getattr(ci, f, None):
            raise FdbertError(f"distill: init {f} = {getattr(ci, f, None)} differs from the teacher's "
                              f"{getattr(c, f, None)}: the student must have the teacher's architecture")
    if not np.array_equal(init.weights.embeddings.word_embeddings, teacher.weights.embeddings.word_embeddings):
        raise FdbertError("distill: init's word embeddings differ from the teacher's (the table is frozen "
                          "and shared): start from a student distilled from this teacher")
    scores = [block_scores(getattr(layer, n).weight, block) for layer in init.weights.layers for n in linear_names()]
    zero = sum(int((sc == 0).sum()) for sc in scores)
    return init, zero / sum(sc.size for sc in scores)


def distill(teacher, texts, *, labels=None, config: DistillConfig | None = None, checkpoint_dir=None,
            resume: bool = False, progress: bool = True, stop_after: int | None = None, on_step=None,
            init=None, **overrides):
    """Distil ``teacher`` (a float32 fdbert Encoder) into a block-sparse (INT8) student.

    ``texts``: training texts; ``labels``: optional int class labels (models with a classification
    head); ``config`` or keyword overrides of :class:`DistillConfig`. ``init``: a model to start the
    student from instead of the teacher (a second stage: e.g. a distilled model, INT8 or float, fine-tuned
    on longer texts); the sparsity ramp then starts from its block sparsity, so a student already at
    the target keeps its zero blocks masked from step 0. ``checkpoint_dir``: where the
    training state is saved every ``checkpoint_every`` steps and on Ctrl-C / SIGTERM; ``resume=True``
    continues from it. ``stop_after``: stop (saving a checkpoint) after that many steps in all, as
    Ctrl-C would (for tests). ``on_step(step, student)`` is called after every optimizer step.
    Returns the exported fdbert model with ``model.distill_report``.
    """
    torch = _torch()
    cfg = dataclasses.replace(config or DistillConfig(), **overrides)
    cfg = dataclasses.replace(cfg, block=parse_block(cfg.block)).validate()
    if is_quantized_model(teacher):
        raise ValueError("distill: the teacher must be a float32 model (not quantized)")
    texts = check_texts(texts)
    if labels is not None and len(labels) != len(texts):
        raise ValueError(f"distill: {len(labels)} labels for {len(texts)} texts")
    check_block_divides(teacher, cfg.block)
    if init is not None:
        init, s0 = check_init(init, teacher, cfg.block)
        cfg = dataclasses.replace(cfg, initial_sparsity=min(round(s0, 6), cfg.sparsity)).validate()
    ckpt = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    fingerprint = _fingerprint(cfg, texts, labels, teacher, init)

    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    data = _Data(teacher, texts, labels, cfg)
    student = _Student(teacher, cfg, init)
    if cfg.score == "l2-act":
        student.input_rms = input_rms(teacher, texts[:cfg.n_calibration])
    report = DistillReport(config={k: (list(v) if isinstance(v, tuple) else v)
                                   for k, v in dataclasses.asdict(cfg).items()})
    start = 0
    if resume:
        if ckpt is None or not ckpt.is_file():
            raise FdbertError(f"nothing to resume: no checkpoint at {ckpt}")
        st = torch.load(ckpt, weights_only=False)
        if st["fingerprint"] != fingerprint:
            raise FdbertError(f"{ckpt} is from a different run (config, texts or teacher differ); "
                              "start a new run instead of --resume")
        student.load_state(st["student"])
        report = DistillReport(**st["report"])
        start = st["step"]

    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.steps, initial=start, desc="distill", unit="step", dynamic_ncols=True)
        except ImportError:
            bar = None
    t0 = time.perf_counter() - report.seconds
    step = start
    try:
        with _Interrupt() as intr:
            while step < cfg.steps:
                if intr.hit or (stop_after is not None and step >= stop_after):
                    if ckpt is not None:
                        report.seconds = time.perf_counter() - t0
                        save_checkpoint(ckpt, step, student, report, fingerprint)
                    where = f"; checkpoint saved to {ckpt}, continue with --resume" if ckpt else ""
                    raise Interrupted(f"stopped at step {step} of {cfg.steps} "
                                      f"({intr.hit or 'stop_after'}){where}")
                if step == student.cfg.qat_step() and student.qparams is None and cfg.quantize:
                    report.qat_calibration = student.start_qat(texts, progress=False)
                if cfg.is_mask_update(step):
                    student.set_masks(cfg.sparsity_at(step))
                lr = cfg.lr_at(step)
                for g in student.opt.param_groups:
                    g["lr"] = lr
                loss, terms = _loss(student, data, teacher, data.batch(step), cfg)
                student.opt.zero_grad(set_to_none=True)
                loss.backward()
                student.mask_grads()
                student.opt.step()
                student.apply_masks()
                step += 1
                if on_step is not None:
                    on_step(step, student)
                if step % 10 == 0 or step == cfg.steps:
                    report.history.append({"step": step, "loss": float(loss.detach()), **terms,
                                           "sparsity": student.block_sparsity(), "lr": lr})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{float(loss.detach()):.4f}", sparsity=f"{student.block_sparsity():.3f}",
                                    phase="qat" if student.qparams else ("prune" if step < cfg.ramp_steps() else "tune"))
                if ckpt is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 \
                        and step < cfg.steps:
                    report.seconds = time.perf_counter() - t0
                    save_checkpoint(ckpt, step, student, report, fingerprint)
    finally:
        if bar is not None:
            bar.close()
    if cfg.quantize and student.qparams is None:    # qat_start == 1.0: calibrate at the end
        report.qat_calibration = student.start_qat(texts, progress=False)
    report.seconds = time.perf_counter() - t0
    report.block_sparsity = student.block_sparsity()
    model = export(student, cfg)
    report.stored_block_sparsity = _stored_block_sparsity(model)
    model.compression = dict(teacher.compression or {})
    model.compression["distillation"] = {
        "method": "gradual 1x4 block magnitude pruning (cubic) + knowledge distillation"
                  + (" + quantization-aware fine-tuning" if cfg.quantize else ""),
        "config": report.config, "steps": cfg.steps, "texts": len(texts), "seconds": round(report.seconds, 1),
        "block_sparsity": report.block_sparsity, "final_loss": report.history[-1] if report.history else None}
    if cfg.sparsity > 0:
        model.compression["pruning"] = {"method": "gradual block magnitude (L2) with distillation",
                                        "sparsity": cfg.sparsity, "block": list(cfg.block), "scope": cfg.scope}
    if cfg.quantize:
        model.compression["quantization"] = {
            "scheme": "static per-tensor asymmetric u8 activations, symmetric per-channel s8 weights",
            "method": "minmax + quantization-aware fine-tuning", "outlier_threshold": cfg.outlier_threshold,
            "n_texts": min(cfg.n_calibration, len(texts)), "attention": "fp32",
            "sparse_block": list(cfg.block) if cfg.sparsity > 0 else None}
    model.distill_report = report
    model.torch_student = student
    return model


def _stored_block_sparsity(model) -> float | None:
    total = stored = 0
    for layer in model.weights.layers:
        for n in linear_names():
            lin = getattr(layer, n)
            if not isinstance(lin, QuantizedLinear) or not lin.sparse:
                return None
            nb, kb = lin.weight.grid
            total += nb * kb
            stored += lin.weight.nnz_blocks
    return 1.0 - stored / total if total else None
