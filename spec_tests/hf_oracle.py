"""The torch side of the spec tests: Hugging Face models with random weights, and how to call them.

Needs torch and transformers (the ``[torch]`` extra); test modules importing this call
``pytest.importorskip("torch")`` first.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import transformers

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()

# task -> (DistilBERT class, BERT class)
HF_CLASSES = {
    "base": ("DistilBertModel", "BertModel"),
    "qa": ("DistilBertForQuestionAnswering", "BertForQuestionAnswering"),
    "cls": ("DistilBertForSequenceClassification", "BertForSequenceClassification"),
}


def hf_config(cfg, num_labels=2):
    """A transformers config of the shape of ``cfg`` (a strategies.SmallConfig)."""
    common = dict(vocab_size=cfg.vocab_size, max_position_embeddings=cfg.max_positions,
                  num_labels=num_labels, attn_implementation="eager")
    if cfg.model_type == "distilbert":
        return transformers.DistilBertConfig(dim=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
                                             hidden_dim=cfg.d_ffn, **common)
    return transformers.BertConfig(hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
                                   num_attention_heads=cfg.n_heads, intermediate_size=cfg.d_ffn,
                                   type_vocab_size=cfg.type_vocab_size, layer_norm_eps=cfg.layer_norm_eps,
                                   **common)


@torch.no_grad()
def randomize_(model, seed):
    """Overwrite every parameter with draws that make the test sensitive: HF's own init (std 0.02, zero
    biases, LayerNorm 1/0) would give near-uniform attention and hide bias and LayerNorm mistakes.

    Linear weights ~ N(0, (2/sqrt(K))^2) (attention scores O(1-10): peaky softmax), embeddings ~ N(0, 1),
    biases ~ N(0, 0.2^2), LayerNorm gamma ~ 1 + N(0, 0.2^2).
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
        if "LayerNorm" in name or "layer_norm" in name:
            p.copy_(1 + 0.2 * noise if name.endswith("weight") else 0.2 * noise)
        elif name.endswith("bias"):
            p.copy_(0.2 * noise)
        elif "embeddings" in name:
            p.copy_(noise)
        else:  # Linear weight [N, K]
            p.copy_(noise * (2.0 / math.sqrt(p.shape[1])))
    return model


def build(cfg, task="base", num_labels=2):
    """A random-weight HF model in eval mode (no dropout)."""
    cls_name = HF_CLASSES[task][cfg.model_type != "distilbert"]
    model = getattr(transformers, cls_name)(hf_config(cfg, num_labels))
    return randomize_(model, cfg.seed).eval()


def hf_position_ids(mask):  # int [B, T] -> int64 [B, T]
    """Positions counting from 0 at each row's first real token: cumsum(mask) - 1, clipped at 0.

    fdbert gives every sequence these positions whatever the padding (EET's pre-padding semantics); HF
    uses absolute columns unless told otherwise, so left-padded comparisons pass these to HF.
    """
    return np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype(np.int64)


@torch.no_grad()
def run(model, batch, task="base"):
    """HF outputs for a strategies.PaddedBatch as NumPy: last_hidden_state [B, T, D], (start, end)
    logits [B, T] each, or classification logits [B, C]."""
    kwargs = dict(input_ids=torch.from_numpy(batch.input_ids),
                  attention_mask=torch.from_numpy(batch.attention_mask))
    if batch.side == "left":
        kwargs["position_ids"] = torch.from_numpy(hf_position_ids(batch.attention_mask))
    if model.config.model_type == "bert":
        kwargs["token_type_ids"] = torch.from_numpy(batch.token_type_ids)
    out = model(**kwargs)
    if task == "base":
        return out.last_hidden_state.numpy()
    if task == "qa":
        return out.start_logits.numpy(), out.end_logits.numpy()
    return out.logits.numpy()


def load_with_fdbert(model):
    """Save an HF model to a fresh directory and load it with fdbert, so the whole loading path runs;
    every tensor of the checkpoint must be used (a head fdbert ignored would go unnoticed otherwise)."""
    import tempfile

    import fdbert
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        ours = fdbert.from_pretrained(d)
    assert ours.unused_tensors == [], f"fdbert ignored tensors: {ours.unused_tensors}"
    return ours


def as_float64(model):
    """A copy of an fdbert Encoder with every float weight in float64: the reference then computes in
    float64 (its ops follow the weights' dtype), which separates the maths from float32 rounding."""
    import copy
    import dataclasses
    m = copy.deepcopy(model)

    def conv(o):
        for f in dataclasses.fields(o):
            v = getattr(o, f.name)
            if isinstance(v, np.ndarray) and v.dtype == np.float32:
                setattr(o, f.name, v.astype(np.float64))
            elif dataclasses.is_dataclass(v):
                conv(v)
            elif isinstance(v, list):
                for x in v:
                    if dataclasses.is_dataclass(x):
                        conv(x)
    conv(m.weights)
    return m


def float32_sensitivity(model64, batch, trials=8, seed=0):  # -> float
    """How far float32 rounding alone moves this model's output: the float64 forward with its hidden
    states rounded to float32, and jittered by up to one float32 ulp, at every layer boundary; the
    median over ``trials`` of the largest deviation from the exact float64 output on real tokens.
    Random tiny models can be ill-conditioned (a peaky attention that amplifies a 1-ulp change ~100x);
    a float32 implementation, fdbert's or torch's, cannot be expected closer than this."""
    import fdbert
    from fdbert import ops
    from fdbert.blocks.embeddings import embeddings
    from fdbert.packing import pack_sequences
    c, w = model64.config, model64.weights
    real = batch.attention_mask.astype(bool)
    seqs = [batch.input_ids[b][real[b]] for b in range(len(real))]
    types = [batch.token_type_ids[b][real[b]] for b in range(len(real))]
    pb = pack_sequences(seqs, types)
    rng = np.random.default_rng(seed)

    def forward(jitter):
        x = embeddings(pb.input_ids, pb.positions, pb.token_type_ids, w.embeddings, c.layer_norm_eps)
        for layer in w.layers:
            if jitter:
                x = x.astype(np.float32).astype(np.float64)
                x = x + rng.uniform(-1, 1, x.shape) * np.spacing(np.abs(x).astype(np.float32))
            x = ops.encoder_layer(x, pb.cu_seqlens, layer, c)
        return x

    with fdbert.set_backend("reference", only=True):
        exact = forward(False)
        return float(np.median([np.abs(forward(True) - exact).max(initial=0.0) for _ in range(trials)]))
