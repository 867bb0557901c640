"""Measurement operators h with pseudo-inverses h† (``pgdm.ops``)."""
from .base import LinearOperator, Operator
from .blur import Blur
from .colorize import Colorize
from .compose import Compose
from .identity import Identity
from .jpeg import JPEG, quality_tables
from .quantize import LowDynamicRange, Quantize
from .inpaint import Inpaint, center_box_mask, freeform_mask, random_pixel_mask
from .noise import GaussianNoise
from .parse import check_spec, parse, spec_help
from .superres import SuperResolution

__all__ = [
    "Operator",
    "LinearOperator",
    "Identity",
    "Inpaint",
    "SuperResolution",
    "Blur",
    "Colorize",
    "JPEG",
    "quality_tables",
    "Quantize",
    "LowDynamicRange",
    "Compose",
    "GaussianNoise",
    "parse",
    "check_spec",
    "spec_help",
    "center_box_mask",
    "random_pixel_mask",
    "freeform_mask",
]
