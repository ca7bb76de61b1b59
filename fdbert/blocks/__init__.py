"""The blocks: the composites of a model, each built from the dispatched ops of :mod:`fdbert.ops`.

    embeddings            word + position (+ token type) embeddings, LayerNorm     (encoders)
    encoder               the post-LN encoder block, float32 and INT8               (encoders)
    heads                 pooling, classifiers, question answering; the LM head    (encoders, decoders)
    gpt2, llama           the pre-LN / pre-RMSNorm decoder blocks                   (decoders)
    prepadded_attention   EET's pre-padded attention over a left-padded KV cache    (decoders)

The house has two floors. :mod:`fdbert.reference` is the lower one: the primitives in pure
NumPy/SciPy, each calling its siblings directly, so it is an oracle whichever backend is selected.
The blocks sit above it and are the only maths that dispatches: every op they call runs on the
selected backend (fdbert.backend), which is what makes a model run native.

Two ops are whole blocks (``BLOCK_OPS``): a backend may run them fused (the native backend fuses
the INT8 ``encoder_layer``) or decline them; the reference backend runs these composites, whose
parts are dispatched again. That is the one intended re-entry into dispatch: the fallback of a
fused block.
"""

# Only the blocks that are ops are imported here (fdbert.backend takes them for the reference
# backend); import the others from their modules: ``from fdbert.blocks.gpt2 import gpt2_layer``.
from .encoder import encoder_layer
from .prepadded_attention import prepadded_attention

#: Ops of fdbert.ops whose reference implementation is a block here (the rest: fdbert.reference).
BLOCK_OPS = ("encoder_layer", "prepadded_attention")

__all__ = ["BLOCK_OPS", "encoder_layer", "prepadded_attention"]
