"""Shared test setup. Without CUDA, Triton kernels run in Triton's CPU interpreter: TRITON_INTERPRET must be
set before any test module imports pgdm (and with it triton), so it is set here, in the root conftest."""
import os
import sys
import tempfile

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(__file__))
# pgdm.engine's "auto" settings: no measuring unless a test asks for it (eager fp32, Restorer's numbers), and no
# choices read from or written to the user's cache
os.environ.setdefault("PGDM_AUTOTUNE_BUDGET_S", "0")
os.environ.setdefault("PGDM_CACHE_DIR", tempfile.mkdtemp(prefix="pgdm-test-cache-"))
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
