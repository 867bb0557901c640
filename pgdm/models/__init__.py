"""Pretrained diffusion networks: the ADM UNet, the DDPM UNet, diffusers folders, and safe loading."""
from .adm import ADMUNet, SuperResADMUNet, create_model, timestep_embedding
from .ddpm import DDPMUNet, ddpm_timestep_embedding
from .diffusers_unet import DiffusersUNet
from .loading import (
    DEFAULT_MODEL,
    EMBEDDED_MODELS,
    PHOTO_MODEL,
    check_state_dict,
    convert_checkpoint,
    infer_config,
    load_model,
    load_network,
    read_checkpoint,
)
from .files import read_safetensors
from .presets import PRESETS, ModelConfig

__all__ = [
    "ADMUNet",
    "SuperResADMUNet",
    "DDPMUNet",
    "DiffusersUNet",
    "ModelConfig",
    "PRESETS",
    "DEFAULT_MODEL",
    "EMBEDDED_MODELS",
    "PHOTO_MODEL",
    "create_model",
    "load_model",
    "load_network",
    "convert_checkpoint",
    "infer_config",
    "check_state_dict",
    "read_checkpoint",
    "read_safetensors",
    "timestep_embedding",
    "ddpm_timestep_embedding",
]
