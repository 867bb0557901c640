"""pgdm: Pseudoinverse-Guided Diffusion Models (Song et al., ICLR 2023) for fast image restoration."""
from . import ops, schedules
from .denoiser import Denoiser

__all__ = ["Denoiser", "ops", "schedules"]
__version__ = "0.1.0"
