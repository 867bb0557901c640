"""pgdm: Pseudoinverse-Guided Diffusion Models (Song et al., ICLR 2023) for fast image restoration."""
from . import ops, schedules
from .denoiser import Denoiser
from .models import load_model
from .methods import METHODS, pigdm_coefficients, pigdm_step
from .sampler import Restorer, SamplerSettings

__all__ = ["Denoiser", "METHODS", "Restorer", "SamplerSettings", "load_model", "pigdm_step", "pigdm_coefficients", "ops", "schedules"]
__version__ = "0.1.0"
