"""Uploaded files ↔ measurements: the bytes of a PNG/JPEG (and mask) become (operator, y) exactly as
``pgdm restore`` reads the same files (:func:`pgdm.measurements.read_measurement`); results become PNG bytes
exactly as ``pgdm restore`` writes them (:func:`pgdm.io.to_uint8`)."""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from pgdm.io import to_uint8
from pgdm.measurements import read_measurement
from pgdm.operators import Operator

__all__ = ["UploadError", "decode_upload", "encode_png", "SUFFIXES"]

SUFFIXES = {"PNG": ".png", "JPEG": ".jpg"}  # accepted formats → the suffix read_measurement keys on


class UploadError(ValueError):
    """An upload that cannot be restored; ``status`` is the HTTP status that says why (400, 413, 415)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _check_image(name: str, data: bytes, max_pixels: int) -> str:
    """The suffix for ``data`` after checking its format and size from the header alone (no full decode)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (w, h) = im.format, im.size
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        if isinstance(err, Image.DecompressionBombError):
            raise UploadError(413, f"{name}: {err}") from None
        raise UploadError(400, f"{name}: not a readable image") from None
    if fmt not in SUFFIXES:
        raise UploadError(415, f"{name}: {fmt} images are not accepted; send PNG or JPEG")
    if w * h > max_pixels:
        raise UploadError(413, f"{name}: {w}x{h} = {w * h} pixels is over the limit of {max_pixels}")
    return SUFFIXES[fmt]


def decode_upload(
    template: Operator,
    image: bytes,
    image_shape: tuple[int, int, int],
    *,
    mask: bytes | None = None,
    fit: str | None = None,
    max_pixels: int = 16_777_216,
) -> tuple[Operator, torch.Tensor]:
    """(operator, y) from the uploaded measurement for restoring (C, H, W) = ``image_shape`` images.

    ``template``: the task's operator; ``image``: the file's bytes (the .jpg itself for a JPEG task);
    ``mask``: an inpainting mask image (white = observed); ``fit``: "resize" or "crop" a measurement of the
    wrong size. Raises :class:`UploadError` with the status to answer.
    """
    suffix = _check_image("image", image, max_pixels)
    if mask is not None:
        _check_image("mask", mask, max_pixels)
        if not template.measurement_format.needs_mask:
            raise UploadError(400, f"mask: the task {template.spec} does not end in inpainting, so it takes no mask")
    with tempfile.TemporaryDirectory(prefix="pgdm-upload-") as folder:
        path = Path(folder) / f"image{suffix}"
        path.write_bytes(image)
        mask_path = None
        if mask is not None:
            mask_path = Path(folder) / "mask.png"
            mask_path.write_bytes(mask)
        try:
            return read_measurement(template, path, image_shape, mask=mask_path, fit=fit)
        except (ValueError, OSError) as err:  # name the upload, not the temporary file
            message = str(err).replace(str(path), "image").replace(str(mask_path), "mask")
            raise UploadError(400, message.replace("--resize", "fit=resize").replace("--crop", "fit=crop")) from None


def encode_png(x: torch.Tensor) -> bytes:
    """(C, H, W) in [-1, 1] → PNG bytes, the pixels ``pgdm restore`` writes for the same image."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(x)).save(buffer, format="PNG")
    return buffer.getvalue()
