"""Denoisers with exact ε for analytic priors: an isotropic Gaussian and a Gaussian mixture."""
from __future__ import annotations

import torch
from torch import nn

from pgdm import Denoiser, schedules


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
