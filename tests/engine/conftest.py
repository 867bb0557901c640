"""Fixtures for the engine tests."""
import pytest
import torch

from engine_helpers import tiny_denoiser


@pytest.fixture(scope="module")
def den():
    return tiny_denoiser()


@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(1)
    return torch.rand(3, 1, 16, 16, generator=gen) * 2 - 1
