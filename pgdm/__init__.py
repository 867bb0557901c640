"""pgdm: Pseudoinverse-Guided Diffusion Models (Song et al., ICLR 2023) for fast image restoration.

``import pgdm`` loads the algorithm only (operators, methods, sampler, models); the fast path
(``pgdm.engine``, ``pgdm.export``) and the entry points (``pgdm.entrypoints``) load on first use.
"""
import importlib

from . import ops, schedules
from .denoiser import Denoiser
from .methods import METHODS, pigdm_coefficients, pigdm_step
from .models import load_model
from .sampler import Restorer, SamplerSettings

__all__ = ["Denoiser", "METHODS", "Restorer", "SamplerSettings", "load_model", "pigdm_step", "pigdm_coefficients", "ops", "schedules"]
__version__ = "0.1.0"

_LAZY_SUBPACKAGES = ("engine", "export", "kernels", "entrypoints")


def __getattr__(name: str):
    if name in _LAZY_SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'pgdm' has no attribute {name!r}")
