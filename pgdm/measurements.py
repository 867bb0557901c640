"""Measurements as files: what ``pgdm degrade`` writes and ``pgdm restore`` reads back.

The operator applied last answers how its measurement is stored (``op.measurement_format``,
:mod:`pgdm.operators.formats`): a ``.jpg`` with the operator's own tables and coefficients for JPEG, a masked
image plus ``<name>_mask.png`` for inpainting, and an 8-bit PNG of y otherwise (low-resolution, blurred,
grayscale, quantised or noisy images, as users have them). This module holds one reader and one writer per format.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .io import fit_size, read_image, write_image
from .operators import JPEG, Operator
from .operators.formats import mask_path_for
from .operators.jpeg_file import jpeg_frame_shape

__all__ = ["write_measurement", "read_measurement", "read_mask", "mask_path_for", "measurement_files", "measurement_shape"]


def measurement_files(op: Operator, stem: Path) -> list[Path]:
    """The files :func:`write_measurement` writes for ``stem``: ``stem.jpg``, or ``stem.png`` (+ ``stem_mask.png``)."""
    return op.measurement_format.files(stem)


def measurement_shape(op: Operator, image_shape: tuple[int, int, int]) -> tuple[int, ...]:
    """The shape (C, h, w) of the measurement ``op`` makes of one (C, H, W) image (host work: runs h on zeros)."""
    return tuple(op(torch.zeros(1, *image_shape)).shape[1:])


def write_measurement(op: Operator, x: torch.Tensor, y: torch.Tensor, stem: Path) -> list[Path]:
    """Write the measurement y = op(x) (+ noise) of one image x: (1, C, H, W) as ``stem`` + suffix.

    JPEG: the image entering the JPEG step is saved by Pillow (libjpeg) with the operator's tables and
    chroma subsampling, so the file's coefficients are exactly y. Returns the files written.
    """
    fmt, head = op.measurement_format, op.parts()[:-1]
    if any(not part.measurement_format.pixels for part in head):
        raise ValueError(f"{op.spec}: JPEG must be the last operator to store the measurement as a file (y after it is not an image)")
    if not fmt.pixels:
        return [op.last.to_file(_apply(head, x), fmt.files(stem)[0])]
    if y.ndim != 4 or y.shape[1] not in (1, 3):
        raise ValueError(f"{op.spec}: measurement of shape {tuple(y.shape)} cannot be stored as an image file")
    files = fmt.files(stem)
    written = [write_image(y[0], files[0])]
    if fmt.needs_mask:
        mask = op.last.mask[0, :1].expand(1, *y.shape[-2:]) * 2 - 1  # (1, H, W): 1 observed → white
        written.append(write_image(mask, files[1]))
    return written


def read_measurement(
    template: Operator,
    path: Path,
    image_shape: tuple[int, int, int],
    *,
    mask: Path | None = None,
    fit: str | None = None,
    to_gray: bool = False,
    notes: list[str] | None = None,
) -> tuple[Operator, torch.Tensor]:
    """Read a degraded file as (operator, y) for restoring clean images of ``image_shape`` = (C, H, W).

    ``template`` is the task's operator built for ``image_shape``. A ``.jpg`` for a JPEG task gives its own
    tables and coefficients; its size is checked from the frame header before anything is decoded. An
    inpainting task needs its mask: ``mask`` (white = observed, black = missing) or the ``<name>_mask.png``
    that ``pgdm degrade`` writes beside the file. Image-like measurements must have the size the task
    produces from ``image_shape`` (for SR×F: 1/F of it), or be fitted with ``fit`` ("resize" or "crop"), which
    is announced in ``notes``, as is a colour → gray conversion (``to_gray``, see :func:`pgdm.io.read_image`).
    The result is projected back onto the range of the last operator (``Operator.project_measurement``),
    which undoes 8-bit rounding and re-applies the mask.
    """
    fmt = template.measurement_format
    if not fmt.pixels:
        return _read_jpeg_measurement(template, path, image_shape)
    expected = measurement_shape(template, image_shape)
    y = read_image(path, expected[0], to_gray=to_gray, notes=notes)
    y = _fitted(y, tuple(expected[-2:]), fit, path, notes)
    if fmt.needs_mask:
        mask = mask or (mask_path_for(path) if mask_path_for(path).exists() else None)
        if mask is None:
            raise ValueError(
                f"{path}: inpainting needs the image's mask (white = observed): pass --mask FILE or put "
                f"{mask_path_for(path).name} beside it (pgdm degrade writes it)"
            )
        template = template.with_mask(read_mask(mask, tuple(expected[-2:]), fit))
    return template, template.last.project_measurement(y)


def read_mask(path: Path, size: tuple[int, int], fit: str | None = None) -> torch.Tensor:
    """An inpainting mask file as (1, 1, H, W) float {0, 1}: white (255) = observed, black (0) = missing.

    Gray levels in between are refused rather than thresholded (a mask saved as JPEG, or a soft mask);
    ``fit`` resizes with nearest-neighbour sampling, which keeps it binary.
    """
    m = read_image(path, 1)
    levels = torch.unique(m)
    if not bool(((levels == -1) | (levels == 1)).all()):
        raise ValueError(f"{path}: a mask must be black (missing) and white (observed) only; found {levels.numel()} gray levels")
    if tuple(m.shape[-2:]) != size:
        if fit is None:
            raise ValueError(f"{path}: mask is {m.shape[-2]}x{m.shape[-1]} but {size[0]}x{size[1]} is needed; pass --resize or --crop")
        m = fit_size(m, size, "crop", str(path)) if fit == "crop" else torch.nn.functional.interpolate(m, size=size, mode="nearest")
    return (m > 0).float()


def _apply(ops: list[Operator], x: torch.Tensor) -> torch.Tensor:
    """x through ``ops`` in order (the part of a chain before its last operator)."""
    for op in ops:
        x = op(x)
    return x


def _fitted(y: torch.Tensor, size: tuple[int, int], fit: str | None, path: Path, notes: list[str] | None) -> torch.Tensor:
    h, w = y.shape[-2:]
    out = fit_size(y, size, fit, str(path))
    if (h, w) != tuple(size) and notes is not None:
        notes.append(f"{path}: {h}x{w} {'resized' if fit == 'resize' else 'centre-cropped'} to {size[0]}x{size[1]}")
    return out


def _read_jpeg_measurement(template: Operator, path: Path, image_shape: tuple[int, int, int]) -> tuple[Operator, torch.Tensor]:
    if path.suffix.lower() not in (".jpg", ".jpeg"):
        raise ValueError(f"{path}: a JPEG task needs the .jpg file itself, got a {path.suffix or 'suffix-less'} file")
    needed = tuple(_apply(template.parts()[:-1], torch.zeros(1, *image_shape)).shape[1:])
    got = jpeg_frame_shape(path)  # from the header: a wrong or absurd size is refused before decoding
    if got != needed:
        raise ValueError(
            f"{path}: the JPEG decodes to {got} (C, H, W) but this task needs {needed}; a JPEG measurement is its "
            "coefficients, which resizing or colour conversion would change: restore it with a model of that size, "
            f"or make a matching JPEG from the original (pgdm degrade jpegQ original.png --size {needed[-1]}"
            f"{' --gray' if needed[0] == 1 else ''} -o DIR)"
        )
    jpeg_op, y = JPEG.from_file(path)
    return template.with_last(jpeg_op), y
