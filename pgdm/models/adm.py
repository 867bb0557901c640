"""ADM UNet (Dhariwal & Nichol 2021), state-dict compatible with openai/guided-diffusion checkpoints.

The module tree, key names and numerics follow guided-diffusion's ``UNetModel`` so that the
published checkpoints load with ``load_state_dict(strict=True)`` unchanged and give the same
outputs (within float32 rounding). Differences: attention runs through
``F.scaled_dot_product_attention``, there is no gradient checkpointing, and low precision is
chosen with :meth:`ADMUNet.to_precision` rather than ``use_fp16``.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .layers import GroupNorm32, attention, set_precision_

__all__ = ["ADMUNet", "SuperResADMUNet", "create_model", "timestep_embedding"]

NUM_CLASSES = 1000
# guided-diffusion's create_model / sr_create_model defaults for channel_mult="" by image size.
_CHANNEL_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
_SR_CHANNEL_MULT = {512: (1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4)}


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """ADM sinusoidal embedding ``[cos(t·f), sin(t·f)]`` with ``f_i = exp(-ln(max_period)·i/half)``.

    Computed in float32 whatever the model dtype, with the reference's operation order, so that
    float32 and float64 models see the same embedding. t: (B,) integer or float timesteps in
    [0, T). Returns (B, dim) float32.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def _normalization(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels, eps=1e-5)


class Upsample(nn.Module):
    """Nearest ×2 then 3×3 conv. x: (B, C, H, W) → (B, C, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Downsample(nn.Module):
    """3×3 conv with stride 2, padding 1. x: (B, C, H, W) → (B, C, ⌈H/2⌉, ⌈W/2⌉)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """Residual block conditioned on the embedding, optionally resampling (``resblock_updown``).

    x: (B, C_in, H, W), emb: (B, E) → (B, C_out, H', W') with H' = 2H (up), H/2 (down) or H.
    With ``use_scale_shift_norm`` the embedding gives ``scale, shift`` (scale first) and
    ``h = norm(h)·(1 + scale) + shift``; otherwise it is added before the second norm.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int,
        *,
        dropout: float,
        use_scale_shift_norm: bool,
        resample: Literal["up", "down"] | None = None,
    ) -> None:
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.resample = resample
        self.in_layers = nn.Sequential(_normalization(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(
            _normalization(out_channels), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers[1](self.in_layers[0](x))
        h = self.in_layers[2](self._resample(h))  # resample after SiLU, before the conv
        x = self._resample(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]  # (B, C or 2C, 1, 1)
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over the H·W positions with a residual connection.

    Keeps the reference's parameters (``qkv``: Conv1d weight (3C, C, 1); ``proj_out``: (C, C, 1))
    and head layout: the legacy order splits heads first (qkv channel = head·3ch + {q,k,v}·ch + c),
    the new order splits q, k, v first ({q,k,v}·C + head·ch + c). Attention is
    ``softmax(q·kᵀ/√ch)·v`` through :func:`~pgdm.models.layers.attention`.
    x: (B, C, H, W) → (B, C, H, W).
    """

    def __init__(self, channels: int, *, num_heads: int, num_head_channels: int, use_new_attention_order: bool) -> None:
        super().__init__()
        if num_head_channels != -1:
            if channels % num_head_channels:
                raise ValueError(f"attention channels {channels} are not divisible by num_head_channels={num_head_channels}")
            num_heads = channels // num_head_channels
        if channels % num_heads:
            raise ValueError(f"attention channels {channels} are not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.use_new_attention_order = use_new_attention_order
        self.norm = _normalization(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        heads, ch = self.num_heads, C // self.num_heads
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, T, C)
        qkv = F.linear(h, self.qkv.weight[:, :, 0], self.qkv.bias)  # (B, T, 3C)
        if self.use_new_attention_order:
            q, k, v = qkv.view(B, H * W, 3, heads, ch).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, ch)
        else:
            q, k, v = qkv.view(B, H * W, heads, 3, ch).permute(3, 0, 2, 1, 4).unbind(0)  # each (B, heads, T, ch)
        a = attention(q, k, v).transpose(1, 2).reshape(B, H * W, C)  # (B, T, C)
        out = F.linear(a, self.proj_out.weight[:, :, 0], self.proj_out.bias)  # (B, T, C)
        return x + out.transpose(1, 2).reshape(B, C, H, W)


class TimestepEmbedSequential(nn.Sequential):
    """Sequential that passes the embedding to the ResBlocks it contains."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class ADMUNet(nn.Module):
    """The ADM UNet, guided-diffusion's ``UNetModel`` with ``dims=2`` and ``conv_resample=True``.

    Args:
        in_channels: input channels (3; 6 for the super-resolution models).
        model_channels: base width; the sinusoid has this size and ``time_embed`` gives 4× it.
        out_channels: 3 (ε), or 6 with a learned variance ([ε, v]).
        num_res_blocks: ResBlocks per level.
        attention_ds: downsampling factors (1, 2, 4, …) at which attention blocks are inserted.
        channel_mult: width multiplier per level, possibly fractional (512×512 uses 0.5).
        num_classes: size of the class embedding, or None for unconditional models.
        num_heads, num_head_channels, num_heads_upsample: heads per attention block; a
            ``num_head_channels`` other than -1 overrides the head count, and the decoder uses
            ``num_heads_upsample`` (-1: same as ``num_heads``).
        use_scale_shift_norm, resblock_updown, use_new_attention_order, dropout: as in the reference.

    ``forward(x, t, y=None)``: x: (B, in_channels, H, W) float, H and W divisible by
    2^(levels−1); t: (B,) int64 in [0, T); y: (B,) int64 in [0, num_classes) for class-conditional
    models. Returns (B, out_channels, H, W) in x's dtype.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_ds: Sequence[int],
        channel_mult: Sequence[float],
        num_classes: int | None = None,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.model_channels = model_channels
        self.num_classes = num_classes
        num_heads_upsample = num_heads if num_heads_upsample == -1 else num_heads_upsample
        emb_dim = 4 * model_channels

        def res_block(cin: int, cout: int, resample: Literal["up", "down"] | None = None) -> ResBlock:
            return ResBlock(cin, emb_dim, cout, dropout=dropout, use_scale_shift_norm=use_scale_shift_norm, resample=resample)

        def attention(c: int, heads: int) -> AttentionBlock:
            return AttentionBlock(c, num_heads=heads, num_head_channels=num_head_channels, use_new_attention_order=use_new_attention_order)

        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_channels = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res_block(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_ds:
                    layers.append(attention(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                down = res_block(ch, ch, "down") if resblock_updown else Downsample(ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_channels.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(res_block(ch, ch), attention(ch, num_heads), res_block(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res_block(ch + skip_channels.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_ds:
                    layers.append(attention(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(res_block(ch, ch, "up") if resblock_updown else Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(_normalization(ch), nn.SiLU(), nn.Conv2d(input_ch, out_channels, 3, padding=1))

    def to_precision(self, dtype: torch.dtype) -> ADMUNet:
        """Cast in place like the reference: float32/float64 everywhere, or float16/bfloat16 for the body.

        In low precision the convolutions of ``input_blocks``, ``middle_block`` and
        ``output_blocks`` (the keys guided-diffusion's ``convert_to_fp16`` converts) take ``dtype``;
        ``time_embed``, ``label_emb``, the ``emb_layers`` projections, every GroupNorm and ``out``
        stay float32, and GroupNorm computes in float32. Returns self.
        """
        set_precision_(self, [self.input_blocks, self.middle_block, self.output_blocks], dtype)
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if (y is None) != (self.num_classes is None):
            raise ValueError("class labels y must be given exactly when the model is class-conditional")
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(self.time_embed[0].weight.dtype))  # (B, 4mc)
        if y is not None:
            emb = emb + self.label_emb(y)
        h = x.to(self.input_blocks[0][0].weight.dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.to(self.out[2].weight.dtype)).to(x.dtype)


class SuperResADMUNet(ADMUNet):
    """guided-diffusion's ``SuperResModel``: an ADMUNet fed ``[x_t, bilinear-upsampled low_res]``.

    ``forward(x, t, low_res, y=None)``: x: (B, 3, H, W); low_res: (B, 3, h, w) in [-1, 1],
    upsampled bilinearly to (H, W). Returns (B, out_channels, H, W).
    """

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, t: torch.Tensor, low_res: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        upsampled = F.interpolate(low_res, x.shape[-2:], mode="bilinear")
        return super().forward(torch.cat([x, upsampled], dim=1), t, y)


def _parse_ints(value: str | int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,)
    if isinstance(value, str):
        return tuple(int(v) for v in value.split(",") if v.strip())
    return tuple(int(v) for v in value)


def create_model(
    *,
    num_channels: int,
    num_res_blocks: int,
    image_size: int | None = None,
    large_size: int | None = None,
    small_size: int | None = None,
    channel_mult: str | Sequence[float] = "",
    learn_sigma: bool = False,
    class_cond: bool = False,
    use_checkpoint: bool = False,
    attention_resolutions: str | int | Sequence[int] = "16",
    num_heads: int = 1,
    num_head_channels: int = -1,
    num_heads_upsample: int = -1,
    use_scale_shift_norm: bool = False,
    dropout: float = 0.0,
    resblock_updown: bool = False,
    use_fp16: bool = False,
    use_new_attention_order: bool = False,
    channels: int = 3,
) -> ADMUNet:
    """Build the network from guided-diffusion's ``create_model`` (or ``sr_create_model``) kwargs.

    Takes the keyword arguments exactly as the reference scripts and the fixtures' JSON store
    them. ``large_size``/``small_size`` instead of ``image_size`` build a :class:`SuperResADMUNet`.
    ``use_checkpoint`` and ``use_fp16`` are accepted for compatibility and ignored: pgdm never
    checkpoints, and precision is set with :meth:`ADMUNet.to_precision`. The model is built in
    float32 on the current default device (use ``with torch.device("meta"):`` to skip allocation).
    ``channels`` (a pgdm extension, default 3) sets the image channels, e.g. 1 for grayscale models.
    """
    del use_checkpoint, use_fp16, small_size
    if (image_size is None) == (large_size is None):
        raise ValueError("ADM config needs exactly one of image_size (UNetModel) and large_size (SuperResModel)")
    size = image_size if large_size is None else large_size
    if large_size is not None:
        mults = _SR_CHANNEL_MULT.get(large_size)
    elif channel_mult == "":
        mults = _CHANNEL_MULT.get(size)
    else:
        mults = _parse_ints(channel_mult) if isinstance(channel_mult, str) else tuple(channel_mult)
    if mults is None:
        raise ValueError(f"no default channel_mult for image size {size}; pass channel_mult, e.g. '1,2,2,2'")
    cls = ADMUNet if large_size is None else SuperResADMUNet
    return cls(
        in_channels=channels if large_size is None else 2 * channels,
        model_channels=num_channels,
        out_channels=2 * channels if learn_sigma else channels,
        num_res_blocks=num_res_blocks,
        attention_ds=tuple(size // r for r in _parse_ints(attention_resolutions)),
        channel_mult=mults,
        num_classes=NUM_CLASSES if class_cond else None,
        num_heads=num_heads,
        num_head_channels=num_head_channels,
        num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=use_scale_shift_norm,
        resblock_updown=resblock_updown,
        use_new_attention_order=use_new_attention_order,
        dropout=dropout,
    )


CREATE_MODEL_KEYS = frozenset(inspect.signature(create_model).parameters)


def check_create_model_kwargs(kwargs: dict[str, Any]) -> None:
    """Raise a one-line ValueError if ``kwargs`` holds a key :func:`create_model` does not take."""
    unknown = sorted(set(kwargs) - CREATE_MODEL_KEYS)
    if unknown:
        raise ValueError(f"unknown ADM config key {unknown[0]!r}; create_model takes {sorted(CREATE_MODEL_KEYS)}")
    missing = sorted(k for k in ("num_channels", "num_res_blocks") if k not in kwargs)
    if missing:
        raise ValueError(f"ADM config is missing {missing[0]!r}")
