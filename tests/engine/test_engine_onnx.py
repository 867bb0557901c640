"""The engine's ``"onnx"`` backend: the exported step run by ONNX Runtime, its file cache, and its place in ``"auto"``.

Restores are compared with a float64 PyTorch run of the same plan, as the export's own tests do: within 4× the eager
float32 engine's error (random weights amplify float32 reordering near t = 999).
"""
import pytest
import torch

import pgdm.engine as E
import pgdm.export
from engine_helpers import float64_copy
from pgdm.engine import autotune as A
from pgdm.ops import Inpaint, SuperResolution
from pgdm.sampler import SamplerSettings, end_on_measurement, plan_sampling, run_eager

STEPS = 4


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("pgdm-cache")


@pytest.fixture
def exports(monkeypatch, cache):
    """The cache folder for this test, and the export calls it makes."""
    monkeypatch.setenv("PGDM_CACHE_DIR", str(cache))
    calls, export = [], pgdm.export.export_step

    def counting(*args, **kwargs):
        calls.append(args[3])  # the batch size
        return export(*args, **kwargs)

    monkeypatch.setattr(pgdm.export, "export_step", counting)
    return calls


def test_onnx_backend_restores_as_pytorch_and_keeps_its_export(den, images, exports, cache):
    op = SuperResolution(2)
    y = op(images)  # 3 images: padded to the batch size 4
    eng = E.restorer(den, backend="onnx", steps=STEPS, batch_sizes=(4,))
    got = eng.restore(y, op, seed=[1, 2, 3])
    assert exports == [4] and eng.stats["onnx"] == 1 and len(list(cache.glob("onnx/step-*.onnx"))) == 1

    den64 = float64_copy(den)
    plan64 = plan_sampling(den64, y.double(), op, SamplerSettings(steps=STEPS), seed=[1, 2, 3], dtype=torch.float64)
    ref64 = end_on_measurement(plan64, run_eager(den64, plan64)).clamp(-1, 1)
    want = E.restorer(den, backend="eager", steps=STEPS).restore(y, op, seed=[1, 2, 3])
    rel = lambda x: float((x.double() - ref64).norm() / ref64.norm())  # noqa: E731
    assert 0 < rel(got) <= 4 * rel(want) + 1e-6, (rel(got), rel(want))

    again = E.restorer(den, backend="onnx", steps=STEPS, batch_sizes=(4,))  # a new engine (process): loads the file
    assert torch.equal(again.restore(y, op, seed=[1, 2, 3]), got) and exports == [4]


def test_onnx_backend_refuses_in_one_line_what_it_cannot_run(den, images, exports):
    per_image = Inpaint(torch.rand(3, 1, 16, 16) > 0.5)  # one mask per image: graph constants it cannot take
    eng = E.restorer(den, backend="onnx", steps=STEPS, batch_sizes=(3,))
    with pytest.raises(ValueError, match="per-image parameters") as err:
        eng.restore(per_image(images), per_image, seed=0)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="float32 NCHW step"):
        E.EngineConfig(backend="onnx", precision="bf16")
    with pytest.raises(ValueError, match="float32 NCHW step"):
        E.EngineConfig(backend="onnx", channels_last=True)


@pytest.mark.slow
def test_auto_offers_onnx_on_the_cpu_runs_it_when_fastest_and_drops_it_where_it_cannot_export(den, images, exports, monkeypatch):
    cpu = torch.device("cpu")
    assert A.Candidate("onnx", "fp32") in A.candidates(cpu) and A.Candidate("onnx", "fp32").label() == "ONNX Runtime fp32"
    assert A.Candidate("onnx", "fp32").compiled  # tried after the eager steps, as a compile is
    assert all(c.backend != "onnx" for c in A.candidates(cpu, precision="bf16") + A.candidates(cpu, channels_last=True))
    assert all(c.backend != "onnx" for c in A.candidates(torch.device("cuda"), precisions=("fp32",)))

    def fake_timer(candidate, step):  # ranks ONNX Runtime first; runs the real steps of eager and ONNX candidates
        if candidate.backend != "compile":
            step()
        return {"onnx": 0.1, "eager": 0.2}.get(candidate.backend, 0.3)

    op = SuperResolution(2)
    eng = E.restorer(den, steps=STEPS, precision="fp32", channels_last=False, autotune_budget_s=60, batch_sizes=(4,))
    eng.tuner.timer = fake_timer
    got = eng.restore(op(images), op, seed=[1, 2, 3])
    exported = len(exports)
    assert eng.tuner.choices and next(iter(eng.tuner.choices.values())).candidate == A.Candidate("onnx", "fp32")
    fixed = E.restorer(den, backend="onnx", steps=STEPS, batch_sizes=(4,))
    assert torch.equal(got, fixed.restore(op(images), op, seed=[1, 2, 3]))
    assert len(exports) == exported <= 1  # the file auto exported (or an earlier test did): loaded, not exported again

    per_image = Inpaint(torch.rand(3, 1, 16, 16) > 0.5)
    eng = E.restorer(den, steps=STEPS, precision="fp32", channels_last=False, autotune_budget_s=60, batch_sizes=(3,))
    eng.tuner.timer = fake_timer
    eng.restore(per_image(images), per_image, seed=0)
    choice = next(iter(eng.tuner.choices.values()))
    assert choice.candidate.backend == "eager" and "ONNX Runtime fp32" not in choice.measured  # export refused: dropped

    monkeypatch.setattr(A, "onnx_runtime_available", lambda: False)
    assert all(c.backend != "onnx" for c in A.candidates(cpu))
