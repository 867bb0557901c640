"""The Triton kernel of ``spectral_filter`` (maths in its docstring): one fused pass computing the gain and
the complex multiply. Imported on the first Triton call."""
from __future__ import annotations

import torch
from torch.library import triton_op, wrap_triton

from . import elementwise_settings
from ._triton import require_triton, tl, triton

__all__ = ["spectral_filter_op"]


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
def spectral_filter_op(x_hat: torch.Tensor, k_hat: torch.Tensor, lam: torch.Tensor, cutoff: torch.Tensor) -> torch.Tensor:
    """X̂ · gain on the device: x_hat (B, C, H, Wr) complex, k_hat (H, Wr), lam (B,) real, cutoff (1,) real."""
    require_triton("spectral_filter")
    x_hat = x_hat.contiguous()
    out = torch.empty_like(x_hat)
    n, plane = x_hat.numel(), k_hat.numel()
    block, warps = elementwise_settings(n)
    wrap_triton(_spectral_filter_kernel)[(triton.cdiv(n, block),)](
        torch.view_as_real(x_hat), torch.view_as_real(k_hat.contiguous()), lam, cutoff, torch.view_as_real(out),
        n, plane, n // x_hat.shape[0], BLOCK_SIZE=block, num_warps=warps,
    )
    return out
