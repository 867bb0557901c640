"""Wrap any ε-prediction network into the denoiser the ΠGDM sampler calls."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["Denoiser", "input_vjp", "eager_vjp"]


def eager_vjp(x: torch.Tensor) -> bool:
    """Whether the input VJP at x is taken eagerly by the tape (``torch.autograd.grad`` w.r.t. a detached copy of x):
    grad mode usable (no inference mode or inference tensor), no dynamo tracing, no torch.func transform around the
    call, and an x the caller does not itself differentiate. Otherwise it is taken with ``torch.func.vjp``."""
    return not (
        torch.compiler.is_dynamo_compiling()
        or torch._C._functorch.peek_interpreter_stack() is not None
        or torch.is_inference_mode_enabled()
        or x.is_inference()
        or (x.requires_grad and torch.is_grad_enabled())
    )


def input_vjp(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """(f(x), u ↦ (∂f/∂x)ᵀ u), x the only input differentiated (f: a tensor → a tensor).

    Eagerly (:func:`eager_vjp`; also under ``make_fx``): ``torch.autograd.grad`` w.r.t. a detached copy of x under
    ``enable_grad``; it computes no weight gradients even for trainable weights, and the VJP may be taken once.
    ``torch.func.vjp`` would cost more there: its dispatch layers take 8 % under ``no_grad``, and with grad mode on it
    runs GroupNorm's and SiLU's backward as decomposed elementwise ops (+35 %) (default model, batch 16, CPU;
    benchmarks/RESULTS.md). Everywhere else ``torch.func.vjp``: dynamo tracing (it compiles with ``fullgraph`` on
    every torch the engine supports; torch 2.11's dynamo refuses ``requires_grad_()``), inference mode or inference
    tensors, and an x that itself needs a gradient (the caller differentiates through the step).
    """
    if not eager_vjp(x):
        out, vjp_fn = torch.func.vjp(f, x)
        return out, lambda u: vjp_fn(u)[0]
    with torch.enable_grad():
        x_in = x.detach().requires_grad_()
        out = f(x_in)

    def vjp_fn(u: torch.Tensor) -> torch.Tensor:
        if not out.requires_grad:  # f ignores x (and has no trainable weights): a zero Jacobian
            return torch.zeros_like(x)
        return torch.autograd.grad(out, x_in, u, allow_unused=True, materialize_grads=True)[0]

    return out.detach(), vjp_fn


class Denoiser(nn.Module):
    """ε-prediction network with its noise schedule.

    ``net(x, t)`` (or ``net(x, t, y)`` when ``class_cond``) takes x: (B, C, H, W) and integer
    timesteps t: (B,) int64 in [0, T), and returns ε (the first ``channels`` output channels
    when ``learn_sigma``: the rest is the variance head, unused by ΠGDM).

    Args:
        net: the network; kept as ``.net``.
        alphas_cumprod: (T,) ᾱ table, stored as a float64 buffer.
        learn_sigma: the network outputs 2·channels channels.
        class_cond: the network takes class labels as a third argument.
        image_size: the resolution the network was trained at (``None``: any).
        channels: image channels (3 for RGB, 1 for grayscale).
    """

    def __init__(
        self,
        net: nn.Module,
        alphas_cumprod: torch.Tensor,
        *,
        learn_sigma: bool = False,
        class_cond: bool = False,
        image_size: int | None = None,
        channels: int = 3,
    ) -> None:
        super().__init__()
        if alphas_cumprod.ndim != 1 or alphas_cumprod.numel() < 2:
            raise ValueError(f"alphas_cumprod must be a 1-D table of length ≥ 2, got shape {tuple(alphas_cumprod.shape)}")
        self.net = net
        self.register_buffer("alphas_cumprod", alphas_cumprod.detach().to(torch.float64).clone(), persistent=False)
        self.learn_sigma = learn_sigma
        self.class_cond = class_cond
        self.image_size = image_size
        self.channels = channels

    @property
    def num_timesteps(self) -> int:
        return self.alphas_cumprod.numel()

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """ε_θ(x, t). x: (B, C, H, W); t: (B,) int64; class_labels: (B,) int64 or None. Returns (B, C, H, W)."""
        out = self.net(x, t, class_labels) if self.class_cond else self.net(x, t)
        return out[:, : self.channels] if self.learn_sigma else out

    def eps_with_vjp(
        self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """(ε_θ(x, t), u ↦ (∂ε_θ/∂x)ᵀ u): the network and its input-only VJP (:func:`input_vjp`), what a guided step
        differentiates. x, u: (B, C, H, W); t: (B,) int64; class_labels: (B,) int64 or None."""
        return input_vjp(lambda z: self(z, t, class_labels), x)

    def predict_x0(self, x: torch.Tensor, eps: torch.Tensor, alpha_t: torch.Tensor) -> torch.Tensor:
        """Tweedie estimate x̂ = (x − √(1−ᾱ_t) ε)/√ᾱ_t (Alg. 1); alpha_t broadcasts against x."""
        return (x - (1 - alpha_t).sqrt() * eps) / alpha_t.sqrt()

    def check_input(self, shape: torch.Size, class_labels: torch.Tensor | None) -> None:
        """Raise a one-line ValueError when an image batch of ``shape`` cannot go through the network."""
        if len(shape) != 4 or shape[1] != self.channels:
            raise ValueError(f"model expects images of shape (B, {self.channels}, H, W), got {tuple(shape)}")
        if self.image_size is not None and tuple(shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"model works on {self.image_size}×{self.image_size} images, got {shape[-2]}×{shape[-1]}; resize or crop the input"
            )
        if self.class_cond and class_labels is None:
            raise ValueError("this model is class-conditional: pass class_labels, a (B,) int tensor or an int")
        if not self.class_cond and class_labels is not None:
            raise ValueError("this model is unconditional: class_labels must be None")
