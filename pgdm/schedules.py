"""Noise schedules (ᾱ tables) and timestep spacings.

Every function returns a 1-D tensor; ᾱ tables are float64 so the sampler's per-step
coefficients are computed in double precision before they are cast for the device.
"""
from __future__ import annotations

import math

import torch

from . import validate

__all__ = ["linear", "cosine", "timesteps", "from_name"]


def linear(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """ᾱ_t of the DDPM/ADM linear β schedule (β from 1e-4 to 0.02 at T=1000).

    Like guided-diffusion, the endpoints are rescaled by 1000/T so other T keep the same curve.
    Returns: (T,) float64, ᾱ_0 ≈ 1 decreasing to ᾱ_{T-1} ≈ 0.
    """
    _check_T(T)
    scale = 1000.0 / T
    betas = torch.linspace(scale * beta_start, scale * beta_end, T, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def cosine(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """ᾱ_t of the improved-DDPM cosine schedule (Nichol & Dhariwal 2021, Eq. 17), β clipped at 0.999.

    Returns: (T,) float64.
    """
    _check_T(T)
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    betas = torch.tensor([min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)], dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def from_name(name: str, T: int = 1000) -> torch.Tensor:
    """ᾱ table by name: ``"linear"`` or ``"cosine"``."""
    table = {"linear": linear, "cosine": cosine}
    if name not in table:
        raise ValueError(f"unknown noise schedule {name!r}; expected one of {sorted(table)}")
    return table[name](T)


def timesteps(steps: int, T: int = 1000, start: int | None = None) -> torch.Tensor:
    """Uniformly spaced integer timesteps, from ``start`` (default T−1) down to 0.

    The sampler goes t_0 → t_1 → … → t_{N−1} → "clean" (ᾱ = 1) in ``steps`` updates.
    ``start < T−1`` is the SDEdit/CCDF partial start used by ΠGDM for super-resolution (App. B.1).
    Returns: (steps,) int64, strictly decreasing, last element 0.
    """
    steps, start = validate.integer("steps", steps), T - 1 if start is None else validate.integer("start_step", start)
    if not 0 <= start < T:
        raise ValueError(f"start step must be in [0, {T - 1}], got {start}")
    if not 1 <= steps <= start + 1:
        raise ValueError(f"steps must be in [1, {start + 1}] for start step {start}, got {steps}")
    if steps == 1:
        return torch.tensor([start], dtype=torch.int64)
    return torch.linspace(start, 0, steps, dtype=torch.float64).round().to(torch.int64)


def _check_T(T: int) -> None:
    if validate.integer("T", T) < 2:
        raise ValueError(f"T must be at least 2, got {T}")
