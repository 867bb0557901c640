"""DDPM-architecture UNet (Ho et al. 2020, PyTorch port used by DDIM and DDRM, ``models.diffusion.Model``).

Key names follow that port (``temb.dense``, ``conv_in``, ``down.L.block.i``, ``mid.attn_1``,
``up.L.upsample``, ``norm_out``, ``conv_out``), so checkpoints such as DDRM's CelebA-HQ
``celeba_hq.ckpt`` load with ``load_state_dict(strict=True)``. Unlike ADM: ``[sin, cos]``
embedding with frequencies ``exp(-ln(10000)·i/(half−1))``, GroupNorm eps 1e-6, additive
timestep conditioning, single-head attention with separate q/k/v convs, and a conv downsample
with asymmetric (0, 1, 0, 1) zero padding.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import GroupNorm32, attention, set_precision_

__all__ = ["DDPMUNet", "ddpm_timestep_embedding"]


def ddpm_timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """DDPM sinusoidal embedding ``[sin(t·f), cos(t·f)]``, ``f_i = exp(-i·ln(10000)/(half−1))``.

    Computed in float32 with the reference's operation order. t: (B,) timesteps in [0, T).
    Returns (B, dim) float32.
    """
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * -(math.log(10000) / (half - 1)))
    args = t.float()[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def _normalize(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """x: (B, C_in, H, W), temb: (B, E) → (B, C_out, H, W); the embedding is added after ``conv1``."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.temb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = _normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb)).to(h.dtype)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H·W positions, residual. x: (B, C, H, W) → same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (conv(h).flatten(2).transpose(1, 2)[:, None] for conv in (self.q, self.k, self.v))  # each (B, 1, T, C)
        a = attention(q, k, v)[:, 0].transpose(1, 2).reshape(B, C, H, W)
        return x + self.proj_out(a)


class Upsample(nn.Module):
    """Nearest ×2, then a 3×3 conv when ``with_conv``. (B, C, H, W) → (B, C, 2H, 2W)."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


class Downsample(nn.Module):
    """Pad (0, 1, 0, 1) and 3×3 conv with stride 2, or 2×2 average pooling. (B, C, H, W) → (B, C, H/2, W/2)."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "conv"):
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class Level(nn.Module):
    """One resolution of the encoder or decoder: ``block``, ``attn`` and an optional resampler."""

    def __init__(self, blocks: list[ResnetBlock], attns: list[AttnBlock]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def run(self, i: int, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.block[i](h, temb)
        return self.attn[i](h) if len(self.attn) else h


class DDPMUNet(nn.Module):
    """The DDPM UNet with the DDIM/DDRM keyword arguments (their ``config.model`` plus ``resolution``).

    Args:
        ch: base width; the sinusoid has this size, ``temb`` gives 4× it.
        out_ch: output channels (3: ε).
        ch_mult: width multiplier per level.
        num_res_blocks: ResnetBlocks per encoder level (decoder levels get one more).
        attn_resolutions: feature-map sizes at which attention is used, e.g. (16,).
        resolution: training image size; with ``attn_resolutions`` it places the attention levels.
        in_channels: image channels.
        dropout: dropout inside the ResnetBlocks (inactive in eval mode).
        resamp_with_conv: convolutional resampling (else nearest / average pooling).

    ``forward(x, t)``: x: (B, in_channels, H, W) float, H and W divisible by 2^(levels−1);
    t: (B,) timesteps in [0, T). Returns (B, out_ch, H, W) in x's dtype.
    """

    def __init__(
        self,
        *,
        ch: int,
        out_ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        attn_resolutions: Sequence[int],
        resolution: int,
        in_channels: int = 3,
        dropout: float = 0.0,
        resamp_with_conv: bool = True,
    ) -> None:
        super().__init__()
        self.ch = ch
        temb_ch = 4 * ch
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, temb_ch), nn.Linear(temb_ch, temb_ch)])
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)

        in_ch_mult = (1, *ch_mult)
        curr_res = resolution
        block_in = ch
        self.down = nn.ModuleList()
        for level, mult in enumerate(ch_mult):
            block_in = ch * in_ch_mult[level]
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, ch * mult, temb_ch, dropout))
                block_in = ch * mult
                if curr_res in attn_resolutions:
                    attns.append(AttnBlock(block_in))
            down = Level(blocks, attns)
            if level != len(ch_mult) - 1:
                down.downsample = Downsample(block_in, resamp_with_conv)
                curr_res //= 2
            self.down.append(down)

        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, temb_ch, dropout)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in, temb_ch, dropout)

        ups: list[Level] = []
        for level in reversed(range(len(ch_mult))):
            block_out = ch * ch_mult[level]
            blocks, attns = [], []
            for i in range(num_res_blocks + 1):
                skip_in = ch * (in_ch_mult[level] if i == num_res_blocks else ch_mult[level])
                blocks.append(ResnetBlock(block_in + skip_in, block_out, temb_ch, dropout))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attns.append(AttnBlock(block_in))
            up = Level(blocks, attns)
            if level != 0:
                up.upsample = Upsample(block_in, resamp_with_conv)
                curr_res *= 2
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)

        self.norm_out = _normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def to_precision(self, dtype: torch.dtype) -> DDPMUNet:
        """Cast in place: float32/float64 everywhere, or float16/bfloat16 for the body convolutions
        (``conv_in``, ``down``, ``mid``, ``up``), keeping ``temb``, ``temb_proj``, GroupNorm and the
        output head in float32 as :meth:`ADMUNet.to_precision` does. Returns self."""
        set_precision_(self, [self.conv_in, self.down, self.mid, self.up], dtype)
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        dense = self.temb.dense
        temb = dense[1](F.silu(dense[0](ddpm_timestep_embedding(t, self.ch).to(dense[0].weight.dtype))))  # (B, 4ch)
        hs = [self.conv_in(x.to(self.conv_in.weight.dtype))]
        for down in self.down:
            for i in range(len(down.block)):
                hs.append(down.run(i, hs[-1], temb))
            if hasattr(down, "downsample"):
                hs.append(down.downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        for up in reversed(self.up):
            for i in range(len(up.block)):
                h = up.run(i, torch.cat([h, hs.pop()], dim=1), temb)
            if hasattr(up, "upsample"):
                h = up.upsample(h)
        h = h.to(self.conv_out.weight.dtype)
        return self.conv_out(F.silu(self.norm_out(h))).to(x.dtype)


DDPM_KEYS = frozenset(inspect.signature(DDPMUNet.__init__).parameters) - {"self"}


def check_ddpm_kwargs(kwargs: dict[str, Any]) -> None:
    """Raise a one-line ValueError if ``kwargs`` holds a key :class:`DDPMUNet` does not take or lacks one it needs."""
    unknown = sorted(set(kwargs) - DDPM_KEYS)
    if unknown:
        raise ValueError(f"unknown DDPM config key {unknown[0]!r}; DDPMUNet takes {sorted(DDPM_KEYS)}")
    required = ("ch", "out_ch", "ch_mult", "num_res_blocks", "attn_resolutions", "resolution")
    missing = [k for k in required if k not in kwargs]
    if missing:
        raise ValueError(f"DDPM config is missing {missing[0]!r}")
