"""pgdm.engine runs a CanvasDenoiser like any denoiser: images of any size, the same numbers as pgdm.Restorer."""
import pytest
import torch

import pgdm
import pgdm.engine as E
from engine_helpers import float64_copy
from pgdm.canvas import CanvasDenoiser
from pgdm.sampler import SamplerSettings, plan_sampling, run_eager


def test_eager_engine_restores_a_canvas_bitwise_as_the_restorer(den):
    canvas = CanvasDenoiser(den, overlap=4, max_rows=8)  # 24×40: 2×3 tiles per step, shifted, in chunks of 8
    op = pgdm.ops.parse("sr2+inpaint-center", (1, 24, 40))
    y = op(torch.rand(2, 1, 24, 40, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    ref = pgdm.Restorer(canvas, steps=3).restore(y, op, seed=5)
    out = E.Engine(canvas, E.EngineConfig(backend="eager", steps=3)).restore(y, op, seed=5)
    assert out.shape == (2, 1, 24, 40) and torch.equal(out, ref)


@pytest.mark.slow
def test_compiled_engine_restores_a_non_square_canvas_as_the_eager_engine(den):
    """The compiled step of a tiled 24×40 canvas (shifted grid hashed from t on the device, network calls of 8 rows):
    within 4× the eager float32 engine's error against a float64 run of the same plan."""
    canvas = CanvasDenoiser(den, "tiles", overlap=4, max_rows=8)
    op = pgdm.ops.parse("sr2", (1, 24, 40))
    y = op(torch.rand(2, 1, 24, 40, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    compiled = E.restorer(canvas, "compile", steps=3, batch_sizes=(2,))
    plan = compiled.plan(y, op, seed=5)
    canvas64 = float64_copy(canvas)
    ref64 = run_eager(canvas64, plan_sampling(canvas64, y.double(), op, SamplerSettings(steps=3), seed=5, dtype=torch.float64))
    rel = lambda x: float((x.double() - ref64).norm() / ref64.norm())  # noqa: E731
    eager = E.restorer(canvas, "eager", steps=3)
    err_eager, err_compiled = rel(eager.run_plan(eager.plan(y, op, seed=5))), rel(compiled.run_plan(plan))
    assert compiled.stats["compiled"] == 1, compiled.stats
    assert err_compiled <= 4 * err_eager + 1e-6, (err_compiled, err_eager)
