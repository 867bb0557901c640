"""Fixtures for the server tests: a tiny random-weight 16×16 grayscale model file, degraded test images,
and live servers on 127.0.0.1 (uvicorn on a thread of the test process)."""
import contextlib
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from pgdm.cli import main as pgdm_main
from pgdm.engine import EngineConfig
from pgdm.models import ModelConfig, load_model

SIZE = 16
STEPS = 4


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    """ADM (32 channels, 1 res block, attention at 8×8, cosine schedule) with random weights: safetensors + JSON."""
    cfg = ModelConfig(
        "adm",
        {"image_size": SIZE, "channels": 1, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2", "attention_resolutions": "8"},
        noise_schedule="cosine",
    )
    torch.manual_seed(0)
    net = cfg.build()
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    path.with_suffix(".json").write_text(json.dumps(cfg.to_dict()))
    return path


@pytest.fixture(scope="session")
def clean(tmp_path_factory) -> Path:
    """Two 16×16 grayscale images."""
    folder = tmp_path_factory.mktemp("clean")
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in range(2):
        a = (127 + 100 * np.sin((xx + 3 * i) / 3.0) * np.cos(yy / (2.0 + i))).astype(np.uint8)
        Image.fromarray(a, mode="L").save(folder / f"img{i}.png")
    return folder


@pytest.fixture(scope="session")
def degraded(clean, tmp_path_factory):
    """task → folder of measurements written by `pgdm degrade` (noisy denoising at σ_y = 0.05)."""

    def make(task: str, *extra: str) -> Path:
        out = tmp_path_factory.mktemp(task.replace("+", "_"))
        assert pgdm_main(["degrade", task, str(clean), "-o", str(out), "--gray", *extra]) == 0
        return out

    return {"sr2": make("sr2"), "jpeg20": make("jpeg20"), "inpaint-center": make("inpaint-center"), "denoise": make("denoise", "--sigma-y", "0.05")}


@pytest.fixture
def start_server(model_path):
    """start_server(**ServeConfig fields) → a running BackgroundServer on a free port, stopped after the test."""
    from pgdm.serve.app import ServeConfig, create_app
    from pgdm.serve.server import BackgroundServer

    with contextlib.ExitStack() as stack:

        def start(steps: int = STEPS, **fields) -> BackgroundServer:
            config = ServeConfig(engine=EngineConfig(steps=steps), **fields)
            server = stack.enter_context(BackgroundServer(create_app(load_model(model_path), config)))
            for _ in range(100_000):  # warm-up runs on its own thread (a no-op for the eager backend)
                if httpx.get(f"{server.url}/readyz").status_code == 200:
                    return server
            raise AssertionError(f"the server never became ready: {httpx.get(f'{server.url}/readyz').text}")

        yield start


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == (f"{name}{{{want}}}" if want else name):
            return float(value)
    return 0.0
