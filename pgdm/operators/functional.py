"""Stateless helpers shared by the linear operators: separable matrices and Fourier filters."""
from __future__ import annotations

import math

import torch

__all__ = [
    "separable_apply",
    "downsample_matrix",
    "cubic_keys",
    "kernel_spectrum",
    "numerical_rtol",
    "gaussian_kernel",
    "motion_kernel",
]


def separable_apply(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """rows · X · colsᵀ on the last two dims. x: (…, H, W); rows: (H', H); cols: (W', W) → (…, H', W')."""
    return rows @ x @ cols.transpose(0, 1)


def cubic_keys(u: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel (a = −0.5: Catmull-Rom-like, as PIL and torch use)."""
    u = u.abs()
    near = ((a + 2) * u - (a + 3)) * u * u + 1
    far = ((a * u - 5 * a) * u + 8 * a) * u - 4 * a
    return torch.where(u <= 1, near, torch.where(u < 2, far, torch.zeros_like(u)))


def downsample_matrix(n: int, factor: int, kernel: str) -> torch.Tensor:
    """The (n/factor, n) float64 matrix of 1-D downsampling by ``factor``.

    ``"pool"``: average of each run of ``factor`` samples. ``"bicubic"``: anti-aliased bicubic
    (Keys a = −0.5, kernel stretched by ``factor``), with PIL's edge rule: taps outside the
    signal are dropped and each row renormalised to sum to 1 — what ``PIL.Image.resize`` and
    ``F.interpolate(mode="bicubic", antialias=True)`` compute.
    """
    m = n // factor
    rows = torch.zeros(m, n, dtype=torch.float64)
    if kernel == "pool":
        for i in range(m):
            rows[i, i * factor : (i + 1) * factor] = 1.0 / factor
        return rows
    if kernel != "bicubic":
        raise ValueError(f"unknown downsampling kernel {kernel!r}; expected 'pool' or 'bicubic'")
    support = 2.0 * factor
    for i in range(m):
        center = (i + 0.5) * factor
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n)
        taps = torch.arange(lo, hi, dtype=torch.float64)
        w = cubic_keys((taps - center + 0.5) / factor)
        rows[i, lo:hi] = w / w.sum()
    return rows


def kernel_spectrum(kernel: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """rfft2 of a (k_h, k_w) kernel placed centred at the origin of an H×W periodic grid → (H, W//2+1) complex.

    Multiplying an image's rfft2 by it is circular convolution with the kernel, without a shift.
    """
    kh, kw = kernel.shape
    if kh > height or kw > width:
        raise ValueError(f"blur kernel {kh}×{kw} is larger than the {height}×{width} image")
    grid = torch.zeros(height, width, dtype=kernel.dtype, device=kernel.device)
    grid[:kh, :kw] = kernel
    grid = torch.roll(grid, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
    return torch.fft.rfft2(grid)


def numerical_rtol(n: int, dtype: torch.dtype) -> float:
    """n·eps of ``dtype``: the relative cutoff below which a numerical pseudo-inverse zeroes singular values, n the
    length over which rounding accumulates (``torch.linalg.pinv``'s default ``rtol = max(m, n)·eps`` for a dense
    m×n matrix; the longer side of a 2-D FFT for a blur spectrum); smaller values are rounding noise."""
    return n * torch.finfo(dtype).eps


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """(size, size) float64 Gaussian of std ``sigma`` pixels, summing to 1."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    k = g[:, None] * g[None, :]
    return k / k.sum()


def motion_kernel(size: int, seed: int, intensity: float = 0.5, steps: int | None = None) -> torch.Tensor:
    """(size, size) float64 motion-blur kernel: a random camera-shake trajectory rasterised with bilinear splats.

    The trajectory is a random walk whose velocity turns by Gaussian angles (``intensity`` scales the
    turn rate), normalised to span the kernel; the same seed gives the same kernel on every machine.
    """
    gen = torch.Generator().manual_seed(seed)
    steps = steps or 8 * size
    angle = torch.rand((), generator=gen, dtype=torch.float64) * 2 * math.pi
    turns = torch.randn(steps, generator=gen, dtype=torch.float64) * intensity
    speed = 1.0 + 0.5 * torch.rand(steps, generator=gen, dtype=torch.float64)
    angles = angle + torch.cumsum(turns, 0)
    path = torch.cumsum(torch.stack([angles.cos() * speed, angles.sin() * speed], 1), 0)
    path = path - path.mean(0)
    path = path / path.abs().max().clamp_min(1e-12) * ((size - 1) / 2 * 0.9) + (size - 1) / 2
    k = torch.zeros(size, size, dtype=torch.float64)
    x0, y0 = path[:, 0].floor(), path[:, 1].floor()
    fx, fy = path[:, 0] - x0, path[:, 1] - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi = (x0 + dx).long().clamp(0, size - 1)
        yi = (y0 + dy).long().clamp(0, size - 1)
        k.index_put_((yi, xi), w, accumulate=True)
    return k / k.sum()
