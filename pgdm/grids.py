"""Comparison grids: one row per image, labelled columns, tiles upsampled to a readable size."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from .io import to_uint8, write_bytes_atomic
from .operators import Operator

__all__ = ["measurement_view", "write_grid"]

GUTTER = 4
LABEL_HEIGHT = 18


def measurement_view(y: torch.Tensor, op: Operator, size: tuple[int, int]) -> torch.Tensor:
    """How the measurement y (1, …) of ``op`` looks, as a (C, H, W) panel of ``size``.

    The operator applied last shows its measurement (``Operator.measurement_view``: JPEG coefficients
    decoded, as a viewer shows the file; image-like measurements as they are), upsampled with nearest neighbours.
    """
    y = op.last.measurement_view(y)
    return torch.nn.functional.interpolate(y.float().clamp(-1, 1), size=size, mode="nearest")[0]


def write_grid(rows: Sequence[Sequence[torch.Tensor]], labels: Sequence[str], path: str | Path, min_tile: int = 96) -> Path:
    """Write rows of (C, H, W) panels in [-1, 1] (all of one size) as a PNG with ``labels`` over the columns.

    Tiles are upsampled by an integer factor (nearest neighbour) to at least ``min_tile`` pixels.
    """
    h, w = rows[0][0].shape[-2:]
    scale = max(1, math.ceil(min_tile / h))
    th, tw = h * scale, w * scale
    cols = max(len(r) for r in rows)
    grid = Image.new("RGB", (cols * (tw + GUTTER) + GUTTER, LABEL_HEIGHT + len(rows) * (th + GUTTER) + GUTTER), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=12)
    for c, label in enumerate(labels[:cols]):
        draw.text((GUTTER + c * (tw + GUTTER), 3), label, fill="black", font=font)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            tile = Image.fromarray(to_uint8(panel)).convert("RGB").resize((tw, th), Image.NEAREST)
            grid.paste(tile, (GUTTER + c * (tw + GUTTER), LABEL_HEIGHT + GUTTER + r * (th + GUTTER)))
    return write_bytes_atomic(Path(path), lambda tmp: grid.save(tmp, format="PNG"))
