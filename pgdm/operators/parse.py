"""Spec strings: ``"sr4-bicubic+blur-uniform9"`` → an operator.

A spec is one or more operator names joined by ``+``, applied left to right (the first one sees
the clean image). Operators whose parameters depend on the image size (inpainting masks) are built
for the shape flowing into them, so ``parse`` needs the clean image shape.
"""
from __future__ import annotations

import re
from typing import Callable

import torch

from .base import Operator
from .blur import Blur
from .colorize import Colorize
from .compose import Compose
from .identity import Identity
from .inpaint import Inpaint, center_box_mask, freeform_mask, random_pixel_mask
from .jpeg import JPEG
from .quantize import LowDynamicRange, Quantize
from .superres import SuperResolution

__all__ = ["parse", "spec_help"]

Shape = tuple[int, int, int]
Factory = Callable[[re.Match, Shape, int], Operator]


def _inpaint(make_mask) -> Factory:
    return lambda m, shape, seed: Inpaint(make_mask(m, shape, seed))


# (pattern, factory(match, (C, H, W) of the input, seed), help line). Order matters only for help.
_TABLE: list[tuple[str, Factory, str]] = [
    (r"identity|denoise", lambda m, s, seed: Identity(), "identity | denoise: y = x (use with --sigma-y)"),
    (
        r"sr(\d+)(?:-(pool|bicubic))?",
        lambda m, s, seed: SuperResolution(int(m[1]), m[2] or "pool"),
        "srF[-pool|-bicubic]: downsample by F (average pooling by default, or anti-aliased bicubic)",
    ),
    (
        r"blur-uniform(\d+)",
        lambda m, s, seed: Blur.uniform(int(m[1])),
        "blur-uniformK: K×K box blur (circular)",
    ),
    (
        r"blur-gaussian(\d+)(?:-([\d.]+))?",
        lambda m, s, seed: Blur.gaussian(int(m[1]), float(m[2] or 3.0)),
        "blur-gaussianK[-S]: K×K Gaussian blur, std S pixels (default 3.0)",
    ),
    (
        r"blur-motion(\d+)",
        lambda m, s, seed: Blur.motion(int(m[1]), seed=seed),
        "blur-motionK: K×K random motion-blur trajectory drawn from the seed",
    ),
    (r"colorize|gray", lambda m, s, seed: Colorize(), "colorize | gray: y = channel mean"),
    (
        r"inpaint-center(?:([\d.]+))?",
        _inpaint(lambda m, s, seed: center_box_mask(s[1], s[2], float(m[1]) if m[1] else 0.5)),
        "inpaint-center[F]: hide a centred box of F × the image side (default 0.5, the paper's 128/256)",
    ),
    (
        r"inpaint-random([\d.]+)?",
        _inpaint(lambda m, s, seed: random_pixel_mask(s[1], s[2], float(m[1]) if m[1] else 0.8, seed=seed)),
        "inpaint-random[P]: hide a random fraction P of the pixels (default 0.8)",
    ),
    (
        r"inpaint-freeform",
        _inpaint(lambda m, s, seed: freeform_mask(s[1], s[2], seed=seed)),
        "inpaint-freeform: hide random brush strokes drawn from the seed",
    ),
    (
        r"jpeg(\d+)?(?:-(420|422|444))?",
        lambda m, s, seed: JPEG(int(m[1] or 75), subsampling=m[2] or "420", grayscale=s[0] == 1, size=(s[1], s[2])),
        "jpeg[Q][-420|-422|-444]: baseline JPEG at IJG quality Q (1..100, default 75), y = quantised DCT coefficients; "
        "4:2:0 by default, grayscale for 1-channel images; restoring a .jpg file uses the file's own tables",
    ),
    (
        r"quant(\d+)",
        lambda m, s, seed: Quantize(int(m[1])),
        "quantB: quantise to 2^B levels (floor), h† = identity on the grid",
    ),
    (
        r"ldr(?:(\d+)(?:-([\d.]+))?)?",
        lambda m, s, seed: LowDynamicRange(-float(m[2] or 0.6), float(m[2] or 0.6), int(m[1] or 4)),
        "ldr[B[-A]]: low dynamic range, clip to [-A, A] (default 0.6) then keep B bits (default 4) (App. A.5)",
    ),
]


def parse(spec: str, shape: tuple[int, int, int], *, seed: int = 0) -> Operator:
    """Build the operator named by ``spec`` for clean images of shape ``(C, H, W)``.

    Example:
        >>> op = parse("sr4-bicubic+inpaint-center", (3, 64, 64))   # SR×4, then a hole in the 16×16 image
    """
    if len(shape) != 3:
        raise ValueError(f"shape must be (C, H, W), got {tuple(shape)}")
    ops: list[Operator] = []
    current: tuple[int, ...] = tuple(int(v) for v in shape)
    for part in spec.strip().lower().split("+"):
        op = _build_one(part.strip(), current, seed)
        ops.append(op)
        current = tuple(op(torch.zeros(1, *current)).shape[1:])
    return ops[0] if len(ops) == 1 else Compose(ops)


def _build_one(part: str, shape: tuple[int, ...], seed: int) -> Operator:
    for pattern, factory, _ in _TABLE:
        m = re.fullmatch(pattern, part)
        if m:
            return factory(m, shape, seed)
    raise ValueError(f"unknown operator {part!r} in spec; expected one of: " + "; ".join(h.split(":")[0] for _, _, h in _TABLE))


def spec_help() -> str:
    """One line per spec form, for docs/operators.md and ``--help``."""
    return "\n".join(h for _, _, h in _TABLE)

