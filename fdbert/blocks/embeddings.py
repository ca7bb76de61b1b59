"""Input embeddings: word + position (+ token type for BERT), then LayerNorm."""

from .. import ops


def embeddings(ids, positions, token_type_ids, p, eps):  # [n], [n], [n] or None -> [n, D]
    """x = LayerNorm(E_word[ids] + E_pos[positions] (+ E_type[token_type_ids]))

    p is an EmbeddingWeights; positions count from 0 at each sequence's first real token.
    Matches HF's ``Embeddings`` (DistilBERT) and ``BertEmbeddings``.
    """
    x = ops.embedding(ids, p.word_embeddings) + ops.embedding(positions, p.position_embeddings)
    if p.token_type_embeddings is not None:
        x = x + ops.embedding(token_type_ids, p.token_type_embeddings)
    return ops.layer_norm(x, p.layer_norm.weight, p.layer_norm.bias, eps)
