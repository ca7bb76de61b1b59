"""Root-mean-square normalisation over the feature axis (Zhang & Sennrich 2019), as HF ``LlamaRMSNorm``."""

import numpy as np


def rms_norm(x, weight, eps):  # [n, D], [D] -> [n, D]
    """y = x / sqrt(mean(x^2) + eps) * weight: LayerNorm without centring and without a bias."""
    ms = np.square(x).mean(axis=-1, keepdims=True)   # [n, 1]
    return x / np.sqrt(ms + np.float32(eps)) * weight
