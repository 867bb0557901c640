"""Inpainting: y = m ⊙ x, and the paper's masks."""
from __future__ import annotations

import math

import torch

from .base import LinearOperator, as_batch_lam
from .formats import MASKED_IMAGE

__all__ = ["Inpaint", "center_box_mask", "random_pixel_mask", "freeform_mask"]


class Inpaint(LinearOperator):
    """y = m ⊙ x with a 0/1 mask m (1 = observed), kept at full size so per-image masks batch.

    H is a diagonal 0/1 matrix, so Hᵀ = H† = H and Hᵀ(HHᵀ + λI)⁻¹ v = m ⊙ v/(1 + λ).

    Args:
        mask: broadcastable to (B, C, H, W): (H, W), (1|B, 1|C, H, W); nonzero = observed.

    Example:
        >>> op = Inpaint(center_box_mask(32, 32))
        >>> op(torch.ones(2, 3, 32, 32)).sum().item() == 2 * 3 * (32 * 32 - 16 * 16)
        True
    """

    keyed_by_content = True
    decomposable = True
    per_row_buffers = ("mask",)  # (1 | B, C_m, H, W): one mask for all rows or one per image
    family = "inpainting"
    measurement_format = MASKED_IMAGE

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        mask = torch.as_tensor(mask)
        if mask.ndim == 2:
            mask = mask[None, None]
        if mask.ndim != 4:
            raise ValueError(f"inpainting mask must be (H, W) or (B, C, H, W), got shape {tuple(mask.shape)}")
        self.register_buffer("mask", (mask != 0).to(torch.get_default_dtype()))

    @classmethod
    def center(cls, shape: tuple[int, int], frac: float = 0.5) -> "Inpaint":
        """Centred box hiding ``frac`` of each side (the paper's 128×128 box in 256×256 is frac = 0.5)."""
        return cls(center_box_mask(*shape, frac))

    @property
    def spec(self) -> str:
        return "inpaint"

    def with_mask(self, mask: torch.Tensor) -> "Inpaint":
        return Inpaint(mask)

    def check_input(self, x: torch.Tensor) -> None:
        self._check(x, "image")

    def check_measurement(self, y: torch.Tensor) -> None:
        self._check(y, "measurement")

    def _check(self, t: torch.Tensor, what: str) -> None:
        m = self.mask.shape
        ok = t.ndim == 4 and t.shape[-2:] == m[-2:] and m[0] in (1, t.shape[0]) and m[1] in (1, t.shape[1])
        if not ok:
            raise ValueError(f"inpaint: {what} of shape {tuple(t.shape)} does not match mask of shape {tuple(m)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return x * self.mask

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self.check_measurement(y)
        return y * self.mask

    pinv = adjoint

    def regularized_pinv(self, v: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
        return self.adjoint(v) / (1 + as_batch_lam(lam, v))

    def V_adjoint(self, x: torch.Tensor) -> torch.Tensor:
        """U = V = I and s = m: the spectral domain is the image itself."""
        return x

    V = U_adjoint = V_adjoint

    def singular_values(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask.to(x.dtype)

    def repeat_batch(self, k: int) -> "Inpaint":
        return self if self.mask.shape[0] == 1 else Inpaint(self.mask.repeat(k, 1, 1, 1))


def center_box_mask(height: int, width: int, frac: float = 0.5) -> torch.Tensor:
    """(1, 1, H, W) mask, 0 inside a centred box of frac·H × frac·W, 1 elsewhere."""
    if not 0 < frac < 1:
        raise ValueError(f"center box fraction must be in (0, 1), got {frac}")
    bh, bw = round(height * frac), round(width * frac)
    top, left = (height - bh) // 2, (width - bw) // 2
    mask = torch.ones(1, 1, height, width)
    mask[..., top : top + bh, left : left + bw] = 0
    return mask


def random_pixel_mask(height: int, width: int, missing: float = 0.8, *, seed: int = 0, batch: int = 1) -> torch.Tensor:
    """(batch, 1, H, W) mask hiding a random ``missing`` fraction of pixels (all channels), one draw per image."""
    if not 0 <= missing < 1:
        raise ValueError(f"missing fraction must be in [0, 1), got {missing}")
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 1, height, width, generator=gen) >= missing).float()


def freeform_mask(height: int, width: int, *, seed: int = 0, batch: int = 1, strokes: int = 4) -> torch.Tensor:
    """(batch, 1, H, W) free-form brush-stroke masks (0 under the strokes), one draw per image.

    Each stroke is a polyline of 4–8 random segments drawn with a round brush 5–12 % of the image
    side wide, in the spirit of the free-form masks of Yu et al. (2019) used by Palette/ΠGDM.
    """
    gen = torch.Generator().manual_seed(seed)
    side = min(height, width)
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij")
    masks = torch.ones(batch, 1, height, width)
    for b in range(batch):
        hole = torch.zeros(height, width, dtype=torch.bool)
        for _ in range(strokes):
            radius = side * (0.025 + 0.035 * torch.rand((), generator=gen, dtype=torch.float64))
            p = torch.rand(2, generator=gen, dtype=torch.float64) * torch.tensor([height, width], dtype=torch.float64)
            for _ in range(int(torch.randint(4, 9, (), generator=gen))):
                angle = torch.rand((), generator=gen, dtype=torch.float64) * 2 * math.pi
                length = side * (0.1 + 0.2 * torch.rand((), generator=gen, dtype=torch.float64))
                q = p + length * torch.stack([angle.sin(), angle.cos()])
                q = torch.minimum(torch.clamp(q, min=0), torch.tensor([height - 1.0, width - 1.0], dtype=torch.float64))
                hole |= _segment_distance(yy, xx, p, q) <= radius
                p = q
        masks[b, 0][hole] = 0
    return masks


def _segment_distance(yy: torch.Tensor, xx: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Distance of every grid point to the segment p→q."""
    d = q - p
    t = (((yy - p[0]) * d[0] + (xx - p[1]) * d[1]) / d.pow(2).sum().clamp_min(1e-12)).clamp(0, 1)
    return torch.hypot(yy - (p[0] + t * d[0]), xx - (p[1] + t * d[1]))
