"""Analytic priors with exact ε and exact posteriors: an isotropic Gaussian and a Gaussian mixture.

What the method tests and ``pgdm bench posterior`` measure samplers against: for a mixture prior and a linear
measurement y = Hx + N(0, σ_y² I) the posterior is again a mixture (:func:`gmm_posterior`), which
:func:`sample_mixture` draws from exactly; :func:`sliced_w2` compares two sample sets.
"""
from __future__ import annotations

import torch
from torch import nn

from .denoiser import Denoiser
from . import schedules

__all__ = ["GaussianMixtureEps", "gaussian_denoiser", "mixture_denoiser", "gmm_posterior", "sample_mixture", "sliced_w2"]


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
