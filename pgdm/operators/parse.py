"""Spec strings: ``"sr4-bicubic+blur-uniform9"`` → an operator.

A spec is one or more operator names joined by ``+``, applied left to right (the first one sees
the clean image). Operators whose parameters depend on the image size (inpainting masks) are built
for the shape flowing into them, so ``parse`` needs the clean image shape.
"""
from __future__ import annotations

import re
from typing import Callable

import torch

from .. import validate
from .base import Operator
from .blur import Blur
from .colorize import Colorize
from .compose import Compose
from .identity import Identity
from .inpaint import Inpaint, center_box_mask, freeform_mask, random_pixel_mask
from .jpeg import JPEG
from .quantize import LowDynamicRange, Quantize
from .superres import SuperResolution, check_divisible

__all__ = ["parse", "spec_help"]

Shape = tuple[int, int, int]
Factory = Callable[[re.Match, Shape, int], Operator]


def _inpaint(make_mask) -> Factory:
    return lambda m, shape, seed: Inpaint(make_mask(m, shape, seed))


def _blur(make: Callable[[re.Match, int], Blur]) -> Factory:
    """A blur factory that refuses a kernel larger than the image before the kernel is allocated."""

    def factory(m: re.Match, shape: Shape, seed: int) -> Operator:
        k, (h, w) = int(m[1]), shape[1:]
        if k > min(h, w):
            raise ValueError(f"{m[0]}: the {k}×{k} kernel is larger than the {h}×{w} image (at most {min(h, w)})")
        return make(m, seed)

    return factory


# (pattern, factory(match, (C, H, W) of the input, seed), help line). Order matters only for help.
_TABLE: list[tuple[str, Factory, str]] = [
    (r"identity|denoise", lambda m, s, seed: Identity(), "identity | denoise: y = x (use with --sigma-y)"),
    (
        r"sr(\d+)(?:-(pool|bicubic))?",
        lambda m, s, seed: SuperResolution(int(m[1]), m[2] or "pool", size=_divisible(m, s, int(m[1]))),
        "srF[-pool|-bicubic]: downsample by F (average pooling by default, or anti-aliased bicubic)",
    ),
    (
        r"blur-uniform(\d+)",
        _blur(lambda m, seed: Blur.uniform(int(m[1]))),
        "blur-uniformK: K×K box blur (circular)",
    ),
    (
        r"blur-gaussian(\d+)(?:-([\d.]+))?",
        _blur(lambda m, seed: Blur.gaussian(int(m[1]), float(m[2] or 3.0))),
        "blur-gaussianK[-S]: K×K Gaussian blur, std S pixels (default 3.0)",
    ),
    (
        r"blur-motion(\d+)",
        _blur(lambda m, seed: Blur.motion(int(m[1]), seed=seed)),
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


def _divisible(m: re.Match, shape: Shape, factor: int) -> tuple[int, int]:
    """The (H, W) an SR operator is built for; a size the factor does not divide is refused before any matrix is built."""
    h, w = shape[1:]
    if factor >= 1:  # factor 0 is the constructor's to refuse
        check_divisible(m[0], h, w, factor)
    return h, w


def parse(spec: str, shape: tuple[int, int, int], *, seed: int = 0) -> Operator:
    """Build the operator named by ``spec`` for clean images of shape ``(C, H, W)``.

    Operators whose output size depends on the input's (super-resolution, JPEG) are built for that size
    and refuse other sizes. Raises a one-line ValueError for a spec that is not a string of known operator
    names, a shape that is not three positive ints, and parameters the image cannot take (a blur kernel
    larger than the image, a factor that does not divide it).

    Example:
        >>> op = parse("sr4-bicubic+inpaint-center", (3, 64, 64))   # SR×4, then a hole in the 16×16 image
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"operator spec must be a non-empty string such as 'sr4' or 'blur-uniform9+jpeg75', got {spec!r}")
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) != 3:
        raise ValueError(f"shape must be the clean image's (C, H, W), got {shape!r}")
    current: tuple[int, ...] = tuple(validate.positive_int("shape", v) for v in shape)
    seed = validate.integer("seed", seed)
    ops: list[Operator] = []
    for part in spec.strip().lower().split("+"):
        if not part.strip():
            raise ValueError(f"empty operator name in spec {spec!r}: names are joined by single '+' signs")
        op = _build_one(part.strip(), current, seed)
        ops.append(op)
        current = tuple(op(torch.zeros(1, *current)).shape[1:])
    return ops[0] if len(ops) == 1 else Compose(ops)


def check_spec(spec: str) -> None:
    """Raise the one-line ValueError :func:`parse` would for a spec that names no known operators, without building
    anything: what is wrong with the spec, whatever the image (sizes are :func:`parse`'s to check)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"operator spec must be a non-empty string such as 'sr4' or 'blur-uniform9+jpeg75', got {spec!r}")
    for part in spec.strip().lower().split("+"):
        if not part.strip():
            raise ValueError(f"empty operator name in spec {spec!r}: names are joined by single '+' signs")
        if not any(re.fullmatch(pattern, part.strip()) for pattern, _, _ in _TABLE):
            raise ValueError(f"unknown operator {part.strip()!r} in spec; expected one of: " + "; ".join(h.split(":")[0] for _, _, h in _TABLE))


def _build_one(part: str, shape: tuple[int, ...], seed: int) -> Operator:
    for pattern, factory, _ in _TABLE:
        m = re.fullmatch(pattern, part)
        if m:
            return factory(m, shape, seed)
    raise ValueError(f"unknown operator {part!r} in spec; expected one of: " + "; ".join(h.split(":")[0] for _, _, h in _TABLE))


def spec_help() -> str:
    """One line per spec form, for docs/operators.md and ``--help``."""
    return "\n".join(h for _, _, h in _TABLE)

