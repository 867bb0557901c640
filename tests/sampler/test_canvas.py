"""The canvas denoiser (pgdm.canvas): exactness against the fixed-size path, the blend against references
computed another way, the VJP through the blend, shifts, memory-bounding chunks and edges."""
import functools

import pytest
import torch

import pgdm
from pgdm import Denoiser, schedules
from pgdm.canvas import CanvasDenoiser, CanvasGrid, blend_window, canvas_denoiser, size_multiple
from pgdm.models import ModelConfig
from pgdm.ops import Inpaint, random_pixel_mask
from pgdm.sampler import Restorer, SamplerSettings, plan_sampling, run_eager
from test_helpers import dense

SIZE = 16


@pytest.fixture(scope="module")
def tiny():
    """A 16×16 grayscale ADM with random weights (2 levels: sizes must be even)."""
    cfg = ModelConfig(
        "adm",
        {"image_size": SIZE, "channels": 1, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2", "attention_resolutions": "8"},
        noise_schedule="cosine",
    )
    torch.manual_seed(0)
    return Denoiser(cfg.build().eval(), schedules.cosine(1000), channels=1, image_size=SIZE)


class Pointwise(torch.nn.Module):
    """ε = a(t)·x: no spatial context, so every tile predicts what the whole canvas does."""

    def forward(self, x, t):
        return (0.5 + t.view(-1, 1, 1, 1) / 2000) * x


class LinearConv(torch.nn.Module):
    """A fixed random 5×5 convolution: ε linear in x, so the canvas ε is a matrix."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 5, padding=2, bias=False)
        torch.nn.init.normal_(self.conv.weight, std=0.2)

    def forward(self, x, t):
        return self.conv(x)


def mosaic(x, rows, cols):
    """(rows·cols, C, h, w) → (1, C, rows·h, cols·w), images in row-major order."""
    n, c, h, w = x.shape
    return x.view(rows, cols, c, h, w).permute(2, 0, 3, 1, 4).reshape(1, c, rows * h, cols * w)


def test_size_multiple_counts_downsamplings(tiny):
    assert size_multiple(tiny.net) == 2
    assert size_multiple(pgdm.load_model("default").net) == 4
    assert size_multiple(Pointwise()) == 1


def test_window_is_a_partition_of_unity_over_the_overlap():
    w = blend_window(16, 6, torch.float64)
    assert torch.allclose(w[10:] + w[:6], torch.ones(6, dtype=torch.float64))  # tile k's tail + tile k+1's head
    assert bool((w > 0).all()) and torch.equal(blend_window(8, 0), torch.ones(8))


def test_grid_covers_the_canvas_at_every_offset():
    for size, tile, overlap in [(37, 16, 4), (64, 32, 0), (100, 32, 8), (10, 16, 4), (17, 16, 15)]:
        g = CanvasGrid.build(size, tile, overlap, shift=True)
        if size <= tile:
            assert (g.count, g.shift, g.lead) == (1, 1, (tile - size) // 2)
        else:  # at every start in [lead, lead + shift) the canvas keeps ≥ overlap pixels of context on both sides
            assert g.lead >= overlap and g.lead + g.shift - 1 + size + overlap <= g.padded


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("size, tile, overlap", [(37, 16, 4), (64, 32, 0), (96, 32, 0), (100, 32, 8), (17, 16, 15), (450, 32, 4), (33, 32, 8)])
def test_clamped_grid_stays_inside_and_covers_the_canvas_at_every_offset(size, tile, overlap, shift):
    g = CanvasGrid.build(size, tile, overlap, shift, clamped=True)
    assert g.clamped and g.padded == size and g.lead == 0 and g.shift == (tile - overlap if shift else 1)
    for offset in range(g.shift):
        starts = [min(max(k * g.stride - offset, 0), size - tile) for k in range(g.count)]
        assert starts[0] == 0 and starts[-1] == size - tile  # the outer tiles end on the canvas edges
        covered = torch.zeros(size, dtype=torch.bool)
        for a in starts:
            covered[a : a + tile] = True
        assert bool(covered.all())
        for k in range(g.count - g.groups):  # tiles one class apart never overlap: the blend adds a class at once
            assert starts[k + g.groups] - starts[k] >= tile, (offset, starts, g.groups)


@pytest.mark.parametrize("shift", [False, True])
def test_clamped_tiles_blend_as_a_direct_sum_over_the_tiles(shift):
    """ε of a 21×30 canvas with tiles of 8 inside it, against the sum over its tiles written out in float64."""
    net = LinearConv().double()
    den = CanvasDenoiser(Denoiser(net, schedules.linear(1000), channels=1, image_size=8), "tiles", overlap=3, shift=shift, max_rows=5)
    x = torch.randn(2, 1, 21, 30, dtype=torch.float64)
    for step in (0, 417, 999):
        t = torch.tensor([step, step])
        gh, gw = den.grids(21, 30)
        oy, ox = (int(den._offset_no_sync(t, g, axis)) for axis, g in enumerate((gh, gw)))
        num, weight = torch.zeros_like(x), torch.zeros(21, 30, dtype=torch.float64)
        w1 = den.window_1d.double()  # the float32 buffer: sin² rounded once
        window = w1[:, None] * w1[None, :]
        for i in range(gh.count):
            for j in range(gw.count):
                a, b = min(max(i * 5 - oy, 0), 13), min(max(j * 5 - ox, 0), 22)
                num[..., a : a + 8, b : b + 8] += net(x[..., a : a + 8, b : b + 8], t) * window
                weight[a : a + 8, b : b + 8] += window
        with torch.no_grad():
            assert torch.allclose(den(x, t), num / weight, atol=1e-12, rtol=0)


@pytest.mark.parametrize("strategy, edges", [("tiles", "inside"), ("tiles", "reflect"), ("whole", "inside")])
@pytest.mark.parametrize("shape", [(37, 53), (16, 40), (7, 5), (1, 1)])
def test_pointwise_network_gives_the_same_eps_and_vjp_on_any_canvas(strategy, edges, shape):
    den = CanvasDenoiser(Denoiser(Pointwise(), schedules.linear(1000), channels=1, image_size=SIZE), strategy, overlap=5, max_rows=3, edges=edges)
    x = torch.randn(2, 1, *shape, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([300, 300])
    eps = den(x, t)
    assert torch.allclose(eps, Pointwise()(x, t), atol=1e-12, rtol=0)  # normalised blend of equal predictions, reflected edges cropped
    v = torch.randn_like(eps)
    (g,) = torch.autograd.grad(eps, x, v)  # through the recomputed calls (9+ tiles per image, 3 per call)
    assert torch.allclose(g, Pointwise()(v, t), atol=1e-12, rtol=0)


def graph_nodes(out: torch.Tensor) -> set[str]:
    """Names of the autograd nodes behind ``out``."""
    seen, todo = {}, [out.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and id(node) not in seen:
            seen[id(node)] = type(node).__name__
            todo += [f for f, _ in node.next_functions]
    return set(seen.values())


@pytest.mark.parametrize("frozen", [True, False])
@pytest.mark.parametrize("shift", [False, True])
def test_vjp_through_the_blend_is_the_transpose_of_the_tiled_map(shift, frozen):
    """Through the network calls recomputed in the backward pass (_RecomputedBlocks); trainable weights get the
    gradient the tape gives when all tiles go through one call."""
    net = LinearConv().double().requires_grad_(not frozen)
    den = CanvasDenoiser(Denoiser(net, schedules.linear(1000), channels=1, image_size=8), "tiles", overlap=3, shift=shift, max_rows=4)
    t = torch.tensor([123])
    with torch.no_grad():
        A = dense(lambda x: den(x, t), (1, 13, 19))  # the tiled ε as a matrix, column by column
    x = torch.randn(1, 1, 13, 19, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 1, 13, 19, dtype=torch.float64)
    eps = den(x, t)
    assert "_RecomputedBlocksBackward" in graph_nodes(eps)
    weights = [p for p in net.parameters() if p.requires_grad]
    g = torch.autograd.grad(eps, [x, *weights], v)
    assert torch.allclose(g[0].flatten(), A.T @ v.flatten(), atol=1e-12)
    if not frozen:
        one_call = CanvasDenoiser(Denoiser(net, schedules.linear(1000), channels=1, image_size=8), "tiles", overlap=3, shift=shift, max_rows=100)
        g_ref = torch.autograd.grad(one_call(x, t), weights, v)
        assert len(g) == 2 and bool(g[1].abs().sum() > 0) and torch.allclose(g[1], g_ref[0], atol=1e-12)


@pytest.mark.parametrize("edges", ["inside", "reflect", "circular"])
@pytest.mark.parametrize("height", [13, 6])  # a side longer and one shorter than the tile
def test_tape_free_vjp_is_the_tapes_vjp_and_the_transpose_of_the_tiled_map(edges, height):
    """eps_with_vjp of a canvas of several network calls, as the guided steps take it under no_grad: ε with no
    tape and the VJP by network calls run again. It equals the dense transpose and, value for value, the VJP the
    tape takes through the same calls (_RecomputedBlocks)."""
    net = LinearConv().double().requires_grad_(False)
    den = CanvasDenoiser(Denoiser(net, schedules.linear(1000), channels=1, image_size=8), "tiles", overlap=3, max_rows=4, edges=edges)
    t = torch.tensor([123, 123])
    x = torch.randn(2, 1, height, 19, dtype=torch.float64)
    v = torch.randn(2, 1, height, 19, dtype=torch.float64)
    with torch.no_grad():
        A = dense(lambda z: den(z, t[:1]), (1, height, 19))
        eps, vjp = den.eps_with_vjp(x, t)
        got = vjp(v)
    assert isinstance(vjp, functools.partial) and not eps.requires_grad and eps.grad_fn is None  # the tape-free path
    x_tape = x.clone().requires_grad_()
    eps_tape = den(x_tape, t)
    assert "_RecomputedBlocksBackward" in graph_nodes(eps_tape)
    (want,) = torch.autograd.grad(eps_tape, x_tape, v)
    assert torch.equal(eps, eps_tape.detach()) and torch.equal(got, want)
    assert torch.allclose(got[0].flatten(), A.T @ v[0].flatten(), atol=1e-12)


def test_grid_shift_is_a_pure_function_of_seed_and_timestep():
    den = CanvasDenoiser(Denoiser(LinearConv(), schedules.linear(1000), channels=1, image_size=8), "tiles", overlap=2, max_rows=5)
    x = torch.randn(3, 1, 20, 30)
    t = torch.tensor([400] * 3)
    with torch.no_grad():
        a, b = den(x, t), den(x, t)
        one = den(x[1:2], t[:1])  # an image gets its ε whatever else is in the batch
    assert torch.equal(a, b) and torch.allclose(a[1:2], one, atol=1e-6)
    gh, _ = den.grids(20, 30)
    offsets = {int(den._offset_no_sync(torch.tensor([s]), gh, 0)) for s in range(0, 1000, 37)}
    assert offsets == set(range(6)) and gh.shift == 6  # every offset in [0, stride) is drawn
    other = CanvasDenoiser(Denoiser(LinearConv(), schedules.linear(1000), channels=1, image_size=8), "tiles", overlap=2, seed=1)
    assert [int(other._offset_no_sync(torch.tensor([s]), gh, 0)) for s in range(8)] != [int(den._offset_no_sync(torch.tensor([s]), gh, 0)) for s in range(8)]


def test_model_sized_canvas_restores_bitwise_as_the_fixed_size_path():
    den = pgdm.load_model("default")
    op = pgdm.ops.parse("sr4", (1, 32, 32))
    y = op(torch.rand(2, 1, 32, 32) * 2 - 1)
    fixed = Restorer(den, steps=3, strategy=None).restore(y, op, seed=4)
    for strategy in ("auto", "tiles", "whole"):
        assert torch.equal(Restorer(den, steps=3, strategy=strategy).restore(y, op, seed=4), fixed)


@pytest.mark.parametrize("method", ["pigdm", "ddnm"])
def test_mosaic_with_tiles_on_its_images_restores_bitwise_as_the_images(tiny, method):
    """A 2×3 mosaic of 16×16 images, tiles of 16 with no overlap and no shift: each tile is one image, so the
    canvas restore is the per-image restore, bit for bit (η = 0: no noise beyond the initial draw, which the
    canvas takes from the per-image plan)."""
    x = torch.rand(6, 1, SIZE, SIZE) * 2 - 1
    masks = random_pixel_mask(SIZE, SIZE, 0.6, seed=3, batch=6)
    op, op_c = Inpaint(masks), Inpaint(mosaic(masks, 2, 3))
    settings = SamplerSettings(method, steps=4, options={"eta": 0.0})
    plan = plan_sampling(tiny, op(x), op, settings, seed=0)
    canvas = CanvasDenoiser(tiny, "tiles", overlap=0, shift=False, max_rows=6)
    plan_c = plan_sampling(canvas, op_c(mosaic(x, 2, 3)), op_c, settings, seed=0)
    plan_c.x_init = mosaic(plan.x_init, 2, 3)
    assert torch.equal(run_eager(canvas, plan_c), mosaic(run_eager(tiny, plan), 2, 3))


def test_restorer_takes_any_size_and_every_strategy(tiny):
    op = pgdm.ops.parse("sr2+inpaint-center", (1, 24, 40))
    y = op(torch.rand(1, 1, 24, 40) * 2 - 1)
    for strategy in ("tiles", "whole"):
        x = Restorer(tiny, steps=2, strategy=strategy, overlap=4).restore(y, op, seed=0)
        assert x.shape == (1, 1, 24, 40) and bool(x.isfinite().all())
    with pytest.raises(ValueError, match="sr2-pool: built for 24×40 images, got 16×16"):
        Restorer(tiny, steps=2, strategy=None).restore(y, op)


def test_inference_mode_and_functorch_vjp_run_the_tiles(tiny):
    """The engine's compiled path differentiates with torch.func.vjp; the calls are not recomputed there."""
    den = CanvasDenoiser(tiny, overlap=4, max_rows=2)
    x = torch.randn(1, 1, 20, 28)
    t = torch.tensor([500])
    eps, vjp = torch.func.vjp(lambda z: den(z, t), x)
    with torch.enable_grad():
        xg = x.clone().requires_grad_()
        (g_ref,) = torch.autograd.grad(den(xg, t), xg, torch.ones_like(x))
    assert torch.allclose(vjp(torch.ones_like(x))[0], g_ref, atol=1e-5)
    with torch.inference_mode():
        assert torch.allclose(den(x, t), eps, atol=1e-6)


def test_bad_canvas_settings_are_one_line_errors(tiny):
    with pytest.raises(ValueError, match="unknown canvas strategy 'strips'"):
        CanvasDenoiser(tiny, "strips")
    with pytest.raises(ValueError, match="overlap must be in"):
        CanvasDenoiser(tiny, overlap=16)
    with pytest.raises(ValueError, match="tile 15 is not a multiple of 2"):
        CanvasDenoiser(tiny, tile=15)
    with pytest.raises(ValueError, match="already a CanvasDenoiser"):
        CanvasDenoiser(CanvasDenoiser(tiny))
    any_size = Denoiser(Pointwise(), schedules.linear(1000), channels=1)
    with pytest.raises(ValueError, match="needs a tile size"):
        CanvasDenoiser(any_size, "tiles")
    assert canvas_denoiser(any_size) is any_size and canvas_denoiser(tiny, None) is tiny
    with pytest.raises(ValueError, match="tile/overlap given with strategy=None"):
        canvas_denoiser(tiny, None, overlap=4)
    with pytest.raises(ValueError, match="tile/overlap given with a CanvasDenoiser"):
        Restorer(CanvasDenoiser(tiny), tile=16)
