"""Uploaded files ↔ measurements: the bytes of a PNG/JPEG (and mask) become (operator, y) exactly as
``pgdm restore`` reads the same files (:func:`pgdm.measurements.read_measurement`); results become PNG bytes
exactly as ``pgdm restore`` writes them (:func:`pgdm.io.to_uint8`)."""
from __future__ import annotations

import io
import re
import tempfile
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from pgdm.io import ImageTooLarge, open_image_checked, to_uint8
from pgdm.measurements import image_shape_of, read_measurement
from pgdm.operators import Operator, parse

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
        with open_image_checked(io.BytesIO(data), name, max_pixels) as im:
            fmt = im.format
    except ImageTooLarge as err:
        raise UploadError(413, str(err)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise UploadError(400, f"{name}: not a readable image") from None
    if fmt not in SUFFIXES:
        raise UploadError(415, f"{name}: {fmt} images are not accepted; send PNG or JPEG")
    return SUFFIXES[fmt]


def decode_upload(
    task: str,
    image: bytes,
    model_shape: tuple[int, int, int],
    *,
    seed: int = 0,
    mask: bytes | None = None,
    fit: str | None = None,
    gray: bool = False,
    max_pixels: int = 16_777_216,
) -> tuple[Operator, torch.Tensor]:
    """(operator, y) from the uploaded measurement: the image it restores has its own size (the measurement's,
    taken back through the task: ×F for SR×F), or the model's (C, H, W) = ``model_shape`` with ``fit``
    ("resize" or "crop").

    ``task``: the operator spec (random masks and kernels drawn with ``seed``); ``image``: the file's bytes (the
    .jpg itself for a JPEG task); ``mask``: an inpainting mask image (white = observed); ``gray``: convert a colour image for a 1-channel
    model. A restored image over ``max_pixels`` is refused (413). Raises :class:`UploadError` with the status to
    answer, whose advice names the request's fields (``fit=resize``, ``gray=true``, the ``mask`` file).
    """
    suffix = _check_image("image", image, max_pixels)
    try:
        template = parse(task, model_shape, seed=seed)
    except ValueError as err:
        raise UploadError(400, str(err)) from None
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
            shape = model_shape if fit is not None else image_shape_of(template, path, model_shape[0])
            if shape[1] * shape[2] > max_pixels:
                raise UploadError(413, f"image: restores a {shape[1]}×{shape[2]} image, over the limit of {max_pixels} pixels")
            return read_measurement(parse(task, shape, seed=seed), path, shape, mask=mask_path, fit=fit, to_gray=gray)
        except UploadError:
            raise
        except (ValueError, OSError) as err:  # name the upload, not the temporary file
            message = str(err).replace(str(path), "image").replace(str(mask_path), "mask")
            raise UploadError(400, http_advice(message)) from None


# Command-line advice in a measurement's error → the request field that does the same.
_HTTP_ADVICE = [
    (re.compile(r"pass --mask FILE or put \S+ beside it \(pgdm degrade writes it\)"), "send it as the file field 'mask'"),
    (re.compile(r"pass --gray to convert it"), "send the form field gray=true to convert it"),
    (re.compile(r"\(--model photo\)"), "(a server started with the photo model)"),
    (re.compile(r"--resize"), "fit=resize"),
    (re.compile(r"--crop"), "fit=crop"),
]


def http_advice(message: str) -> str:
    """``message`` with its command-line advice (``--gray``, ``--mask``, ``--resize``) replaced by the HTTP request's fields."""
    for pattern, field in _HTTP_ADVICE:
        message = pattern.sub(field, message)
    return message


def encode_png(x: torch.Tensor) -> bytes:
    """(C, H, W) in [-1, 1] → PNG bytes, the pixels ``pgdm restore`` writes for the same image."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(x)).save(buffer, format="PNG")
    return buffer.getvalue()
