"""Measurements as files: what ``pgdm degrade`` writes and ``pgdm restore`` reads back.

The file format follows the last operator of the chain: a ``.jpg`` with the operator's own tables and
coefficients for JPEG, a masked image plus ``<name>_mask.png`` for inpainting, and an 8-bit PNG of y
otherwise (low-resolution, blurred, grayscale, quantised or noisy images, as users have them).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .io import fit_size, read_image, write_image
from .operators import Compose, Inpaint, Operator
from .operators.jpeg import JPEG
from .operators.quantize import Quantize

__all__ = ["last_operator", "replace_last", "write_measurement", "read_measurement", "mask_path_for"]


def last_operator(op: Operator) -> Operator:
    """The operator applied last in a chain (the one whose output is stored)."""
    return op.ops[-1] if isinstance(op, Compose) else op


def replace_last(op: Operator, new_last: Operator) -> Operator:
    """The chain with its last operator swapped for ``new_last``."""
    return Compose([*op.ops[:-1], new_last]) if isinstance(op, Compose) else new_last


def mask_path_for(path: Path) -> Path:
    """Where ``degrade`` writes the mask of an inpainting measurement ``path``."""
    return path.with_name(path.stem + "_mask.png")


def write_measurement(op: Operator, x: torch.Tensor, y: torch.Tensor, stem: Path) -> list[Path]:
    """Write the measurement y = op(x) (+ noise) of one image x: (1, C, H, W) as ``stem`` + suffix.

    JPEG: the image entering the JPEG step is saved by Pillow (libjpeg) with the operator's tables and
    chroma subsampling, so the file's coefficients are exactly y. Returns the files written.
    """
    last = last_operator(op)
    if isinstance(op, Compose) and any(isinstance(o, JPEG) for o in op.ops[:-1]):
        raise ValueError(f"{op.spec}: JPEG must be the last operator to store the measurement as a file (y after it is not an image)")
    if isinstance(last, JPEG):
        x_in = Compose(op.ops[:-1])(x) if isinstance(op, Compose) else x
        return [_save_jpeg(last, x_in[0], stem.with_suffix(".jpg"))]
    if y.ndim != 4 or y.shape[1] not in (1, 3):
        raise ValueError(f"{op.spec}: measurement of shape {tuple(y.shape)} cannot be stored as an image file")
    path = write_image(y[0], stem.with_suffix(".png"))
    if isinstance(last, Inpaint):
        mask = last.mask[0, :1].expand(1, *y.shape[-2:]) * 2 - 1  # (1, H, W): 1 observed → white
        return [path, write_image(mask, mask_path_for(path))]
    return [path]


def _save_jpeg(op: JPEG, x: torch.Tensor, path: Path) -> Path:
    if op.channels == 3 and not torch.equal(op.qtables[1], op.qtables[2]):
        raise ValueError(f"{op.spec}: separate Cb and Cr tables cannot be written with Pillow")
    tables = [t.flatten().tolist() for t in op.qtables[: 1 if op.channels == 1 else 2]]
    subsampling = {"444": 0, "422": 1, "420": 2, "gray": 0}[op.subsampling]
    return write_image(x, path, format="JPEG", qtables=tables, subsampling=subsampling)


def read_measurement(
    template: Operator,
    path: Path,
    image_shape: tuple[int, int, int],
    *,
    mask: Path | None = None,
    fit: str | None = None,
) -> tuple[Operator, torch.Tensor]:
    """Read a degraded file as (operator, y) for restoring clean images of ``image_shape`` = (C, H, W).

    ``template`` is the task's operator built for ``image_shape``. A ``.jpg`` for a JPEG task gives its own
    tables and coefficients; an inpainting task takes ``mask`` (white = observed) or the ``_mask.png``
    beside the file, else the task's own mask. Image-like measurements must have the size the task
    produces from ``image_shape``, or be made to fit with ``fit`` ("resize" or "crop"). The result is
    projected back onto the range of the last operator (y ← h(h†(y)); quantisation snaps to the nearest
    level), which undoes 8-bit rounding and re-applies the mask.
    """
    last = last_operator(template)
    if isinstance(last, JPEG):
        if path.suffix.lower() not in (".jpg", ".jpeg"):
            raise ValueError(f"{path}: a JPEG task needs the .jpg file itself, got a {path.suffix or 'suffix-less'} file")
        jpeg_op, y = JPEG.from_file(path)
        x = torch.zeros(1, *image_shape)
        needed = tuple((Compose(template.ops[:-1])(x) if isinstance(template, Compose) else x).shape[1:])
        got = tuple(jpeg_op.pinv(y).shape[1:])
        if got != needed:
            raise ValueError(f"{path}: the JPEG decodes to {got} (C, H, W) but this task needs {needed}; re-save it at that size")
        return replace_last(template, jpeg_op), y
    expected = template(torch.zeros(1, *image_shape)).shape
    y = fit_size(read_image(path, expected[1]), tuple(expected[-2:]), fit)
    if isinstance(last, Inpaint):
        mask = mask or (mask_path_for(path) if mask_path_for(path).exists() else None)
        if mask is not None:
            m = fit_size(read_image(mask, 1), tuple(expected[-2:]), fit) > 0
            last = Inpaint(m.float())
            template = replace_last(template, last)
    return template, last.nearest_level(y) if isinstance(last, Quantize) else last(last.pinv(y))
