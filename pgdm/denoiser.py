"""Wrap any ε-prediction network into the denoiser the ΠGDM sampler calls."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["Denoiser"]


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
