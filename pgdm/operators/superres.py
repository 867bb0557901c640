"""Super-resolution: separable downsampling, with its pseudo-inverse from the 1-D SVDs."""
from __future__ import annotations

import torch

from .. import validate
from .base import LinearOperator, as_batch_lam
from .functional import downsample_matrix, separable_apply

__all__ = ["SuperResolution", "check_divisible"]


def check_divisible(name: str, h: int, w: int, factor: int) -> None:
    """A one-line ValueError, naming the size to crop to, when ``factor`` does not divide the H×W image ``name`` takes."""
    if h % factor or w % factor:
        fix = f"crop it to {h - h % factor}×{w - w % factor}" if min(h, w) >= factor else f"it must be at least {factor}×{factor}"
        raise ValueError(f"{name}: the {h}×{w} image is not divisible by {factor}; {fix}")


class SuperResolution(LinearOperator):
    """y = D_h X D_wᵀ per channel: (B, C, H, W) → (B, C, H/f, W/f).

    ``kernel="pool"`` averages f×f blocks; ``"bicubic"`` is anti-aliased bicubic downscaling (Keys
    a = −0.5, kernel stretched by f), identical to ``F.interpolate(..., "bicubic", antialias=True)``.
    H = D_h ⊗ D_w, so with the 1-D SVDs D = U diag(s) Vᵀ every map is four small matmuls:
    Hᵀ(HHᵀ + λI)⁻¹ y = V_h [ s_i s_j / (s_i² s_j² + λ) ∘ (U_hᵀ Y U_w) ] V_wᵀ, and H† is the λ = 0 case
    with reciprocals of products s_i s_j below ``rtol``·max zeroed.

    The matrices are built for the image size on first use of that size and kept per instance. With
    ``size=(H, W)`` (what ``parse`` passes) the operator takes only H×W images and (H/f)×(W/f)
    measurements, so h† of a wrongly sized y fails here, naming both sizes, instead of returning an
    image of another size.

    Example:
        >>> op = SuperResolution(4, "bicubic")
        >>> op(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 3, 16, 16])
    """

    keyed_by_content = True
    family = "super-resolution"
    decomposable = True

    def __init__(self, factor: int, kernel: str = "pool", *, rtol: float = 1e-3, size: tuple[int, int] | None = None) -> None:
        super().__init__()
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"super-resolution factor must be a positive integer, got {factor!r}")
        if kernel not in ("pool", "bicubic"):
            raise ValueError(f"unknown super-resolution kernel {kernel!r}; expected 'pool' or 'bicubic'")
        if size is not None:
            h, w = (validate.positive_int("size", v) for v in size)
            check_divisible(f"sr{factor}-{kernel}", h, w, factor)
            size = (h, w)
        self.factor, self.kernel, self.rtol, self.size = factor, kernel, rtol, size
        self._factors: dict[tuple[int, torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}

    @property
    def spec(self) -> str:
        return f"sr{self.factor}-{self.kernel}"

    def input_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return size[0] * self.factor, size[1] * self.factor

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(f"{self.spec}: expected (B, C, H, W) with H and W divisible by {self.factor}, got {tuple(x.shape)}")
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            raise ValueError(f"{self.spec}: built for {self.size[0]}×{self.size[1]} images, got {x.shape[-2]}×{x.shape[-1]}")

    def check_measurement(self, y: torch.Tensor) -> None:
        super().check_measurement(y)
        if self.size is not None:
            expected = (self.size[0] // self.factor, self.size[1] // self.factor)
            if tuple(y.shape[-2:]) != expected:
                raise ValueError(
                    f"{self.spec}: expected a measurement of {expected[0]}×{expected[1]} (the {self.size[0]}×{self.size[1]} "
                    f"images ÷ {self.factor}), got {y.shape[-2]}×{y.shape[-1]}"
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        rows, cols = self._matrix(x.shape[-2], x), self._matrix(x.shape[-1], x)
        return separable_apply(x, rows, cols)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self.check_measurement(y)
        rows, cols = self._matrix(y.shape[-2] * self.factor, y), self._matrix(y.shape[-1] * self.factor, y)
        return separable_apply(y, rows.T, cols.T)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self.regularized_pinv(y, 0.0)

    def regularized_pinv(self, v: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
        self.check_measurement(v)
        u_h, s_h, vt_h = self._svd(v.shape[-2] * self.factor, v)
        u_w, s_w, vt_w = self._svd(v.shape[-1] * self.factor, v)
        s = s_h[:, None] * s_w[None, :]  # (h, w): singular values of D_h ⊗ D_w
        lam = as_batch_lam(lam, v)
        keep = (s > self.rtol * s.max()) | (lam > 0)
        gain = torch.where(keep, s / (s * s + lam), torch.zeros_like(s))
        core = separable_apply(v, u_h.T, u_w.T) * gain  # Uᵀ Y U, scaled per singular pair
        return separable_apply(core, vt_h.T, vt_w.T)

    def V_adjoint(self, x: torch.Tensor) -> torch.Tensor:
        """V_hᵀ X V_w: (B, C, H, W) → (B, C, H/f, W/f), the 1-D SVDs' right singular vectors."""
        (_, _, vt_h), (_, _, vt_w) = self._svd(x.shape[-2], x), self._svd(x.shape[-1], x)
        return separable_apply(x, vt_h, vt_w)

    def V(self, z: torch.Tensor) -> torch.Tensor:
        (_, _, vt_h), (_, _, vt_w) = self._svd(z.shape[-2] * self.factor, z), self._svd(z.shape[-1] * self.factor, z)
        return separable_apply(z, vt_h.T, vt_w.T)

    def U_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        (u_h, _, _), (u_w, _, _) = self._svd(y.shape[-2] * self.factor, y), self._svd(y.shape[-1] * self.factor, y)
        return separable_apply(y, u_h.T, u_w.T)

    def singular_values(self, x: torch.Tensor) -> torch.Tensor:
        """(H/f, W/f) products s_i s_j, zero below ``rtol``·max as in ``pinv``."""
        s = self._svd(x.shape[-2], x)[1][:, None] * self._svd(x.shape[-1], x)[1][None, :]
        return torch.where(s > self.rtol * s.max(), s, torch.zeros_like(s))

    def _matrix(self, n: int, like: torch.Tensor) -> torch.Tensor:
        return self._cached(n, like)[0]

    def _svd(self, n: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._cached(n, like)[1:]

    def _cached(self, n: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = (n, like.device, like.dtype)
        if key not in self._factors:
            d = downsample_matrix(n, self.factor, self.kernel)
            u, s, vt = torch.linalg.svd(d, full_matrices=False)
            self._factors[key] = tuple(t.to(like.device, like.dtype) for t in (d, u, s, vt))
        return self._factors[key]
