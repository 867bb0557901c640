"""Shared test setup. Without CUDA, Triton kernels run in Triton's CPU interpreter: TRITON_INTERPRET must be
set before any test module imports pgdm (and with it triton), so it is set here, in the root conftest."""
import os
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
