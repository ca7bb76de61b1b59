"""Layer normalisation over the feature axis (Ba et al. 2016), as torch.nn.LayerNorm computes it."""

import numpy as np


def layer_norm(x, weight, bias, eps):  # [n, D], [D], [D] -> [n, D]
    """y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias, with the biased variance."""
    mean = x.mean(axis=-1, keepdims=True)
    var = np.square(x - mean).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + np.float32(eps)) * weight + bias
