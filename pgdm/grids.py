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


def write_grid(
    rows: Sequence[Sequence[torch.Tensor]], labels: Sequence[str], path: str | Path, min_tile: int = 96, row_labels: Sequence[str] = ()
) -> Path:
    """Write rows of (C, H, W) panels in [-1, 1] as a PNG with ``labels`` over the columns.

    Each panel is upsampled by an integer factor (nearest neighbour) to at least ``min_tile`` pixels high, and
    placed at the top left of a cell as large as the largest panel (images of several sizes share one grid).
    ``row_labels`` (one per row, or none) go in a column on the left, each at the top of its row.
    """
    if row_labels and len(row_labels) != len(rows):
        raise ValueError(f"row_labels must name every row: {len(rows)} rows, {len(row_labels)} labels")
    scaled = [[(p, max(1, math.ceil(min_tile / p.shape[-2]))) for p in row] for row in rows]
    th = max(p.shape[-2] * s for row in scaled for p, s in row)
    tw = max(p.shape[-1] * s for row in scaled for p, s in row)
    cols = max(len(r) for r in rows)
    font = ImageFont.load_default(size=12)
    left = math.ceil(max(font.getlength(label) for label in row_labels)) + 2 * GUTTER if row_labels else 0
    grid = Image.new("RGB", (left + cols * (tw + GUTTER) + GUTTER, LABEL_HEIGHT + len(rows) * (th + GUTTER) + GUTTER), "white")
    draw = ImageDraw.Draw(grid)
    for c, label in enumerate(labels[:cols]):
        draw.text((left + GUTTER + c * (tw + GUTTER), 3), label, fill="black", font=font)
    for r, label in enumerate(row_labels):
        draw.text((GUTTER, LABEL_HEIGHT + GUTTER + r * (th + GUTTER)), label, fill="black", font=font)
    for r, row in enumerate(scaled):
        for c, (panel, scale) in enumerate(row):
            tile = Image.fromarray(to_uint8(panel)).convert("RGB").resize((panel.shape[-1] * scale, panel.shape[-2] * scale), Image.NEAREST)
            grid.paste(tile, (left + GUTTER + c * (tw + GUTTER), LABEL_HEIGHT + GUTTER + r * (th + GUTTER)))
    return write_bytes_atomic(Path(path), lambda tmp: grid.save(tmp, format="PNG"))
