"""Task heads on top of the encoder's last hidden state.

Empty sequences (a row of the padded batch whose attention_mask is all 0) are defined, as in the
encoder, whose last hidden state is 0 at every padding position: every pooling mode gives a zero
embedding (normalised or not), a classifier gives zero logits, and the QA head gives -inf at every
position (padding positions always get -inf). Rows never affect one another (docs/robustness.md).
"""

import numpy as np

from .. import ops


def mean_pool(h, cu_seqlens):  # [n, D], [B+1] -> [B, D]
    """e_b = mean of h over the real tokens of sequence b (sentence-transformers' mean pooling).

    An empty sequence pools to zeros.
    """
    lengths = np.diff(cu_seqlens)
    nonempty = lengths > 0
    sums = np.zeros((len(lengths), h.shape[1]), h.dtype)
    if nonempty.any():   # segment i of reduceat runs to the next start: empty sequences are left out
        sums[nonempty] = np.add.reduceat(h[:cu_seqlens[-1]], cu_seqlens[:-1][nonempty], axis=0)
    return sums / np.maximum(lengths, 1)[:, None].astype(h.dtype)


def l2_normalize(e, eps=1e-12):  # [B, D] -> [B, D]
    """e / max(||e||_2, eps), as torch.nn.functional.normalize."""
    return e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), np.float32(eps))


def first_token(h, cu_seqlens):  # [n, D], [B+1] -> [B, D]
    """h at each sequence's first real token ([CLS]); zeros for an empty sequence."""
    starts, lengths = cu_seqlens[:-1], np.diff(cu_seqlens)
    out = np.zeros((len(lengths), h.shape[1]), h.dtype)
    out[lengths > 0] = h[starts[lengths > 0]]
    return out


def per_sequence(head, rows, cu_seqlens, n_out):  # [B, D] -> [B, n_out]
    """head(rows) for the non-empty sequences; zeros for the empty ones (no token, no logits)."""
    nonempty = np.diff(cu_seqlens) > 0
    out = np.zeros((len(nonempty), n_out), np.float32)
    if nonempty.any():
        out[nonempty] = head(np.ascontiguousarray(rows[nonempty]))
    return out


def question_answering(h, qa_outputs):  # [n, D] -> ([n], [n])
    """start, end = split(h W_qa^T + b_qa): per-token span logits (HF *ForQuestionAnswering)."""
    logits = ops.linear(h, qa_outputs.weight, qa_outputs.bias)  # [n, 2]
    return logits[:, 0], logits[:, 1]


def distilbert_classifier(cls, pre_classifier, classifier):  # [B, D] -> [B, C]
    """logits = W_c ReLU(W_p h_[CLS] + b_p) + b_c (DistilBertForSequenceClassification)."""
    z = np.maximum(ops.linear(cls, pre_classifier.weight, pre_classifier.bias), 0)
    return ops.linear(z, classifier.weight, classifier.bias)


def bert_classifier(cls, pooler, classifier):  # [B, D] -> [B, C]
    """logits = W_c tanh(W_p h_[CLS] + b_p) + b_c (BertForSequenceClassification, via BertPooler)."""
    z = np.tanh(ops.linear(cls, pooler.weight, pooler.bias))
    return ops.linear(z, classifier.weight, classifier.bias)


def lm_head(h, weight):  # [m, D], [V, D] -> [m, V]
    """logits = h W_head^T, the causal LM head (tied to the token embeddings or not)."""
    return ops.linear(np.ascontiguousarray(h), weight)
