"""Fixtures of the command-line tests: a tiny 16×16 model (and one with NaN weights), three clean images."""
from pathlib import Path

import pytest
from tiny_model import save_tiny_model, write_test_images


@pytest.fixture(scope="session")
def model(tmp_path_factory) -> Path:
    """A 16×16 grayscale ADM with random weights, saved as safetensors + JSON config."""
    return save_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def nan_model(tmp_path_factory) -> Path:
    """The same model with every floating-point weight NaN."""
    return save_tiny_model(tmp_path_factory.mktemp("nan_model"), nan=True)


@pytest.fixture(scope="session")
def clean(tmp_path_factory) -> Path:
    """Three 16×16 grayscale test images."""
    return write_test_images(tmp_path_factory.mktemp("clean"), 3)
