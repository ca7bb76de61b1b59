"""Task heads on top of the encoder's last hidden state."""

import numpy as np

from .. import ops


def mean_pool(h, cu_seqlens):  # [n, D], [B+1] -> [B, D]
    """e_b = mean of h over the real tokens of sequence b (sentence-transformers' mean pooling).

    An empty sequence pools to zeros.
    """
    lengths = np.diff(cu_seqlens)
    sums = np.add.reduceat(h, cu_seqlens[:-1], axis=0) if len(h) else np.zeros((len(lengths), h.shape[1]), h.dtype)
    sums[lengths == 0] = 0  # reduceat returns h[start] for empty segments
    return sums / np.maximum(lengths, 1)[:, None].astype(h.dtype)


def l2_normalize(e, eps=1e-12):  # [B, D] -> [B, D]
    """e / max(||e||_2, eps), as torch.nn.functional.normalize."""
    return e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), np.float32(eps))


def first_token(h, cu_seqlens):  # [n, D], [B+1] -> [B, D]
    """h at each sequence's first real token ([CLS])."""
    return h[cu_seqlens[:-1]]


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
