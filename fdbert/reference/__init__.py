"""The reference backend: NumPy/SciPy implementations of every op in :mod:`fdbert.ops`.

It is the executable specification that other backends are tested against, and meant to be read:
one concept per module, the equation in each docstring.
"""

from .activations import gelu, gelu_tanh, silu_mul, softmax
from .attention import attention
from .attention_int8 import attention_int8
from .decoder_attention import decoder_attention, prepadded_attention  # decoders (docs/decoder.md)
from .encoder import encoder_layer
from .layernorm import layer_norm
from .linear import embedding, linear
from .rmsnorm import rms_norm
from .rope import rope
from .qlinear import dequantize_u8, qlinear, qlinear_s32, quantize_u8  # INT8 (docs/int8.md)

__all__ = ["attention", "attention_int8", "embedding", "encoder_layer", "gelu", "layer_norm", "linear", "softmax",
           "quantize_u8", "dequantize_u8", "qlinear", "qlinear_s32",
           "rms_norm", "rope", "silu_mul", "gelu_tanh", "decoder_attention", "prepadded_attention"]
