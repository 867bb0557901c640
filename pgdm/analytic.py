"""Analytic priors with exact ε and exact posteriors: an isotropic Gaussian, a Gaussian mixture and a stationary
Gaussian on canvases of any size.

What the method tests and ``pgdm bench posterior`` measure samplers against: for a mixture prior and a linear
measurement y = Hx + N(0, σ_y² I) the posterior is again a mixture (:func:`gmm_posterior`), which
:func:`sample_mixture` draws from exactly; :func:`sliced_w2` compares two sample sets. The stationary prior
(:class:`StationaryGaussianEps`) has a circulant covariance on every canvas, so its ε is exact at any (H, W) by FFT
and its posterior is drawn exactly by :func:`stationary_posterior_samples` (Matheron's rule, conjugate gradient):
what the canvas denoiser (:mod:`pgdm.canvas`) is measured against.
"""
from __future__ import annotations

import torch
from torch import nn

from typing import Callable

from .denoiser import Denoiser
from . import schedules

__all__ = [
    "GaussianMixtureEps", "gaussian_denoiser", "mixture_denoiser", "gmm_posterior", "sample_mixture", "sliced_w2",
    "StationaryGaussianEps", "stationary_denoiser", "stationary_posterior_samples",
]  # fmt: skip


class GaussianMixtureEps(nn.Module):
    """Exact ε(x_t, t) = −√(1−ᾱ_t) ∇ log p_t(x_t) for the prior Σ_k w_k N(μ_k, s_k² I) on (C, H, W) images.

    p_t = Σ_k w_k N(√ᾱ μ_k, (ᾱ s_k² + 1 − ᾱ) I). Computed in float64.
    """

    def __init__(self, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor, alphas_cumprod: torch.Tensor, shape):
        super().__init__()
        self.register_buffer("means", means.double())  # (K, D)
        self.register_buffer("stds", stds.double())  # (K,)
        self.register_buffer("logw", weights.double().log())
        self.register_buffer("acp", alphas_cumprod.double())
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.acp[t][:, None, None]  # (B, 1, 1)
        xf = x.flatten(1).double()[:, None, :]  # (B, 1, D)
        mu = a.sqrt() * self.means[None]  # (B, K, D)
        var = a * self.stds[None, :, None] ** 2 + 1 - a  # (B, K, 1)
        d = xf.shape[-1]
        logp = self.logw[None] - 0.5 * ((xf - mu) ** 2 / var).sum(-1) - 0.5 * d * var[..., 0].log()
        resp = torch.softmax(logp, dim=1)[..., None]  # (B, K, 1)
        score = (resp * (mu - xf) / var).sum(1)  # (B, D)
        eps = -(1 - a[:, 0]).sqrt() * score
        return eps.view(x.shape).to(x.dtype)


def gaussian_denoiser(shape, s: float = 1.0, T: int = 1000) -> Denoiser:
    """Prior N(0, s² I): x̂ = √ᾱ s² x /(ᾱ s² + 1 − ᾱ) is linear in x."""
    acp = schedules.linear(T)
    d = int(torch.tensor(shape).prod())
    net = GaussianMixtureEps(torch.zeros(1, d), torch.tensor([s], dtype=torch.float64), torch.ones(1), acp, shape)
    return Denoiser(net, acp, channels=shape[0])


def gmm_posterior(means, stds, weights, H: torch.Tensor, y: torch.Tensor, sigma_y: float):
    """Exact posterior of x | y = Hx + N(0, σ_y²) for the mixture prior: a mixture with weights, means, covariances."""
    out_w, out_mu, out_cov = [], [], []
    m = H.shape[0]
    noise = sigma_y**2 * torch.eye(m, dtype=torch.float64)
    for mu, s, w in zip(means.double(), stds.double(), weights.double()):
        prior_cov = s**2 * torch.eye(H.shape[1], dtype=torch.float64)
        S = H @ prior_cov @ H.T + noise
        S = S + 1e-12 * torch.eye(m, dtype=torch.float64)
        K = prior_cov @ H.T @ torch.linalg.pinv(S, hermitian=True)
        r = y - H @ mu
        out_mu.append(mu + K @ r)
        out_cov.append(prior_cov - K @ H @ prior_cov)
        # evidence N(y; H mu, S) on the range of S
        evals, evecs = torch.linalg.eigh(S)
        keep = evals > 1e-9 * evals.max()
        proj = evecs[:, keep].T @ r
        logev = -0.5 * (proj**2 / evals[keep]).sum() - 0.5 * evals[keep].log().sum()
        out_w.append(w.log() + logev)
    lw = torch.stack(out_w)
    return torch.softmax(lw, 0), torch.stack(out_mu), torch.stack(out_cov)


def mixture_denoiser(shape, components: int = 3, seed: int = 1, T: int = 1000):
    """A random Σ_k w_k N(μ_k, s_k² I) prior on ``shape`` images, as (Denoiser, means (K, D), stds (K,), weights (K,))."""
    d = int(torch.tensor(shape).prod())
    gen = torch.Generator().manual_seed(seed)
    means = 0.5 * torch.randn(components, d, generator=gen, dtype=torch.float64)
    stds = 0.8 + 0.1 * torch.rand(components, generator=gen, dtype=torch.float64)
    weights = torch.softmax(torch.randn(components, generator=gen, dtype=torch.float64), 0)
    acp = schedules.linear(T)
    return Denoiser(GaussianMixtureEps(means, stds, weights, acp, shape), acp, channels=shape[0]), means, stds, weights


def sample_mixture(weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """n exact draws (n, D) float64 from Σ_k w_k N(μ_k, Σ_k) (singular Σ_k allowed: symmetric square roots)."""
    k = torch.multinomial(weights, n, replacement=True, generator=gen)
    evals, evecs = torch.linalg.eigh(covs)  # (K, D), (K, D, D)
    roots = evecs * evals.clamp_min(0).sqrt()[:, None, :]  # Σ_k = R_k R_kᵀ
    z = torch.randn(n, means.shape[1], generator=gen, dtype=torch.float64)
    return means[k] + torch.einsum("nij,nj->ni", roots[k], z)


def sliced_w2(a: torch.Tensor, b: torch.Tensor, directions: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between sample sets a, b: (n, D) (equal n): the root mean over random unit
    directions of the 1-D W2² between the projected samples (sorted quantiles)."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(a.shape[1], directions, generator=gen, dtype=torch.float64)
    u = u / u.norm(dim=0, keepdim=True)
    pa, pb = (a.double() @ u).sort(0).values, (b.double() @ u).sort(0).values
    return float((pa - pb).pow(2).mean().sqrt())


class StationaryGaussianEps(nn.Module):
    """Exact ε for the stationary prior x ~ N(0, Σ) on (C, H, W) canvases of any size, channels independent.

    Σ is circulant on the canvas: its eigenvalues, at the canvas's DFT frequencies ω ∈ [−½, ½)² (cycles per
    pixel), are the power spectrum S(ω) = std² · c · (|ω|² + cutoff²)^(−α/2), a 1/f^α law (natural images have
    α ≈ 2) flattened below ``cutoff``; c makes ∫ S = std², the per-pixel variance of a large canvas. Then
    p_t = N(0, ᾱΣ + (1−ᾱ)I) and ε(x, t) = √(1−ᾱ) (ᾱΣ + (1−ᾱ)I)⁻¹ x, one FFT filter, computed in float64.

    forward(x, t): x: (B, C, H, W), t: (B,) int64 → ε (B, C, H, W) in x's dtype.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, alpha: float = 2.0, cutoff: float = 0.05, std: float = 0.5) -> None:
        super().__init__()
        if not (alpha >= 0 and cutoff > 0 and std > 0):
            raise ValueError(f"need alpha ≥ 0, cutoff > 0 and std > 0, got {alpha}, {cutoff}, {std}")
        self.register_buffer("acp", alphas_cumprod.double())
        self.alpha, self.cutoff, self.std = float(alpha), float(cutoff), float(std)
        w = (torch.arange(1024, dtype=torch.float64) + 0.5) / 1024 - 0.5  # midpoint rule on [−½, ½)
        self.norm = float(1.0 / self._shape(w[:, None] ** 2 + w[None, :] ** 2).mean())

    def _shape(self, f2: torch.Tensor) -> torch.Tensor:
        return (f2 + self.cutoff**2) ** (-self.alpha / 2)

    def spectrum(self, height: int, width: int, device=None) -> torch.Tensor:
        """(H, W) float64 eigenvalues of Σ on an H×W canvas, in ``torch.fft.fft2`` order."""
        fh = torch.fft.fftfreq(height, dtype=torch.float64, device=device)
        fw = torch.fft.fftfreq(width, dtype=torch.float64, device=device)
        return self.std**2 * self.norm * self._shape(fh[:, None] ** 2 + fw[None, :] ** 2)

    def filter(self, x: torch.Tensor, gain: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """F⁻¹ diag(gain(S)) F x over the last two dims, in float64 (gain maps the spectrum elementwise)."""
        s = self.spectrum(x.shape[-2], x.shape[-1], x.device)
        return torch.fft.ifft2(torch.fft.fft2(x.double()) * gain(s)).real

    def covariance(self, x: torch.Tensor) -> torch.Tensor:
        """Σx: (…, H, W) float64."""
        return self.filter(x, lambda s: s)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.acp[t].view(-1, 1, 1, 1)  # (B, 1, 1, 1)
        s = self.spectrum(x.shape[-2], x.shape[-1], x.device)
        eps = (1 - a).sqrt() * torch.fft.ifft2(torch.fft.fft2(x.double()) / (a * s + 1 - a)).real
        return eps.to(x.dtype)

    def sample(self, n: int, shape, generator: torch.Generator) -> torch.Tensor:
        """n exact prior draws (n, C, H, W) float64: F⁻¹ √S F of white noise."""
        z = torch.randn(n, *shape, generator=generator, dtype=torch.float64)
        return self.filter(z, torch.sqrt)


def stationary_denoiser(channels: int = 1, image_size: int | None = None, T: int = 1000, **prior) -> Denoiser:
    """A :class:`Denoiser` whose ε is :class:`StationaryGaussianEps` (``prior``: alpha, cutoff, std). With
    ``image_size`` it stands for a model trained at that size (what ``CanvasDenoiser`` tiles); without it, the
    exact ε on any canvas."""
    acp = schedules.linear(T)
    return Denoiser(StationaryGaussianEps(acp, **prior), acp, channels=channels, image_size=image_size)


def _conjugate_gradient(apply: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int, rtol: float) -> torch.Tensor:
    """Solve apply(z) = b for symmetric positive semi-definite ``apply`` and b in its range, per row of b (n, …)."""
    z = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r.flatten(1).pow(2).sum(1)
    stop = rtol**2 * rr.clamp_min(1e-300)
    for _ in range(iters):
        if bool((rr <= stop).all()):
            break
        ap = apply(p)
        step = rr / (p * ap).flatten(1).sum(1).clamp_min(1e-300)
        z = z + step.view(-1, *[1] * (b.ndim - 1)) * p
        r = r - step.view(-1, *[1] * (b.ndim - 1)) * ap
        rr_new = r.flatten(1).pow(2).sum(1)
        p = r + (rr_new / rr.clamp_min(1e-300)).view(-1, *[1] * (b.ndim - 1)) * p
        rr = rr_new
    return z


def stationary_posterior_samples(
    prior: StationaryGaussianEps,
    op,
    y: torch.Tensor,
    sigma_y: float,
    n: int,
    generator: torch.Generator,
    *,
    iters: int = 2000,
    rtol: float = 1e-10,
) -> torch.Tensor:
    """n exact draws (n, C, H, W) float64 from x | y = Hx + N(0, σ_y² I) for the stationary prior and a linear
    ``op`` (σ_y in model units, the scale y lives on), by Matheron's rule: x = x₀ + ΣHᵀ(HΣHᵀ + σ_y²I)⁻¹(y − Hx₀ − e)
    with x₀ a prior draw and e ~ N(0, σ_y² I), the solve by conjugate gradient. y: (1, …) one measurement, as op
    gives it; the canvas shape is that of op.adjoint(y)."""
    if not op.linear:
        raise ValueError(f"the exact Gaussian posterior needs a linear operator, got {op.spec}")
    y = y.double()
    shape = op.adjoint(y).shape[1:]
    x0 = prior.sample(n, shape, generator)
    e = sigma_y * torch.randn(n, *y.shape[1:], generator=generator, dtype=torch.float64)

    def normal(v: torch.Tensor) -> torch.Tensor:
        return op(prior.covariance(op.adjoint(v))) + sigma_y**2 * v

    z = _conjugate_gradient(normal, y - op(x0) - e, iters, rtol)
    return x0 + prior.covariance(op.adjoint(z))
