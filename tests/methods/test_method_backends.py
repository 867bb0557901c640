"""Every method through the compiled engine on CPU (``torch.compile(fullgraph=True)`` of the whole step) against the
eager ``Restorer`` on the same plan. Float32, the analytic mixture prior on 8×8 images, 3 steps, batch 3 padded to 4.
Inductor reorders float32 arithmetic: samples agree within 1e-4 (relative L2)."""
import pytest
import torch

import pgdm.engine as E
import pgdm.methods as M
from pgdm import Restorer
from pgdm.analytic import mixture_denoiser
from pgdm.ops import SuperResolution

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", list(M.METHODS))
def test_compiled_step_matches_eager(method):
    den = mixture_denoiser((1, 8, 8))[0].float()
    op = SuperResolution(2, "bicubic")
    gen = torch.Generator().manual_seed(0)
    y = op(torch.rand(3, 1, 8, 8, generator=gen) * 2 - 1)
    eng = E.restorer(den, "compile", steps=3, method=method, batch_sizes=(4,))
    plan = eng.plan(y, op, sigma_y=[0.05, 0.0, 0.1], seed=[1, 2, 3])
    want = Restorer(den, steps=3, method=method).run_plan(plan)
    got = eng.run_plan(plan)
    assert eng.stats["compiled"] == 1
    assert float((got - want).norm() / want.norm()) < 1e-4
