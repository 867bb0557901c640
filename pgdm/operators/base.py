"""Measurement operator interface: h, h† and, for linear operators, Hᵀ and Hᵀ(HHᵀ + λI)⁻¹.

Images are (B, C, H, W) floats in [-1, 1]; a measurement y has whatever batch-first shape the
operator produces. Operators are ``nn.Module``s whose parameters are buffers, so ``.to(device)``
and ``state_dict`` work, and updates ``copy_`` into them so captured CUDA graphs stay valid.
"""
from __future__ import annotations

import abc

import torch
from torch import nn

from .. import validate

__all__ = ["Operator", "LinearOperator", "as_batch_lam"]


class Operator(nn.Module, abc.ABC):
    """A measurement function h with a pseudo-inverse h† such that h(h†(h(x))) = h(x) (Sec. 3.2).

    Subclasses implement ``forward`` (h) and ``pinv`` (h†), and may override ``check_input``.
    ``linear`` tells the sampler whether the noisy guidance of Eq. 7 applies.
    """

    linear: bool = False

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h(x). x: (B, C, H, W) in [-1, 1]."""

    @abc.abstractmethod
    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """h†(y): an image (B, C, H, W) with h(h†(y)) = y for every y in the range of h."""

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """h†(h(x)), the map ΠGDM applies to x̂ every step; operators with a fused path override it."""
        return self.pinv(self(x))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a one-line ValueError if x: (B, C, H, W) is not a valid input for this operator."""
        if x.ndim != 4:
            raise ValueError(f"{self.spec}: expected an image batch of shape (B, C, H, W), got {tuple(x.shape)}")

    def check_measurement(self, y: torch.Tensor) -> None:
        """Raise a one-line ValueError if y is not a measurement this operator can produce."""
        if y.ndim != 4:
            raise ValueError(f"{self.spec}: expected a measurement of shape (B, C, H, W), got {tuple(y.shape)}")

    def repeat_batch(self, k: int) -> "Operator":
        """The operator for a batch made of k stacked copies of the original batch (``torch.cat([x] * k)``).

        Operators with per-image parameters (a (B, …) mask, per-image tables) tile them; others return self.
        """
        return self

    @property
    def spec(self) -> str:
        """The spec string (``pgdm.ops.parse`` syntax) that rebuilds this operator, or its class name."""
        return type(self).__name__

    def extra_repr(self) -> str:
        return self.spec

    def __mul__(self, other: "Operator") -> "Operator":
        """``a * b`` is composition: apply b, then a."""
        from .compose import Compose

        if not isinstance(other, Operator):
            return NotImplemented
        return Compose([other, self])


class LinearOperator(Operator):
    """A linear measurement y = Hx with adjoint Hᵀ and a regularised pseudo-inverse.

    ``regularized_pinv(v, lam)`` = Hᵀ(HHᵀ + λI)⁻¹ v, the matrix of the noisy ΠGDM guidance (Eq. 7, with
    λ = σ_y²/r_t²); at λ = 0 it equals H†. The default solves (HHᵀ + λI)z = v by conjugate gradient
    with a fixed iteration count (no host syncs); operators with structure override it in closed form.
    """

    linear = True
    cg_iters: int = 64

    @abc.abstractmethod
    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Hᵀy: (B, C, H, W)."""

    def regularized_pinv(self, v: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
        lam = as_batch_lam(lam, v)
        z = conjugate_gradient_no_sync(lambda u: self(self.adjoint(u)) + lam * u, v, self.cg_iters)
        return self.adjoint(z)


def as_batch_lam(lam: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """λ as a tensor broadcasting over a batch like ``like``: a float, or a (B,) per-image tensor → (B, 1, …).

    A float λ is checked (finite, ≥ 0: a one-line ValueError otherwise); a tensor λ is not, since checking its
    values would sync with the device inside the sampling step: the sampler's σ_y²/r_t² is ≥ 0 by construction,
    σ_y being checked on the host when the run is planned.
    """
    if isinstance(lam, torch.Tensor):
        lam = lam.to(dtype=like.dtype, device=like.device)
    else:  # a fill kernel, not a host-to-device copy: no sync inside a captured step
        lam = torch.full((), validate.non_negative_real("lam", lam), dtype=like.dtype, device=like.device)
    if lam.ndim == 1:
        if lam.shape[0] != like.shape[0]:
            raise ValueError(f"per-image lam must have shape ({like.shape[0]},), got {tuple(lam.shape)}")
        lam = lam.view(-1, *([1] * (like.ndim - 1)))
    elif lam.ndim != 0:
        raise ValueError(f"lam must be a float or a (B,) tensor, got shape {tuple(lam.shape)}")
    return lam


def conjugate_gradient_no_sync(apply_A, b: torch.Tensor, iters: int) -> torch.Tensor:
    """Solve A z = b per batch element (A symmetric PSD, b in its range) with a fixed number of CG steps.

    b: (B, …). Each batch element keeps its own step sizes; steps whose denominators vanish (converged)
    are zeroed with ``torch.where`` rather than a host-side branch.
    """
    dims = tuple(range(1, b.ndim))
    dot = lambda u, w: (u * w).sum(dim=dims, keepdim=True)  # noqa: E731
    z = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = dot(r, r)
    tiny = torch.finfo(b.dtype).tiny
    for _ in range(iters):
        Ap = apply_A(p)
        pAp = dot(p, Ap)
        alpha = torch.where(pAp > tiny, rr / pAp.clamp_min(tiny), torch.zeros_like(rr))
        z = z + alpha * p
        r = r - alpha * Ap
        rr_new = dot(r, r)
        beta = torch.where(rr > tiny, rr_new / rr.clamp_min(tiny), torch.zeros_like(rr))
        p = r + beta * p
        rr = rr_new
    return z
