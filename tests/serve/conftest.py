"""Fixtures for the server tests: the tiny 16×16 model file, degraded test images, and live servers on
127.0.0.1 (uvicorn on a thread of the test process)."""
import contextlib
from pathlib import Path

import httpx
import pytest
from serve_helpers import STEPS
from tiny_model import save_tiny_model, write_test_images

from pgdm.entrypoints.cli import main as pgdm_main
from pgdm.engine import EngineConfig
from pgdm.models import load_model


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    """The tiny 16×16 grayscale ADM with random weights (tests/tiny_model.py): safetensors + JSON."""
    return save_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def clean(tmp_path_factory) -> Path:
    """Two 16×16 grayscale images."""
    return write_test_images(tmp_path_factory.mktemp("clean"), 2)


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
    from pgdm.entrypoints.serve.app import ServeConfig, create_app
    from pgdm.entrypoints.serve.server import BackgroundServer

    with contextlib.ExitStack() as stack:

        def start(steps: int = STEPS, **fields) -> BackgroundServer:
            config = ServeConfig(engine=EngineConfig(steps=steps), **fields)
            server = stack.enter_context(BackgroundServer(create_app(load_model(model_path), config)))
            for _ in range(100_000):  # warm-up runs on its own thread (a no-op for the eager backend)
                if httpx.get(f"{server.url}/readyz").status_code == 200:
                    return server
            raise AssertionError(f"the server never became ready: {httpx.get(f'{server.url}/readyz').text}")

        yield start
