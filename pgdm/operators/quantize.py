"""Quantisation and low-dynamic-range measurements (ΠGDM Sec. 3.2 and App. A.5)."""
from __future__ import annotations

import torch

from .base import Operator

__all__ = ["Quantize", "LowDynamicRange"]


class Quantize(Operator):
    """h(x) = the lower edge of x's bin among 2^bits equal bins of [lo, hi] after clipping to [lo, hi];
    h†(y) = clip(y, lo, hi), the identity on the grid.

    On the [0, 1] scale s = (x + 1)/2: level = min(⌊s·2^bits⌋, 2^bits − 1), reported in image units
    y = 2·level/2^bits − 1 (exact in float32 for bits ≤ 16). With lo = −1, hi = 1 this is the paper's
    h(x) = ⌊x⌋, h†(y) = y (Sec. 3.2); a narrower [lo, hi] adds the dynamic-range clipping h₁ of App. A.5,
    whose h₁† clips (Eq. 22). h(h†(h(x))) = h(x) exactly: grid points map to themselves, and a bin value
    below lo shares its bin with lo. Non-linear, so the sampler rejects σ_y > 0.

    Shapes: x, y: (B, C, H, W) float; y on the grid {2k/2^bits − 1}.

    Example:
        >>> op = Quantize(4)
        >>> y = op(torch.tensor([[[[-1.0, 0.0, 0.99, 1.0]]]]))
        >>> y.flatten().tolist()
        [-1.0, 0.0, 0.875, 0.875]
        >>> torch.equal(op(op.pinv(y)), y)
        True
    """

    linear = False
    keyed_by_content = True
    family = "quantization"

    def __init__(self, bits: int, *, lo: float = -1.0, hi: float = 1.0) -> None:
        super().__init__()
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
            raise ValueError(f"quantisation bits must be an integer in 1..16, got {bits!r}")
        if not -1.0 <= lo < hi <= 1.0:
            raise ValueError(f"clipping range must satisfy -1 ≤ lo < hi ≤ 1, got lo={lo}, hi={hi}")
        self.bits, self.lo, self.hi = bits, float(lo), float(hi)

    @property
    def spec(self) -> str:
        if (self.lo, self.hi) == (-1.0, 1.0):
            return f"quant{self.bits}"
        if (self.lo, self.hi, self.bits) == (-0.6, 0.6, 4):
            return "ldr"
        return f"ldr{self.bits}-{self.hi:g}" if self.lo == -self.hi else type(self).__name__

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if not x.is_floating_point():
            raise ValueError(f"{self.spec}: expected a floating-point image, got {x.dtype}")

    check_measurement = check_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        levels = 2**self.bits
        k = torch.floor((x.clamp(self.lo, self.hi) + 1) * (levels / 2)).clamp_(0, levels - 1)
        return k * (2 / levels) - 1

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        self.check_measurement(y)
        return y.clamp(self.lo, self.hi)

    def project_measurement(self, y: torch.Tensor) -> torch.Tensor:
        """Snap y read from an 8-bit file to the nearest level h produces (h(h†(y)) would floor it)."""
        return self.nearest_level(y)

    def nearest_level(self, y: torch.Tensor) -> torch.Tensor:
        """Snap an approximate measurement (e.g. read back from an 8-bit file) to the nearest grid value h produces."""
        return self(self.pinv(y) + 1 / 2**self.bits)  # half a bin up, then h's floor: round to nearest


class LowDynamicRange(Quantize):
    """Low-dynamic-range capture (App. A.5): clip [-1, 1] to [lo, hi], then keep ``bits`` bits of the
    8-bit value; h† clips back into [lo, hi]. The paper's setting is the default: [-0.6, 0.6], 4 bits.

    Example:
        >>> op = LowDynamicRange()
        >>> op(torch.tensor([[[[-1.0, 0.0, 1.0]]]])).flatten().tolist()
        [-0.625, 0.0, 0.5]
    """

    def __init__(self, lo: float = -0.6, hi: float = 0.6, bits: int = 4) -> None:
        super().__init__(bits, lo=lo, hi=hi)
