"""A tiny 16×16 grayscale ADM with random weights and synthetic test images, shared by the CLI, server and
scale-out tests (files on disk, as users give them)."""
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from pgdm.models import ModelConfig

SIZE = 16


def save_tiny_model(folder: Path, nan: bool = False) -> Path:
    """ADM (32 channels, 1 res block, attention at 8×8, cosine schedule), seed 0, as safetensors + JSON config;
    ``nan``: every floating-point weight NaN."""
    cfg = ModelConfig(
        "adm",
        {"image_size": SIZE, "channels": 1, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2", "attention_resolutions": "8"},
        noise_schedule="cosine",
    )
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in cfg.build().state_dict().items()}
    if nan:
        state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    path = folder / ("nan.safetensors" if nan else "tiny.safetensors")
    save_file(state, path)
    path.with_suffix(".json").write_text(json.dumps(cfg.to_dict()))
    return path


def write_test_images(folder: Path, count: int) -> Path:
    """``count`` smooth 16×16 grayscale PNGs img0.png, img1.png, … in ``folder``."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in range(count):
        a = (127 + 100 * np.sin((xx + 3 * i) / 3.0) * np.cos(yy / (2.0 + i))).astype(np.uint8)
        Image.fromarray(a, mode="L").save(folder / f"img{i}.png")
    return folder
