"""Fixtures of the command-line tests: a tiny 16×16 model (and one with NaN weights), three clean images."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import SIZE
from PIL import Image
from safetensors.torch import save_file

from pgdm.models import ModelConfig


def _save_model(folder: Path, nan: bool = False) -> Path:
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


@pytest.fixture(scope="session")
def model(tmp_path_factory) -> Path:
    """A 16×16 grayscale ADM with random weights, saved as safetensors + JSON config."""
    return _save_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def nan_model(tmp_path_factory) -> Path:
    """The same model with every floating-point weight NaN."""
    return _save_model(tmp_path_factory.mktemp("nan_model"), nan=True)


@pytest.fixture(scope="session")
def clean(tmp_path_factory) -> Path:
    """Three 16×16 grayscale test images."""
    folder = tmp_path_factory.mktemp("clean")
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in range(3):
        a = (127 + 100 * np.sin((xx + 3 * i) / 3.0) * np.cos(yy / (2.0 + i))).astype(np.uint8)
        Image.fromarray(a, mode="L").save(folder / f"img{i}.png")
    return folder
