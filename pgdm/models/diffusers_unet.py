"""diffusers ``UNet2DModel`` folders (e.g. the google/ddpm-* family) as pgdm denoisers. Needs ``pgdm[diffusers]``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn

from ..denoiser import Denoiser
from ..schedules import cosine
from .files import first_sentence, read_json_object

__all__ = ["DiffusersUNet", "load_diffusers_folder"]


class DiffusersUNet(nn.Module):
    """Adapter giving a diffusers ``UNet2DModel`` pgdm's call convention; the model is ``.unet``.

    ``forward(x, t, class_labels=None)``: x: (B, C, H, W) float; t: (B,) int64 in [0, T);
    class_labels: (B,) int64 when the UNet has class embeddings. Returns the UNet's output
    (B, out_channels, H, W) in x's dtype.
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def to_precision(self, dtype: torch.dtype) -> DiffusersUNet:
        """Cast the whole UNet to ``dtype``. Returns self."""
        self.unet.to(dtype)
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(x.to(self.unet.dtype), t, class_labels=class_labels).sample.to(x.dtype)


def alphas_cumprod_from_scheduler(config: dict[str, Any]) -> torch.Tensor:
    """ᾱ table (T,) float64 from a diffusers ``scheduler_config.json`` (DDPMScheduler/DDIMScheduler keys).

    Supports ``beta_schedule`` ``"linear"``, ``"scaled_linear"``, ``"squaredcos_cap_v2"`` and
    ``trained_betas``, computed in float64 (diffusers uses float32), with the DDPMScheduler
    defaults (1000 steps, β from 1e-4 to 0.02, linear) for missing keys.
    """
    if config.get("prediction_type", "epsilon") != "epsilon":
        raise ValueError(f"pgdm needs an ε-prediction model; this scheduler has prediction_type={config['prediction_type']!r}")
    T = int(config.get("num_train_timesteps", 1000))
    start, end = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
    schedule = config.get("beta_schedule", "linear")
    if config.get("trained_betas") is not None:
        betas = torch.tensor(config["trained_betas"], dtype=torch.float64)
    elif schedule == "linear":
        betas = torch.linspace(start, end, T, dtype=torch.float64)
    elif schedule == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, T, dtype=torch.float64) ** 2
    elif schedule == "squaredcos_cap_v2":
        return cosine(T)
    else:
        raise ValueError(f"unsupported diffusers beta_schedule {schedule!r}; expected linear, scaled_linear or squaredcos_cap_v2")
    return torch.cumprod(1.0 - betas, dim=0)


def load_diffusers_folder(path: Path, *, device: torch.device | str | None, dtype: torch.dtype) -> Denoiser:
    """Load a diffusers pipeline folder (``unet/`` + ``scheduler/``) or a bare ``UNet2DModel`` folder.

    The schedule comes from ``scheduler/scheduler_config.json`` (in the folder, or beside a bare
    UNet folder); without one, DDPMScheduler's defaults apply. Weights are read by diffusers
    (safetensors, or ``.bin`` with ``torch.load(weights_only=True)``).
    """
    if (path / "unet" / "config.json").is_file():
        unet_dir, scheduler_file = path / "unet", path / "scheduler" / "scheduler_config.json"
    elif (path / "config.json").is_file():
        unet_dir, scheduler_file = path, path.parent / "scheduler" / "scheduler_config.json"
    else:
        raise ValueError(f"{path} is not a diffusers model folder: it has neither config.json nor unet/config.json")
    class_name = read_json_object(unet_dir / "config.json", "a diffusers model config").get("_class_name")
    if class_name != "UNet2DModel":
        raise ValueError(f"{unet_dir} holds a diffusers {class_name}; pgdm loads UNet2DModel folders only")
    if not any(f.name.startswith("diffusion_pytorch_model") for f in unet_dir.iterdir()):  # single, sharded or variant files
        raise ValueError(f"{unet_dir} has no weights: expected diffusion_pytorch_model.safetensors (or .bin) beside its config.json")
    try:
        from diffusers import UNet2DModel
    except ImportError as e:
        raise ImportError("loading a diffusers folder needs the diffusers package: pip install 'pgdm[diffusers]'") from e
    scheduler = read_json_object(scheduler_file, "a diffusers scheduler config") if scheduler_file.is_file() else {}
    try:
        unet = UNet2DModel.from_pretrained(unet_dir)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise ValueError(f"{unet_dir}: diffusers could not load the model ({first_sentence(str(e)) or type(e).__name__})") from None
    net = DiffusersUNet(unet).to(device).to_precision(dtype).eval().requires_grad_(False)
    cfg = unet.config
    size = cfg.sample_size
    return Denoiser(
        net,
        alphas_cumprod_from_scheduler(scheduler),
        learn_sigma=cfg.out_channels == 2 * cfg.in_channels,
        class_cond=cfg.num_class_embeds is not None,
        image_size=size if isinstance(size, int) else None,
        channels=cfg.in_channels,
    ).to(device).eval()
