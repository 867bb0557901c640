"""Image-quality metrics on [-1, 1] images, computed by torchmetrics (PSNR and SSIM on the [0, 1] scale)."""
from __future__ import annotations

import torch

__all__ = ["psnr", "ssim", "consistency_rms"]


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of x against ref, both (B, C, H, W) in [-1, 1], on the [0, 1] scale → (B,)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(_unit(x), _unit(ref), data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Gaussian window 11, σ 1.5) of x against ref in [-1, 1] → (B,)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(_unit(x), _unit(ref), data_range=1.0, reduction="none")


def consistency_rms(op, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image RMS of h(x̂) − y over one image's measurement entries (x: (B, C, H, W), y: (B, …)) → (B,)."""
    return (op(x) - y).flatten(1).norm(dim=1) / (y[0].numel() ** 0.5)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.detach().double().cpu() + 1) / 2).clamp(0, 1)
