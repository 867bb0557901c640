"""How a measurement is stored as files, as each operator answers it (``Operator.measurement_format``).

The operator applied last decides: an image-like measurement (low resolution, blurred, gray, quantised,
noisy) is one 8-bit PNG; an inpainting measurement is the masked PNG plus ``<name>_mask.png`` (white =
observed); a JPEG measurement is the ``.jpg`` itself, whose coefficients are y. Readers and writers of
these files (``pgdm.measurements``), the server's uploads, the Ray adapter and the grids ask the format
instead of the operator's type.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["MeasurementFormat", "IMAGE", "MASKED_IMAGE", "JPEG_FILE", "mask_path_for"]


@dataclass(frozen=True)
class MeasurementFormat:
    """The files of one measurement.

    Attributes:
        name: "image", "masked-image" or "jpeg" (the key of the readers and writers).
        suffix: the measurement file's suffix.
        needs_mask: the operator is rebuilt from a mask file stored beside the measurement.
        pixels: y is an image (uint8 pixels round-trip); False when y is not (JPEG coefficients).
    """

    name: str
    suffix: str
    needs_mask: bool = False
    pixels: bool = True

    def files(self, stem: Path) -> list[Path]:
        """The files written for a measurement called ``stem`` (any suffix of ``stem`` is replaced)."""
        path = stem.with_suffix(self.suffix)
        return [path, mask_path_for(path)] if self.needs_mask else [path]


def mask_path_for(path: Path) -> Path:
    """Where the mask of the inpainting measurement ``path`` is stored: ``<stem>_mask.png`` beside it."""
    return path.with_name(path.stem + "_mask.png")


IMAGE = MeasurementFormat("image", ".png")
MASKED_IMAGE = MeasurementFormat("masked-image", ".png", needs_mask=True)
JPEG_FILE = MeasurementFormat("jpeg", ".jpg", pixels=False)
