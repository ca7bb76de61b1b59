"""The per-layer quantization report: sparsity, scales, zero points, and each Linear's INT8 error.

The error of a Linear is measured in isolation on the calibration data: the float model runs, and
at each encoder Linear the float output y = x W^T + b is compared with the INT8 layer's output on the
same float input, qlinear(quantize(x)):

    rel_err = ||y_int8 - y||_F / ||y||_F     summed over all calibration tokens
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

COLUMNS = ("layer", "name", "shape", "block", "weight_sparsity", "block_sparsity", "x_lo", "x_hi",
           "x_scale", "x_zero_point", "w_scale_min", "w_scale_max", "rel_err", "outliers")


@dataclass
class LayerReport:
    layer: int
    name: str
    shape: tuple                # (N, K)
    block: tuple | None         # (R, C) if stored block-sparse
    weight_sparsity: float      # fraction of zero s8 codes
    block_sparsity: float | None  # fraction of R x C blocks not stored
    x_lo: float                 # calibrated input range
    x_hi: float
    x_scale: float
    x_zero_point: int
    w_scale_min: float          # over rows with a nonzero code
    w_scale_max: float
    rel_err: float = float("nan")
    outliers: list = field(default_factory=list)  # input channels kept in float32


@dataclass
class QuantizationReport:
    method: str
    percentile: float | None
    n_texts: int
    rows: list = field(default_factory=list)   # [LayerReport]

    def as_dicts(self) -> list:
        return [asdict(r) for r in self.rows]

    def to_table(self) -> str:
        head = (f"{'layer':>5} {'name':8} {'N x K':>11} {'block':>5} {'sparse':>6} {'x range':>21} "
                f"{'x_scale':>9} {'zp':>3} {'w_scale range':>19} {'rel err':>8} float channels")
        lines = [f"INT8 calibration: {self.method}"
                 + (f" p={self.percentile}" if self.method == "percentile" else "")
                 + f" over {self.n_texts} texts", head, "-" * len(head)]
        for r in self.rows:
            blk = "dense" if r.block is None else f"{r.block[0]}x{r.block[1]}"
            lines.append(f"{r.layer:>5} {r.name:8} {r.shape[0]:>5}x{r.shape[1]:<5} {blk:>5} "
                         f"{r.weight_sparsity:>6.1%} [{r.x_lo:>9.4g}, {r.x_hi:>9.4g}] "
                         f"{r.x_scale:>9.3g} {r.x_zero_point:>3} [{r.w_scale_min:>8.2g}, "
                         f"{r.w_scale_max:>8.2g}] {r.rel_err:>8.2%} {' '.join(map(str, r.outliers)) or '-'}")
        errs = np.array([r.rel_err for r in self.rows])
        if len(errs):
            lines.append(f"rel err: mean {np.nanmean(errs):.2%}, max {np.nanmax(errs):.2%}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_table()
