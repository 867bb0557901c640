"""pgdm.engine runs a CanvasDenoiser like any denoiser: images of any size, the same numbers as pgdm.Restorer."""
import torch

import pgdm
import pgdm.engine as E
from pgdm.canvas import CanvasDenoiser


def test_eager_engine_restores_a_canvas_bitwise_as_the_restorer(den):
    canvas = CanvasDenoiser(den, overlap=4, max_rows=8)  # 24×40: 2×3 tiles per step, shifted, in chunks of 8
    op = pgdm.ops.parse("sr2+inpaint-center", (1, 24, 40))
    y = op(torch.rand(2, 1, 24, 40, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    ref = pgdm.Restorer(canvas, steps=3).restore(y, op, seed=5)
    out = E.Engine(canvas, E.EngineConfig(backend="eager", steps=3)).restore(y, op, seed=5)
    assert out.shape == (2, 1, 24, 40) and torch.equal(out, ref)
