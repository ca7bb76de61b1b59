"""The reference backend: NumPy/SciPy implementations of every op in :mod:`fdbert.ops`.

It is the executable specification that other backends are tested against, and meant to be read:
one concept per module, the equation in each docstring.
"""

from .activations import gelu, softmax
from .attention import attention
from .attention_int8 import attention_int8
from .encoder import encoder_layer
from .layernorm import layer_norm
from .linear import embedding, linear
from .qlinear import dequantize_u8, qlinear, qlinear_s32, quantize_u8  # INT8 (docs/int8.md)

__all__ = ["attention", "attention_int8", "embedding", "encoder_layer", "gelu", "layer_norm", "linear", "softmax",
           "quantize_u8", "dequantize_u8", "qlinear", "qlinear_s32"]
