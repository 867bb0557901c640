"""Fourier-domain filter of the blur pseudo-inverse: Ŷ = X̂ · conj(K̂)/(|K̂|² + λ), zeroed where |K̂| ≤ cutoff
unless λ > 0 — the gain is computed on the fly, fused with the multiply (one read of X̂ and K̂, one write).

``Blur.pinv``/``regularized_pinv`` compute ``irfft2(spectral_filter(rfft2(y), K̂, λ, cutoff))``: the
transforms stay with cuFFT (``torch.fft``); this kernel replaces the gain tensor and the complex multiply.
"""
from __future__ import annotations

import torch

from . import dispatch

__all__ = ["spectral_filter", "spectral_filter_reference", "spectral_filter_triton"]


def _prepare(x_hat: torch.Tensor, k_hat: torch.Tensor, lam: float | torch.Tensor, cutoff: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not x_hat.is_complex() or x_hat.ndim != 4 or k_hat.shape != x_hat.shape[-2:] or k_hat.dtype != x_hat.dtype:
        raise ValueError(f"spectral_filter expects X̂ (B, C, H, Wr) and K̂ (H, Wr) of one complex dtype, got {tuple(x_hat.shape)} {x_hat.dtype} and {tuple(k_hat.shape)} {k_hat.dtype}")
    real, device, batch = x_hat.real.dtype, x_hat.device, x_hat.shape[0]
    # Python scalars become fills, not host-to-device copies, so this also runs inside a captured CUDA graph.
    lam = lam.to(device, real).reshape(-1).expand(batch).contiguous() if torch.is_tensor(lam) else torch.full((batch,), float(lam), dtype=real, device=device)
    cutoff = cutoff.to(device, real).reshape(1) if torch.is_tensor(cutoff) else torch.full((1,), float(cutoff), dtype=real, device=device)
    return k_hat, lam, cutoff


def spectral_filter_triton(x_hat: torch.Tensor, k_hat: torch.Tensor, lam: float | torch.Tensor, cutoff: float | torch.Tensor) -> torch.Tensor:
    """The Triton path of ``spectral_filter`` (the kernel, in ``spectral_filter_triton``, loads on the first call)."""
    from .spectral_filter_triton import spectral_filter_op

    return spectral_filter_op(x_hat, *_prepare(x_hat, k_hat, lam, cutoff))


def spectral_filter_reference(x_hat: torch.Tensor, k_hat: torch.Tensor, lam: float | torch.Tensor, cutoff: float | torch.Tensor) -> torch.Tensor:
    """The torch path of ``spectral_filter``."""
    k_hat, lam, cutoff = _prepare(x_hat, k_hat, lam, cutoff)
    power = k_hat.real.square() + k_hat.imag.square()
    lam = lam.view(-1, 1, 1, 1)
    keep = (power.sqrt() > cutoff) | (lam > 0)
    return x_hat * torch.where(keep, k_hat.conj() / (power + lam), torch.zeros_like(k_hat))


def spectral_filter(x_hat: torch.Tensor, k_hat: torch.Tensor, lam: float | torch.Tensor, cutoff: float | torch.Tensor) -> torch.Tensor:
    """X̂ · conj(K̂)/(|K̂|² + λ), with the gain zeroed where |K̂| ≤ cutoff and λ = 0.

    x_hat: (B, C, H, Wr) complex64/128 (an rfft2); k_hat: (H, Wr), same dtype; lam: float or (B,) real
    tensor, λ ≥ 0 per image; cutoff: float or 0-d/1-element tensor (e.g. rtol·max|K̂| computed on device,
    no host sync). Returns (B, C, H, Wr), x_hat's dtype.
    """
    return dispatch(spectral_filter_triton, spectral_filter_reference, x_hat.device)(x_hat, k_hat, lam, cutoff)
