"""Memory of a tiled restore in canvas units: what a step keeps alive, counted from the allocator's events (the
torch profiler's memory records), not timed. The network is one convolution, so the canvas-sized tensors are all
that is counted."""
import json

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import pgdm
from pgdm import Denoiser, schedules
from pgdm.canvas import CanvasDenoiser


class OneConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x, t):
        return torch.tanh(self.conv(x))


def peak_allocated(fn, tmp_path) -> int:
    """The largest number of bytes the CPU allocator held at once while ``fn()`` ran."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    trace = tmp_path / "trace.json"
    prof.export_chrome_trace(str(trace))
    events = json.loads(trace.read_text())["traceEvents"]
    return max(e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]")


@pytest.mark.parametrize("method", ["pigdm", "ddrm"])
def test_a_tiled_restore_holds_a_fixed_number_of_canvases(method, tmp_path):
    """A 768×1024 canvas (three chunks of the noise draw; 1452 tiles of 32², 64 per network call), 2 steps of SR×4:
    at the peak the allocator holds at most 12.5 canvas-sized float32 tensors (ΠGDM 10.1, DDRM 11.7) whatever the
    canvas (hashing the whole canvas's noise at once, rather than in chunks, would take 16 at the draw)."""
    torch.manual_seed(0)
    den = CanvasDenoiser(Denoiser(OneConv().requires_grad_(False), schedules.linear(1000), channels=1, image_size=32), max_rows=64)
    shape = (1, 768, 1024)
    op = pgdm.ops.parse("sr4", shape)
    y = op(torch.rand(1, *shape) * 2 - 1)
    restorer = pgdm.Restorer(den, steps=2, method=method)
    canvases = peak_allocated(lambda: restorer.restore(y, op, seed=0), tmp_path) / (768 * 1024 * 4)
    assert canvases <= 12.5, f"{method}: {canvases:.2f} canvases at the peak"
