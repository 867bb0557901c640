"""JPEG compression as a measurement: h = libjpeg's encoder up to the entropy coder, h† = libjpeg's decoder."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from ..io import write_image
from ..kernels.jpeg_codec import islow_matrices, jpeg_decode, jpeg_encode, jpeg_roundtrip, padded_size
from .base import Operator
from .formats import JPEG_FILE
from .jpeg_file import read_jpeg_coefficients

__all__ = ["JPEG", "quality_tables", "SUBSAMPLING"]

# name → (fv, fh): how many rows × columns of chroma samples are averaged into one.
SUBSAMPLING: dict[str, tuple[int, int]] = {"444": (1, 1), "422": (1, 2), "420": (2, 2)}

# ITU-T T.81 Annex K tables (libjpeg's std_luminance_quant_tbl / std_chrominance_quant_tbl), natural order.
_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)
_CHROMA = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
           47, 66, 99, 99, 99, 99, 99, 99) + (99,) * 32


def quality_tables(quality: int) -> torch.Tensor:
    """(2, 8, 8) int32 luma and chroma tables for an IJG quality 1..100, as libjpeg's ``jpeg_set_quality``
    with ``force_baseline`` (Pillow's ``quality=``): scale 5000/q below 50, 200 − 2q above; entries
    ⌊(t·scale + 50)/100⌋ clamped to 1..255."""
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be an integer in 1..100, got {quality!r}")
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    base = torch.tensor([_LUMA, _CHROMA], dtype=torch.int64)
    return ((base * scale + 50) // 100).clamp(1, 255).to(torch.int32).view(2, 8, 8)


class JPEG(Operator):
    """h(x) = the quantised DCT coefficients of baseline JPEG, h†(y) = the JPEG decoder; bit-exact with
    libjpeg(-turbo) and hence Pillow (ΠGDM Sec. 3.2: the decoder leaves quantised values unchanged).

    h: [-1, 1] → 8-bit pixels (round half up, clamp), RGB → YCbCr (JFIF), chroma averaged 2×2 (4:2:0),
    2×1 (4:2:2) or not at all (4:4:4), edges replicated to whole blocks, level shift, 8×8 integer DCT
    (ISLOW), division by the table and rounding. h†: dequantise, integer IDCT, range limit, triangular
    "fancy" chroma upsampling, YCbCr → RGB, round and clamp, back to [-1, 1]. Grayscale (C = 1) skips the
    colour steps. Since every step is libjpeg's integer arithmetic, h†(h(x)) equals Pillow's save+load and
    h†(y) of a file's coefficients equals Pillow's decode of that file, pixel for pixel.

    Shapes: x: (B, C, H, W) float in [-1, 1], C = 3 or 1. y: (B, C, Hp, Wp) float32 integers, Hp × Wp the
    image rounded up to whole MCUs (16 × 16 for 4:2:0); coefficient (u, v) of block (i, j) of channel c at
    y[b, c, 8·sv·i + u, 8·sh·j + v], (sv, sh) the channel's subsampling, every other entry 0 (see
    ``pgdm.kernels.jpeg_codec``). h† returns the image size ``size``; without it the image must be whole
    MCUs and h† returns y's size.

    h(h†(y)) = y is exact for every y that h produces whenever re-encoding the decoded pixels reproduces
    the coefficients; JPEG is not exactly idempotent in general (pixel rounding, clamping and fancy
    upsampling move a few coefficients), see docs/jpeg.md.
    Non-linear: ``linear = False``, so the sampler rejects σ_y > 0.

    Example:
        >>> op = JPEG(quality=10)
        >>> x = torch.rand(2, 3, 32, 32) * 2 - 1
        >>> y = op(x)                       # (2, 3, 32, 32) quantised coefficients
        >>> x_jpeg = op.pinv(y)             # the decoded JPEG, == Pillow's save+load at quality 10
        >>> torch.equal(op.project(x), x_jpeg)
        True
    """

    linear = False
    keyed_by_content = True
    family = "jpeg"
    measurement_format = JPEG_FILE

    def __init__(
        self,
        quality: int | None = None,
        *,
        tables: torch.Tensor | Sequence | None = None,
        subsampling: str = "420",
        grayscale: bool = False,
        size: tuple[int, int] | None = None,
    ) -> None:
        """quality: IJG quality 1..100 (standard tables), or tables: (1|2|3, 8, 8) integers 1..255 in
        natural order — 1 table for grayscale, 2 (luma, chroma) or 3 (Y, Cb, Cr) for colour.
        subsampling: "420", "422" or "444" (ignored for grayscale). size: (H, W) of the images, when they are
        not whole MCUs."""
        super().__init__()
        if (quality is None) == (tables is None):
            raise ValueError("JPEG needs exactly one of quality= or tables=")
        if subsampling not in SUBSAMPLING:
            raise ValueError(f"JPEG subsampling must be one of {', '.join(SUBSAMPLING)}, got {subsampling!r}")
        self.quality = quality
        self.channels = 1 if grayscale else 3
        self.chroma = (1, 1) if grayscale else SUBSAMPLING[subsampling]
        self.subsampling = "gray" if grayscale else subsampling
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"JPEG size must be (H, W) with positive sides, got {size!r}")
        self.size = None if size is None else (int(size[0]), int(size[1]))
        standard = None if quality is None else quality_tables(quality)[: 1 if grayscale else 2]
        self.register_buffer("qtables", self._per_channel(standard if tables is None else tables))
        self.register_buffer("dct", islow_matrices(), persistent=False)  # kernel constants, kept on the device

    def _per_channel(self, tables: torch.Tensor | Sequence) -> torch.Tensor:
        t = torch.as_tensor(tables)
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3 or t.shape[1:] != (8, 8) or t.shape[0] not in (1, 2, 3):
            raise ValueError(f"JPEG tables must have shape (1|2|3, 8, 8), got {tuple(t.shape)}")
        if self.channels == 1 and t.shape[0] != 1 or self.channels == 3 and t.shape[0] == 1:
            raise ValueError(f"JPEG with {self.channels} channel(s) needs {'1 table' if self.channels == 1 else '2 or 3 tables'}, got {t.shape[0]}")
        if t.is_floating_point() and not torch.equal(t, t.round()) or t.min() < 1 or t.max() > 255:
            raise ValueError("JPEG tables must hold integers in 1..255")
        return t[[0, 1, 1] if t.shape[0] == 2 else list(range(t.shape[0]))].to(torch.int32).contiguous()

    def update_tables(self, tables: torch.Tensor | Sequence) -> None:
        """Copy new tables into the buffer in place (captured CUDA graphs stay valid)."""
        self.qtables.copy_(self._per_channel(tables))
        self.quality = None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> tuple["JPEG", torch.Tensor]:
        """The operator of a real JPEG file (its own tables, subsampling and size) and its measurement: the
        file's quantised coefficients y: (1, C, Hp, Wp), read losslessly with jpeglib. Then ``op.pinv(y)``
        is the file as libjpeg/Pillow decode it. Raises ``ValueError("<file>: <problem>")`` for corrupt,
        truncated, arithmetic-coded, lossless, CMYK, 12-bit or otherwise unsupported files."""
        data = read_jpeg_coefficients(path)
        gray = len(data.coefficients) == 1
        subsampling = next(k for k, v in SUBSAMPLING.items() if v == data.chroma)
        op = cls(tables=torch.from_numpy(data.qtables.astype("int64")), subsampling=subsampling, grayscale=gray, size=data.size)
        hp, wp = padded_size(*data.size, op.chroma)
        y = torch.zeros(1, op.channels, hp, wp)
        for c, coef in enumerate(data.coefficients):
            sv, sh = (1, 1) if c == 0 else op.chroma
            nbh, nbw = coef.shape[:2]
            cells = torch.zeros(nbh, 8 * sv, nbw, 8 * sh)
            cells[:, :8, :, :8] = torch.from_numpy(coef.astype("float32")).permute(0, 2, 1, 3)  # (i, u, j, v)
            y[0, c, : 8 * sv * nbh, : 8 * sh * nbw] = cells.reshape(8 * sv * nbh, 8 * sh * nbw)
        return op, y

    def to_file(self, x: torch.Tensor, path: str | os.PathLike) -> Path:
        """Save the image x: (1, C, H, W) or (C, H, W) in [-1, 1] as a JPEG file with this operator's tables and
        chroma subsampling (Pillow, i.e. libjpeg), so the file's coefficients are exactly ``self(x)``."""
        if self.channels == 3 and not torch.equal(self.qtables[1], self.qtables[2]):
            raise ValueError(f"{self.spec}: separate Cb and Cr tables cannot be written with Pillow")
        tables = [t.flatten().tolist() for t in self.qtables[: 1 if self.channels == 1 else 2]]
        subsampling = {"444": 0, "422": 1, "420": 2, "gray": 0}[self.subsampling]
        return write_image(x[0] if x.ndim == 4 else x, Path(path), format="JPEG", qtables=tables, subsampling=subsampling)

    def measurement_view(self, y: torch.Tensor) -> torch.Tensor:
        """The coefficients decoded, as a viewer shows the file."""
        return self.pinv(y)

    @property
    def spec(self) -> str:
        if self.quality is None:
            return "jpeg-custom"
        suffix = "" if self.subsampling in ("420", "gray") else f"-{self.subsampling}"
        return f"jpeg{self.quality}{suffix}"

    def _image_size(self, height: int, width: int) -> tuple[int, int]:
        return self.size if self.size is not None else (height, width)

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"{self.spec}: expected images (B, {self.channels}, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{self.spec}: expected a floating-point image in [-1, 1], got {x.dtype}")
        h, w = x.shape[-2:]
        if self.size is not None and (h, w) != self.size:
            raise ValueError(f"{self.spec}: built for {self.size[0]}×{self.size[1]} images, got {h}×{w}")
        if self.size is None and padded_size(h, w, self.chroma) != (h, w):
            mv, mh = 8 * self.chroma[0], 8 * self.chroma[1]
            raise ValueError(f"{self.spec}: {h}×{w} is not a multiple of the {mv}×{mh} MCU; pass size=({h}, {w})")
        if self.chroma[1] == 2 and w < 5:
            raise ValueError(f"{self.spec}: horizontal chroma subsampling needs width ≥ 5, got {w}")

    def check_measurement(self, y: torch.Tensor) -> None:
        if y.ndim != 4 or y.shape[1] != self.channels:
            raise ValueError(f"{self.spec}: expected coefficients (B, {self.channels}, Hp, Wp), got {tuple(y.shape)}")
        h, w = self._image_size(*y.shape[-2:])
        if padded_size(h, w, self.chroma) != tuple(y.shape[-2:]):
            raise ValueError(f"{self.spec}: coefficients of shape {tuple(y.shape)} do not fit {h}×{w} images")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = h(x): (B, C, H, W) in [-1, 1] → (B, C, Hp, Wp) float32 quantised coefficients."""
        self.check_input(x)
        return jpeg_encode(x, self.qtables, self.dct, self.chroma)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """h†(y): coefficients (B, C, Hp, Wp) → the decoded image (B, C, H, W) float32 in [-1, 1]."""
        self.check_measurement(y)
        return jpeg_decode(y, self.qtables, self.dct, self.chroma, self._image_size(*y.shape[-2:]))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """h†(h(x)) in one pass (one kernel launch on CUDA): (B, C, H, W) → (B, C, H, W) in x's dtype."""
        self.check_input(x)
        return jpeg_roundtrip(x, self.qtables, self.dct, self.chroma)
