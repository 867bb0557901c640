"""Fourier-domain filter of the blur pseudo-inverse: Ŷ = X̂ · conj(K̂)/(|K̂|² + λ), zeroed where |K̂| ≤ cutoff
unless λ > 0 — the gain is computed on the fly, fused with the multiply (one read of X̂ and K̂, one write).

``Blur.pinv``/``regularized_pinv`` compute ``irfft2(spectral_filter(rfft2(y), K̂, λ, cutoff))``: the
transforms stay with cuFFT (``torch.fft``); this kernel replaces the gain tensor and the complex multiply.
"""
from __future__ import annotations

import torch
from torch.library import triton_op, wrap_triton

from . import dispatch, elementwise_settings
from ._triton import require_triton, tl, triton

__all__ = ["spectral_filter", "spectral_filter_reference", "spectral_filter_triton"]


@triton.jit
def _spectral_filter_kernel(
    x_ptr, k_ptr, lam_ptr, cutoff_ptr, out_ptr,
    N,          # complex entries of X̂ (B·C·H·Wr)
    PLANE,      # complex entries of K̂ (H·Wr): X̂ is contiguous, so entry e uses K̂[e % PLANE]
    PER_IMAGE,  # complex entries per image (C·H·Wr): entry e uses λ[e // PER_IMAGE]
    BLOCK_SIZE: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < N
    pair = tl.arange(0, 2)[None, :]  # (re, im) interleaved, as torch.view_as_real lays complex out
    x = tl.load(x_ptr + 2 * offs[:, None] + pair, mask=mask[:, None], other=0.0)
    k = tl.load(k_ptr + 2 * (offs % PLANE)[:, None] + pair, mask=mask[:, None], other=0.0)
    lam = tl.load(lam_ptr + offs // PER_IMAGE, mask=mask, other=0.0)
    cutoff = tl.load(cutoff_ptr)
    xr, xi = tl.split(x)
    kr, ki = tl.split(k)
    power = kr * kr + ki * ki
    keep = (tl.sqrt(power) > cutoff) | (lam > 0)
    scale = tl.where(keep, 1.0 / tl.where(keep, power + lam, 1.0), 0.0)
    gr = kr * scale  # gain = conj(K̂)·scale
    gi = -ki * scale
    out = tl.join(xr * gr - xi * gi, xr * gi + xi * gr)
    tl.store(out_ptr + 2 * offs[:, None] + pair, out, mask=mask[:, None])


@triton_op("pgdm::spectral_filter", mutates_args={})
def _spectral_filter_op(x_hat: torch.Tensor, k_hat: torch.Tensor, lam: torch.Tensor, cutoff: torch.Tensor) -> torch.Tensor:
    x_hat = x_hat.contiguous()
    out = torch.empty_like(x_hat)
    n, plane = x_hat.numel(), k_hat.numel()
    block, warps = elementwise_settings(n)
    wrap_triton(_spectral_filter_kernel)[(triton.cdiv(n, block),)](
        torch.view_as_real(x_hat), torch.view_as_real(k_hat.contiguous()), lam, cutoff, torch.view_as_real(out),
        n, plane, n // x_hat.shape[0], BLOCK_SIZE=block, num_warps=warps,
    )
    return out


def _prepare(x_hat: torch.Tensor, k_hat: torch.Tensor, lam: float | torch.Tensor, cutoff: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not x_hat.is_complex() or x_hat.ndim != 4 or k_hat.shape != x_hat.shape[-2:] or k_hat.dtype != x_hat.dtype:
        raise ValueError(f"spectral_filter expects X̂ (B, C, H, Wr) and K̂ (H, Wr) of one complex dtype, got {tuple(x_hat.shape)} {x_hat.dtype} and {tuple(k_hat.shape)} {k_hat.dtype}")
    real, device, batch = x_hat.real.dtype, x_hat.device, x_hat.shape[0]
    # Python scalars become fills, not host-to-device copies, so this also runs inside a captured CUDA graph.
    lam = lam.to(device, real).reshape(-1).expand(batch).contiguous() if torch.is_tensor(lam) else torch.full((batch,), float(lam), dtype=real, device=device)
    cutoff = cutoff.to(device, real).reshape(1) if torch.is_tensor(cutoff) else torch.full((1,), float(cutoff), dtype=real, device=device)
    return k_hat, lam, cutoff


def spectral_filter_triton(x_hat: torch.Tensor, k_hat: torch.Tensor, lam: float | torch.Tensor, cutoff: float | torch.Tensor) -> torch.Tensor:
    """The Triton path of ``spectral_filter``."""
    require_triton("spectral_filter")
    return _spectral_filter_op(x_hat, *_prepare(x_hat, k_hat, lam, cutoff))


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
