"""fdbert: fast, verifiable transformer inference on CPUs.

    >>> import fdbert
    >>> model = fdbert.from_pretrained("path/to/hf-model-dir")
    >>> emb = model.encode(["a sentence", "another one"])          # [2, D]
    >>> with fdbert.set_backend("reference"):                       # the NumPy oracle
    ...     h = model(input_ids, attention_mask)                     # [B, T, D]

    >>> lm = fdbert.from_pretrained("model.gguf")                   # a causal LM (docs/decoder.md)
    >>> lm.generate(["The capital of France is"], max_new_tokens=8)[0].text
"""

from __future__ import annotations

from . import ops
from ._version import __version__
from .backend import (available_backends, get_backend, register_backend, set_backend,
                      set_default_backend, unregister_backend)
from .config import EncoderConfig
from .errors import (ArgumentError, BackendError, ConfigError, CorruptModelError, DTypeError, FdbertError, ModelNotFoundError,
                     ShapeError, TokenIdError, UnsupportedModelError, WeightShapeError)
from .decoder import Completion, Decoder
from .decoder_config import DecoderConfig
from .generator import Event, Generator
from .model import Encoder, from_pretrained, load
from .sampling import SamplingParams
from .runtime import cpu_features, get_num_threads, set_num_threads, show_config
from .compress import distill, prune, quantize  # INT8 + block sparsity (docs/int8.md)
from .shipped import load_shipped, shipped_models

__all__ = [
    "__version__", "ops", "from_pretrained", "Encoder", "EncoderConfig", "prune", "quantize", "distill", "load",
    "load_shipped", "shipped_models",
    "Decoder", "DecoderConfig", "SamplingParams", "Generator", "Event", "Completion",
    "set_backend", "set_default_backend", "get_backend", "available_backends", "register_backend", "unregister_backend",
    "cpu_features", "get_num_threads", "set_num_threads", "show_config",
    "FdbertError", "ArgumentError", "BackendError", "ConfigError", "CorruptModelError", "DTypeError", "ModelNotFoundError",
    "ShapeError", "TokenIdError", "UnsupportedModelError", "WeightShapeError",
]
