"""The reference: NumPy/SciPy implementations of the ops in :mod:`fdbert.ops`, the executable
specification that other backends are tested against.

It is the lower floor of the house and meant to be read: one concept per module, the equation in
each docstring, and every function pure NumPy/SciPy calling its siblings directly (attention calls
``softmax`` from activations, not ``fdbert.ops.softmax``), so ``fdbert.reference.attention`` is the
same oracle whichever backend is selected. The composites of a model (embeddings, encoder and
decoder blocks, heads) are the upper floor, :mod:`fdbert.blocks`; the reference backend is these
primitives plus the blocks named in ``fdbert.blocks.BLOCK_OPS`` (fdbert.backend puts them together).
"""

from .activations import gelu, gelu_tanh, silu_mul, softmax
from .attention import attention
from .attention_int8 import attention_int8
from .decoder_attention import decoder_attention  # decoders (docs/decoder.md)
from .layernorm import layer_norm
from .linear import embedding, linear
from .rmsnorm import rms_norm
from .rope import rope
from .qlinear import add_outlier_product, dequantize_u8, qlinear, qlinear_s32, quantize_u8  # INT8 (docs/int8.md)

__all__ = ["attention", "attention_int8", "embedding", "gelu", "layer_norm", "linear", "softmax",
           "quantize_u8", "dequantize_u8", "qlinear", "qlinear_s32", "add_outlier_product",
           "rms_norm", "rope", "silu_mul", "gelu_tanh", "decoder_attention"]
