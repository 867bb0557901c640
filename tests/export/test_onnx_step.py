"""The ΠGDM step exported to ONNX and run in ONNX Runtime, against PyTorch.

The backward decompositions are checked against autograd in float64. Whole restores through ONNX
Runtime are compared, like the engine's compiled step, with a float64 PyTorch run of the same plan:
their relative L2 error must stay within 4× the eager float32 ``Restorer``'s own (random weights amplify
float32 reordering near t = 999, so float32 against float32 would be a flaky comparison).
"""
import pytest
import torch
import torch.nn.functional as F

from engine_helpers import float64_copy, tiny_denoiser
from pgdm.canvas import CanvasDenoiser
from pgdm.export import OnnxStepRestorer, export_step
from pgdm.export.onnx import UnsupportedStep, _avg_pool_grad, _conv_input_grad, _nearest_upsample_grad, input_names
from pgdm.ops import Inpaint, parse
from pgdm.methods import pigdm_step
from pgdm.sampler import SamplerSettings, end_on_measurement, plan_sampling, run_eager, step_inputs

STEPS = 6
aten = torch.ops.aten


@pytest.mark.parametrize("size, stride, padding, dilation, groups", [(17, 1, 1, 1, 1), (17, 2, 1, 1, 1), (16, 2, 1, 1, 2), (9, 3, 0, 1, 1), (15, 2, 2, 2, 1), (12, 1, 2, 2, 2), (10, 1, 0, 1, 1)])
def test_conv_input_grad_is_autograd(size, stride, padding, dilation, groups):
    x = torch.randn(2, 4, size, size, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4 // groups, 3, 3, dtype=torch.float64)
    out = F.conv2d(x, w, None, stride, padding, dilation, groups)
    g = torch.randn_like(out)
    (want,) = torch.autograd.grad(out, x, g)
    got, *_ = _conv_input_grad(g, x, w, None, [stride] * 2, [padding] * 2, [dilation] * 2, False, [0, 0], groups, [True, False, False])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_resampling_grads_are_autograd():
    x = torch.randn(2, 3, 8, 6, dtype=torch.float64, requires_grad=True)
    up = F.interpolate(x, scale_factor=2, mode="nearest")
    g = torch.randn_like(up)
    (want,) = torch.autograd.grad(up, x, g)
    torch.testing.assert_close(_nearest_upsample_grad(g, [16, 12], list(x.shape)), want, rtol=1e-12, atol=1e-12)
    down = F.avg_pool2d(x, 2, 2)
    g = torch.randn_like(down)
    (want,) = torch.autograd.grad(down, x, g)
    torch.testing.assert_close(_avg_pool_grad(g, x, [2, 2], [2, 2], [0, 0], False, True, None), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_avg_pool_grad(g, x, [2, 2], [], [0, 0], False, True, None), want, rtol=1e-12, atol=1e-12)  # stride=None
    with pytest.raises(UnsupportedStep, match="non-overlapping"):
        _avg_pool_grad(g, x, [3, 3], [1, 1], [1, 1], False, True, None)


CASES = {
    "sr2": dict(spec="sr2", kw={}, num_classes=None),
    "jpeg50": dict(spec="jpeg50", kw={}, num_classes=None),  # a non-linear h: libjpeg's integer arithmetic in the graph
    "inpaint-noisy-class-cond": dict(spec="inpaint-center", kw=dict(sigma_y=[0.1, 0.2, 0.0]), num_classes=3),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """case → (denoiser, operator, path of its batch-3 step graph), each exported once (~15 s)."""
    built = {}

    def build(case):
        if case not in built:
            c = CASES[case]
            den = tiny_denoiser(num_classes=c["num_classes"])
            op = parse(c["spec"], (1, 16, 16))
            built[case] = den, op, export_step(den, op, tmp_path_factory.mktemp(case) / "step.onnx", 3, noisy="sigma_y" in c["kw"])
        return built[case]

    return build


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_restore_through_onnx_runtime_matches_pytorch(exported, case):
    den, op, path = exported(case)
    c = CASES[case]
    kw = dict(c["kw"], seed=[1, 2, 3], class_labels=[0, 1, 2] if c["num_classes"] else None)
    gen = torch.Generator().manual_seed(4)
    y = op(torch.rand(3, 1, 16, 16, generator=gen) * 2 - 1)
    runner = OnnxStepRestorer(path, den, steps=STEPS)
    assert runner.names == input_names("sigma_y" in c["kw"], c["num_classes"] is not None)
    plan = plan_sampling(den, y, op, SamplerSettings(steps=STEPS), **kw)
    got = runner.run_plan(plan)
    den64 = float64_copy(den)
    plan64 = plan_sampling(den64, y.double(), op, SamplerSettings(steps=STEPS), dtype=torch.float64, **kw)
    ref64 = run_eager(den64, plan64)
    rel = lambda x: float((x.double() - ref64).norm() / ref64.norm())  # noqa: E731
    err_eager = rel(run_eager(den, plan))
    assert rel(got) <= 4 * err_eager + 1e-6, (rel(got), err_eager)
    # one step's x̂ output against the eager step's
    x0 = torch.from_numpy(runner.session.run(["x0"], runner.step_feed(plan, plan.x_init, 0))[0])
    coef, noise = step_inputs(plan, 0, torch.float32)
    _, want = pigdm_step(den, plan.x_init, coef, plan.y, plan.y_pinv, op, noise, sigma_y2=plan.sigma_y2, class_labels=plan.class_labels)
    assert float((x0 - want).norm() / want.norm()) < 1e-4


@pytest.mark.slow
def test_plans_that_do_not_fit_the_graph_are_refused(exported):
    den, op, path = exported("sr2")
    runner = OnnxStepRestorer(path, den, steps=2)
    y = op(torch.zeros(3, 1, 16, 16))
    plan = lambda op=op, y=y, clip_denoised=True, **kw: plan_sampling(den, y, op, SamplerSettings(steps=2, clip_denoised=clip_denoised), **kw)  # noqa: E731
    runner.check_plan(plan())
    with pytest.raises(ValueError, match="exported for batch 3"):
        runner.run_plan(plan(y=y[:2]))
    with pytest.raises(ValueError, match="without noisy=True"):
        runner.run_plan(plan(sigma_y=0.1))
    with pytest.raises(ValueError, match="clip_denoised=True"):
        runner.run_plan(plan(clip_denoised=False))
    other = parse("sr2-bicubic", (1, 16, 16))
    with pytest.raises(ValueError, match="not the one this graph was exported with"):
        runner.run_plan(plan(op=other, y=other(torch.zeros(3, 1, 16, 16))))


def test_what_cannot_be_exported_is_refused_in_one_line():
    den, blur = tiny_denoiser(), parse("blur-uniform3", (1, 16, 16))
    with pytest.raises(ValueError, match="cannot export the pigdm step for Blur to ONNX: <class") as e:
        export_step(den, blur, "unused.onnx", 1)  # h† works on complex FFT spectra
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="linear operator"):
        export_step(den, parse("jpeg50", (1, 16, 16)), "unused.onnx", 1, noisy=True)
    with pytest.raises(ValueError, match="per-image parameters"):
        export_step(den, Inpaint(torch.ones(2, 1, 16, 16)), "unused.onnx", 2)  # one mask per image
    with pytest.raises(ValueError, match="batch_size"):
        export_step(den, blur, "unused.onnx", 0)
    any_size = tiny_denoiser()
    any_size.image_size = None
    with pytest.raises(ValueError, match="fixed image_size"):
        export_step(any_size, blur, "unused.onnx", 1)


def test_the_export_command_writes_the_step_of_the_method_it_names(tmp_path, capsys):
    """`pgdm export --method ddnm`: a DDNM graph (no VJP) whose restore matches the eager DDNM ``Restorer``."""
    from pgdm.entrypoints.cli import main
    from pgdm.models import load_model
    from pgdm.sampler import Restorer
    from tiny_model import save_tiny_model

    model = save_tiny_model(tmp_path)
    path = tmp_path / "ddnm.onnx"
    assert main(["export", "inpaint-center", "-o", str(path), "--model", str(model), "--method", "ddnm", "--batch-size", "2"]) == 0
    assert "method ddnm" in capsys.readouterr().out
    den = load_model(str(model))
    runner = OnnxStepRestorer(path, den, steps=STEPS)
    assert runner.method == "ddnm" and runner.names == input_names(False, False, "ddnm")
    op = parse("inpaint-center", (1, 16, 16))
    y = op(torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    restorer = Restorer(den, steps=STEPS, method="ddnm")
    plan = restorer.plan(y, op, seed=[1, 2])
    want = run_eager(den, plan)
    assert float((runner.run_plan(plan) - want).norm() / want.norm()) < 1e-4
    assert torch.equal(runner.restore(y, op, seed=[1, 2]), end_on_measurement(plan, runner.run_plan(plan)).clamp(-1, 1))  # the shared plan → loop
    with pytest.raises(ValueError, match="runs method 'ddnm'"):
        runner.run_plan(Restorer(den, steps=STEPS).plan(y, op))


@pytest.mark.slow
def test_the_tiled_step_of_a_non_square_canvas_restores_as_the_eager_canvas(tmp_path, capsys):
    """`pgdm export sr2 --canvas 20x28 --overlap 4`: a CanvasDenoiser's step at 20×28 (shifted tiles of 16 inside the
    canvas, overlap 4: 3×3 of them, 18 network rows for a batch of 2): the grid shift is hashed from t inside the graph, so ONNX
    Runtime's restore is the eager canvas restore up to float32 rounding. One network call per step: exporting
    takes about 2 min on a busy 2-core CPU."""
    from pgdm.entrypoints.cli import main
    from pgdm.models import load_model
    from tiny_model import save_tiny_model

    model, path = save_tiny_model(tmp_path), tmp_path / "canvas.onnx"
    assert main(["export", "sr2", "-o", str(path), "--model", str(model), "--batch-size", "2", "--canvas", "20x28", "--overlap", "4"]) == 0
    assert "20×28" in capsys.readouterr().out
    canvas = CanvasDenoiser(load_model(str(model)), "tiles", overlap=4)
    op = parse("sr2", (1, 20, 28))
    runner = OnnxStepRestorer(path, canvas, steps=STEPS)
    assert runner.meta["pgdm.image"] == "1×20×28" and "tiles" in runner.meta["pgdm.canvas"]
    y = op(torch.rand(2, 1, 20, 28, generator=torch.Generator().manual_seed(4)) * 2 - 1)
    plan = plan_sampling(canvas, y, op, SamplerSettings(steps=STEPS), seed=[1, 2])
    canvas64 = float64_copy(canvas)
    ref64 = run_eager(canvas64, plan_sampling(canvas64, y.double(), op, SamplerSettings(steps=STEPS), dtype=torch.float64, seed=[1, 2]))
    rel = lambda x: float((x.double() - ref64).norm() / ref64.norm())  # noqa: E731
    assert rel(runner.run_plan(plan)) <= 4 * rel(run_eager(canvas, plan)) + 1e-6
    for i in (0, STEPS - 1):  # two steps, two grid offsets: x̂ as the eager step gives it
        x = plan.x_init if i == 0 else torch.randn(plan.x_init.shape, generator=torch.Generator().manual_seed(i))
        x0 = torch.from_numpy(runner.session.run(["x0"], runner.step_feed(plan, x, i))[0])
        coef, noise = step_inputs(plan, i, torch.float32)
        _, want = pigdm_step(canvas, x, coef, plan.y, plan.y_pinv, op, noise)
        assert float((x0 - want).norm() / want.norm()) < 1e-4, i
    with pytest.raises(ValueError, match="exported for 1×20×28 images, the plan's are 1×28×20"):
        other = parse("sr2", (1, 28, 20))
        runner.run_plan(plan_sampling(canvas, other(torch.zeros(2, 1, 28, 20)), other, SamplerSettings(steps=STEPS)))


def test_a_canvas_export_needs_a_canvas_denoiser_and_a_size(capsys):
    from pgdm.entrypoints.cli import main

    with pytest.raises(SystemExit):
        main(["export", "sr2", "-o", "unused.onnx", "--canvas", "24by40"])
    assert "expected HxW with two positive integers (e.g. 480x640), got '24by40'" in capsys.readouterr().err
    den, op = tiny_denoiser(), parse("sr2", (1, 24, 40))
    with pytest.raises(ValueError, match=r"canvas=\(24, 40\) needs a CanvasDenoiser"):
        export_step(den, op, "unused.onnx", 1, canvas=(24, 40))
    with pytest.raises(ValueError, match=r"CanvasDenoiser needs canvas=\(H, W\)"):
        export_step(CanvasDenoiser(den), op, "unused.onnx", 1)
    with pytest.raises(ValueError, match="two integers"):
        export_step(CanvasDenoiser(den), op, "unused.onnx", 1, canvas=(24, 0))
