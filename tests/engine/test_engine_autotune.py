"""``backend="auto"`` / ``precision="auto"``: the candidates per device, the search, the budget and the disk cache,
with a fake timer and clock (no timed tests; speed lives in benchmarks/bench_engines.py)."""
import json

import pytest
import torch

import pgdm.engine as E
from engine_helpers import tiny_denoiser
from pgdm import Restorer
from pgdm.engine import autotune as A
from pgdm.ops import Inpaint, SuperResolution

STEPS = 3
CPU = torch.device("cpu")
AVX2 = {"fpu", "sse2", "avx", "avx2", "fma"}  # an AMD EPYC without AVX-512


def C(backend, precision="fp32", cl=False, compile=True):
    return A.Candidate(backend, precision, cl, compile)


@pytest.mark.parametrize(
    "flags,machine,expected",
    [
        (AVX2, "x86_64", ("fp32",)),
        (AVX2 | {"avx512f", "avx512_bf16"}, "x86_64", ("fp32", "bf16")),
        (AVX2 | {"amx_tile", "amx_bf16"}, "x86_64", ("fp32", "bf16")),
        (AVX2 | {"amx_bf16", "avx512_fp16", "amx_fp16"}, "x86_64", ("fp32", "bf16", "fp16")),
        ({"fp", "asimd", "asimdhp", "bf16"}, "aarch64", ("fp32", "bf16", "fp16")),
        ({"fp", "asimd"}, "aarch64", ("fp32",)),
    ],
)
def test_native_precisions_never_offer_emulated_bf16(monkeypatch, flags, machine, expected):
    monkeypatch.setattr(A.platform, "machine", lambda: machine)
    assert A.native_precisions(CPU, flags) == expected


def test_candidates_eager_first_and_explicit_settings_kept(monkeypatch):
    monkeypatch.setattr(A, "onnx_runtime_available", lambda: True)
    got = A.candidates(CPU, precisions=("fp32", "bf16"))
    assert got[:4] == [C("eager"), C("eager", cl=True), C("eager", "bf16"), C("eager", "bf16", True)]
    assert got[4] == C("onnx") and {c.backend for c in got[5:]} == {"compile"} and len(got) == 9  # ONNX: fp32 NCHW only
    monkeypatch.setattr(A, "onnx_runtime_available", lambda: False)
    assert [c.backend for c in A.candidates(CPU, precisions=("fp32", "bf16"))][4:] == ["compile"] * 4
    assert A.candidates(CPU, "compile", "fp32", False) == [C("compile")]
    assert A.candidates(CPU, "eager", precisions=("fp32",)) == [C("eager"), C("eager", cl=True)]
    cuda = A.candidates(torch.device("cuda"), precision="bf16", channels_last=False)
    assert cuda == [C("eager", "bf16"), C("cudagraph", "bf16", compile=False), C("compile", "bf16"), C("cudagraph", "bf16")]
    assert [c.label() for c in cuda] == ["eager bf16", "CUDA graph of the eager step bf16", "compiled bf16", "CUDA graph of the compiled step bf16"]
    assert C("compile", cl=True).label() == "compiled fp32, channels_last"


class Fake:
    """A timer and a clock: each measured candidate takes ``cost[c]`` seconds of step and ``spend[c]`` of clock."""

    def __init__(self, step_s, spend=None, fail=()):
        self.step_s, self.spend, self.fail = step_s, spend or {}, set(fail)
        self.now, self.timed, self.built = 0.0, [], []

    def timer(self, candidate, step):
        self.timed.append(candidate)
        self.now += self.spend.get(candidate, 1.0)
        if candidate in self.fail:
            raise RuntimeError("no C++ compiler\nmore")
        return self.step_s[candidate]

    def clock(self):
        return self.now

    def build(self, candidate):
        self.built.append(candidate)
        return lambda: None


def tuner(fake, budget=100.0, cache=None, log=None):
    return A.AutoTuner(CPU, budget, timer=fake.timer, clock=fake.clock, cache=cache, use_disk=cache is not None, log=log or (lambda s: None))


def test_search_order_prunes_and_picks_the_fastest(monkeypatch):
    monkeypatch.setattr(A, "onnx_runtime_available", lambda: False)  # ONNX Runtime's place: test_engine_onnx.py
    options = A.candidates(CPU, precisions=("fp32", "bf16"))
    step = {C("eager"): 0.20, C("eager", cl=True): 0.30, C("eager", "bf16"): 0.9, C("eager", "bf16", True): 0.35,
            C("compile"): 0.16, C("compile", cl=True): 0.15, C("compile", "bf16", True): 0.05}  # fmt: skip
    fake = Fake(step)
    lines = []
    choice = tuner(fake, log=lines.append).choose("k", None, options, fake.build, 16)
    # eager first; then compiled in the order of their eager steps; bf16 NCHW (0.9 > 2 × 0.2) is never compiled
    assert fake.timed == options[:4] + [C("compile"), C("compile", cl=True), C("compile", "bf16", True)]
    assert choice.candidate == C("compile", "bf16", True) and choice.step_ms == pytest.approx(50)
    assert choice.measured["compiled fp32, channels_last"] == pytest.approx(150)
    assert lines == ["engine: compiled bf16, channels_last — 50 ms/step (batch 16)"]


def test_budget_stops_starting_candidates_and_zero_measures_nothing(monkeypatch):
    monkeypatch.setattr(A, "onnx_runtime_available", lambda: False)
    options = A.candidates(CPU, precisions=("fp32",))
    fake = Fake({C("eager"): 0.2, C("eager", cl=True): 0.3, C("compile"): 0.1, C("compile", cl=True): 0.05},
                spend={C("compile"): 200.0})  # fmt: skip
    choice = tuner(fake, budget=10.0).choose("k", None, options, fake.build, 1)
    assert fake.timed == [C("eager"), C("eager", cl=True), C("compile")]  # the compile ran past the budget: no more
    assert choice.candidate == C("compile")
    none = Fake({})
    choice = tuner(none, budget=0).choose("k", None, options, none.build, 1)
    assert choice.candidate == C("eager") and choice.step_ms is None and none.timed == [] and none.built == []
    assert tuner(none).choose("one", None, [C("compile")], none.build, 1).candidate == C("compile") and none.timed == []
    with pytest.raises(ValueError, match="budget"):
        A.AutoTuner(CPU, -1.0)


def test_failing_candidates_are_dropped_and_all_failing_raises():
    options = [C("eager"), C("compile")]
    fake = Fake({C("eager"): 0.2}, fail={C("compile")})
    assert tuner(fake).choose("k", None, options, fake.build, 4).candidate == C("eager")
    fake = Fake({}, fail=set(options))
    with pytest.raises(RuntimeError, match="no configuration ran .*compiled fp32: RuntimeError: no C\\+\\+ compiler"):
        tuner(fake).choose("k", None, options, fake.build, 4)


def test_disk_cache_round_trip(tmp_path):
    cache = A.ChoiceCache(tmp_path / "sub" / "choices.json")
    options = [C("eager"), C("compile")]
    fake = Fake({C("eager"): 0.2, C("compile"): 0.1})
    first = tuner(fake, cache=cache).choose("k", "disk-key", options, fake.build, 2)
    again = Fake({})  # a new process: nothing measured
    lines = []
    second = tuner(again, cache=cache, log=lines.append).choose("k", "disk-key", options, again.build, 2)
    assert second.candidate == first.candidate == C("compile") and second.cached and again.timed == []
    assert lines == ["engine: compiled fp32 — 100 ms/step (batch 2, cached choice)"]
    data = json.loads(cache.path.read_text())
    assert data["choices"]["disk-key"]["candidate"]["backend"] == "compile"
    # a cached choice outside what this config allows is measured again; unmeasured choices are not stored
    fake = Fake({C("eager"): 0.2})
    assert tuner(fake, cache=cache).choose("k", "disk-key", [C("eager")], fake.build, 2).candidate == C("eager")
    tuner(Fake({}), budget=0, cache=cache).choose("k", "other", options, fake.build, 2)
    assert "other" not in json.loads(cache.path.read_text())["choices"]
    cache.path.write_text("{not json")
    assert cache.get("disk-key") is None


def test_keys_fingerprint_model_and_operator(den):
    assert A.model_fingerprint(den) == A.model_fingerprint(tiny_denoiser())
    assert A.model_fingerprint(den) != A.model_fingerprint(tiny_denoiser(seed=1))
    assert A.operator_key(SuperResolution(2)) == A.operator_key(SuperResolution(2)) != A.operator_key(SuperResolution(4))
    masks = torch.rand(2, 1, 16, 16) > 0.5
    assert A.operator_key(Inpaint(masks[:1])) == A.operator_key(Inpaint(masks[1:]))  # masks are per-row data
    assert A.cache_dir().name  # PGDM_CACHE_DIR (tests/conftest.py)


def test_config_defaults_are_auto_and_explicit_settings_fixed():
    cfg = E.EngineConfig()
    assert (cfg.backend, cfg.precision, cfg.channels_last, cfg.auto) == ("auto", "auto", None, True)
    fixed = E.EngineConfig(backend="compile", precision="fp32")
    assert fixed.channels_last is False and not fixed.auto
    assert cfg.fixed(C("compile", cl=True)) == E.EngineConfig(backend="compile", precision="fp32", channels_last=True)
    with pytest.raises(ValueError, match="autotune_budget_s"):
        E.EngineConfig(autotune_budget_s=-1)


def test_auto_engine_runs_the_measured_choice_and_caches_it(den, images, capsys):
    """backend auto with a fake timer that ranks channels_last first: the engine runs the eager channels_last step
    (no compile: the fake timer never calls a compiled step), a second engine reads the choice from disk."""
    op = SuperResolution(2)
    y = op(images)
    timed = []

    def fake_timer(candidate, step):
        timed.append(candidate)
        if not candidate.compiled:
            step()  # the real prepared step, compiled candidates excepted
        return {(False, False): 0.3, (False, True): 0.1}.get((candidate.compiled, candidate.channels_last), 0.5)

    eng = E.restorer(den, steps=STEPS, precision="fp32", autotune_budget_s=60, batch_sizes=(4,))
    eng.tuner.timer = fake_timer
    out = eng.restore(y, op, seed=2)
    torch.testing.assert_close(out, Restorer(den, steps=STEPS).restore(y, op, seed=2), atol=1e-2, rtol=0)  # NHWC rounding
    # NCHW's eager step (0.3 s) is over 2 × the best (0.1 s): its compiled version is not tried
    assert [c.label() for c in timed] == ["eager fp32", "eager fp32, channels_last", "compiled fp32, channels_last"]
    assert eng.stats["eager"] == 1 and len(eng.tuner.choices) == 1
    assert [c.label() for c in eng._auto.engines] == ["eager fp32, channels_last"]  # the measured others are freed
    assert "engine: eager fp32, channels_last — 100 ms/step (batch 4)" in capsys.readouterr().err
    eng.restore(y, op, seed=3)  # the same key: no new measuring
    assert len(timed) == 3

    again = E.restorer(den, steps=STEPS, precision="fp32", autotune_budget_s=60, batch_sizes=(4,))
    again.tuner.timer = lambda c, s: pytest.fail("measured although the choice is cached")
    assert torch.equal(again.restore(y, op, seed=2), out)
    assert "cached choice" in capsys.readouterr().err


def test_auto_with_budget_zero_is_the_restorer(den, images):
    op = SuperResolution(2)
    y = op(images)
    eng = E.restorer(den, steps=STEPS)  # PGDM_AUTOTUNE_BUDGET_S=0 in tests/conftest.py
    assert torch.equal(eng.restore(y, op, seed=1), Restorer(den, steps=STEPS).restore(y, op, seed=1))
    assert eng.warmup(op, (1, 16, 16), (4,)) >= 0.0 and eng.stats["eager"] == 1
