"""The compiled step on CPU (``torch.compile(fullgraph=True)`` of forward + VJP + h, h† + update).

One engine and one compiled shape (batch 4) serve every test in this module: a cold compile of the
tiny UNet's step takes minutes on a busy 2-core machine (seconds once Inductor's cache is warm).

Tolerance: Inductor reorders float32 arithmetic, so the compiled run is compared with a float64 run of
the same plan: the relative L2 error of the unclamped samples must stay within 4× the eager float32
sampler's own error (measured ratio 1.5–1.8 over six seeds). The random-weight UNet drives most
pixels far outside [-1, 1] (|x| up to ~2600 at the end) and a relative error of ~2e-6 becomes up to
~5e-3 on a pixel, so the clamped ``restore`` outputs agree exactly on saturated pixels and within
``RESTORE_ATOL`` on the rest (measured ≤ 2.4e-3).
"""
import pytest
import torch

import pgdm.engine as E

pytestmark = pytest.mark.slow  # torch.compile of the whole step: minutes on a 2-core CPU
from engine_helpers import float64_copy, rss_bytes, tiny_denoiser
from pgdm import Restorer
from pgdm.ops import SuperResolution
from pgdm.sampler import run_eager

STEPS = 4
RESTORE_ATOL = 1e-2


@pytest.fixture(scope="module")
def setup():
    den = tiny_denoiser()
    eng = E.restorer(den, "compile", steps=STEPS, batch_sizes=(4,))
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(3, 1, 16, 16, generator=gen) * 2 - 1
    return den, eng, images


def _unique_graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def _check_against_float64(den, eng, y, op, seed):
    """Relative L2 error of the engine's unclamped samples vs float64, within 4× the eager float32 sampler's."""
    plan = eng.plan(y, op, seed=seed)
    plan64 = E.restorer(float64_copy(den), steps=STEPS).plan(y.double(), op, seed=seed)
    ref64 = run_eager(float64_copy(den), plan64)
    rel = lambda x: float((x.double() - ref64).norm() / ref64.norm())  # noqa: E731
    err_eager, err_engine = rel(run_eager(den, plan)), rel(eng.run_plan(plan))
    assert err_engine <= 4 * err_eager, (err_engine, err_eager)


def test_compiled_restore_matches_restorer(setup):
    den, eng, images = setup
    op = SuperResolution(2)
    y = op(images)
    out = eng.restore(y, op, seed=5)  # 3 rows, padded to the compiled batch of 4
    torch.testing.assert_close(out, Restorer(den, steps=STEPS).restore(y, op, seed=5), atol=RESTORE_ATOL, rtol=0)
    assert eng.stats["compiled"] == 1 and out.shape == (3, 1, 16, 16)
    _check_against_float64(den, eng, y, op, 5)


def test_equal_operator_and_smaller_batch_reuse_the_compiled_step(setup):
    den, eng, images = setup
    eng.restore(SuperResolution(2)(images), SuperResolution(2), seed=5)  # make sure batch 4 is compiled
    graphs = _unique_graphs()
    op = SuperResolution(2)  # a new but equal object: mapped to the engine's static operator
    out = eng.restore(op(images[:2]), op, seed=[8, 9])
    assert _unique_graphs() == graphs, "no recompilation"
    torch.testing.assert_close(out, Restorer(den, steps=STEPS).restore(op(images[:2]), op, seed=[8, 9]), atol=RESTORE_ATOL, rtol=0)
    _check_against_float64(den, eng, op(images[:2]), op, [8, 9])
    assert _unique_graphs() == graphs


def test_queue_pads_merged_requests_to_the_compiled_size(setup):
    den, eng, images = setup
    op = SuperResolution(2)
    graphs = _unique_graphs()
    q = eng.queue()
    q.submit(op(images[:1]), op, seed=3)
    q.submit(op(images[1:]), SuperResolution(2), seed=[4, 5])
    out = q.run()
    assert q.batches_run == [3] and _unique_graphs() == graphs
    torch.testing.assert_close(out[1], eng.restore(op(images[1:]), op, seed=[4, 5]), atol=1e-5, rtol=0)


def test_compiled_run_keeps_weights_gradient_free_and_memory_flat(setup):
    den, eng, images = setup
    op = SuperResolution(2)
    plan = eng.plan(op(images), op, seed=1)
    eng.run_plan(plan)
    rss = []

    def cb(d):
        assert d["x"].grad_fn is None
        rss.append(rss_bytes())

    for _ in range(6):
        eng.run_plan(plan, callback=cb)
    assert rss[-1] - rss[4] < 1 << 20, [(r - rss[4]) >> 10 for r in rss[4::4]]
    assert all(p.grad is None and not p.requires_grad for p in eng.denoiser.parameters())
    assert all(p.grad is None for p in den.parameters())


def test_warmup_compiles_ahead_without_sampling(setup):
    den, eng, images = setup
    eng.restore(SuperResolution(2)(images), SuperResolution(2), seed=5)  # batch 4 compiled
    graphs, runs = _unique_graphs(), eng.stats["compiled"]
    seconds = eng.warmup(SuperResolution(2), (1, 16, 16), [3])  # pads to 4: nothing new to compile
    assert seconds >= 0 and _unique_graphs() == graphs and eng.stats["compiled"] == runs
    assert E.restorer(den, "eager", steps=STEPS).warmup(SuperResolution(2), (1, 16, 16)) == 0.0  # eager: nothing to warm


def test_failure_reason_is_one_line_even_for_a_bare_assertion():
    def inductor_like():
        raise AssertionError()  # what Inductor's message-less internal asserts raise

    with pytest.raises(AssertionError) as bare:
        inductor_like()
    reason = E.compile.failure_reason(bare.value)
    assert reason.startswith("AssertionError at test_engine_compile.py:") and "\n" not in reason
    assert E.compile.failure_reason(RuntimeError("no C++ compiler\ndetails")) == "RuntimeError: no C++ compiler"
    assert E.compile.failure_reason(RuntimeError("RuntimeError: twice")) == "RuntimeError: twice"


def test_inductor_options_are_checked_and_applied_over_the_engines_own():
    with pytest.raises(ValueError, match=r"^unknown Inductor option\(s\) no_such_flag;"):
        E.EngineConfig(backend="compile", compile_options={"no_such_flag": True})
    with_options = E.EngineConfig(backend="compile", compile_options={"conv_1x1_as_mm": True})
    assert with_options != E.EngineConfig(backend="compile") and isinstance(hash(with_options), int)  # still hashable
    config = torch._inductor.config
    default_1x1 = config.conv_1x1_as_mm
    with E.compile.dynamo_flags(torch.device("cpu")):
        assert config.layout_optimization is False  # the engine's own CPU setting
    with E.compile.dynamo_flags(torch.device("cpu"), options={"conv_1x1_as_mm": not default_1x1, "layout_optimization": True}):
        assert config.conv_1x1_as_mm is (not default_1x1) and config.layout_optimization is True
    assert config.conv_1x1_as_mm is default_1x1
