"""How close a compressed model's sentence embeddings stay to its float32 teacher's, on given texts.

    cosine    cos(e_model(t), e_teacher(t)) per text: mean and min over the texts
    spearman  Spearman rank correlation between the two models' pairwise cosine similarities
              cos(e(t_i), e(t_j)), i < j: does the model still order pairs of texts the way the
              teacher does (what retrieval and clustering use)?
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Fidelity:
    n: int
    mean: float
    min: float
    spearman: float | None

    def __str__(self) -> str:
        sp = "n/a" if self.spearman is None else f"{self.spearman:.4f}"
        return f"cosine mean {self.mean:.4f} min {self.min:.4f}, pairwise Spearman {sp} ({self.n} texts)"


def _unit(e):  # [N, D] -> [N, D]
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def pairwise_spearman(a, b) -> float | None:  # [N, D], [N, D] -> rho over the N(N-1)/2 pairs
    """Spearman's rho between the upper triangles of the two cosine-similarity matrices."""
    from scipy.stats import spearmanr
    n = len(a)
    if n < 3:
        return None
    i, j = np.triu_indices(n, 1)
    ua, ub = _unit(a), _unit(b)
    sa = np.einsum("pd,pd->p", ua[i], ua[j]) if n <= 600 else (ua @ ua.T)[i, j]
    sb = np.einsum("pd,pd->p", ub[i], ub[j]) if n <= 600 else (ub @ ub.T)[i, j]
    return float(spearmanr(sa, sb).statistic)


def compare(emb, ref) -> Fidelity:  # [N, D], [N, D] -> Fidelity
    cos = np.einsum("nd,nd->n", _unit(emb).astype(np.float64), _unit(ref).astype(np.float64))
    return Fidelity(len(cos), float(cos.mean()), float(cos.min()), pairwise_spearman(emb, ref))


def embedding_fidelity(model, teacher, texts, batch_size=32, teacher_embeddings=None) -> Fidelity:
    """:class:`Fidelity` of ``model`` against ``teacher`` on ``texts`` (each model's own pooling)."""
    emb = model.encode(texts, batch_size=batch_size)
    ref = teacher.encode(texts, batch_size=batch_size) if teacher_embeddings is None else teacher_embeddings
    return compare(emb, ref)
