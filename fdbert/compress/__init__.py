"""Model compression: block pruning, INT8 calibration and quantization, and their report.

    >>> sparse = fdbert.prune(model, sparsity=0.8, block=(1, 4))          # float32 with zero blocks
    >>> q = fdbert.quantize(sparse, texts, method="percentile")           # block-sparse INT8
    >>> print(q.quantization_report)
"""

from .calibrate import calibrate
from .distill import DistillConfig, distill  # torch is imported when distill runs, not here
from .prune import prune
from .quantize import quantize
from .report import LayerReport, QuantizationReport

__all__ = ["prune", "quantize", "calibrate", "distill", "DistillConfig", "QuantizationReport", "LayerReport"]
