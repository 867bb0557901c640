"""Options whose setting depends on the task: DPS's ζ' and DiffPIR's λ, ζ, from their official code or tuned on
Fashion-MNIST train images (DPS on super-resolution and inpainting, per number of steps)."""
import pytest
import torch

import pgdm
from pgdm.sampler import SamplerSettings
from pgdm.analytic import mixture_denoiser

SHAPE = (1, 8, 8)
# the reference code's values (DPS configs/*_config.yaml; DiffPIR main_ddpir_{inpainting,deblur}.py), and the values
# tuned on train images (DPS's ζ' at 20 steps and fewer, DiffPIR's ζ on SR)
EXPECTED = {
    ("dps", "inpaint-center"): {"scale": 2.5},
    ("dps", "sr4"): {"scale": 15.0},
    ("dps", "blur-gaussian3"): {"scale": 0.3},
    ("diffpir", "inpaint-center"): {"lam": 1.0, "zeta": 1.0},
    ("diffpir", "blur-gaussian3"): {"lam": 7.0, "zeta": 0.3},
    ("diffpir", "sr4"): {"lam": 7.0, "zeta": 1.0},
}


@pytest.mark.parametrize("method,task", sorted(EXPECTED))
def test_per_task_defaults_reach_the_coefficient_table(method, task):
    den = mixture_denoiser(SHAPE)[0].float()
    op = pgdm.ops.parse(task, SHAPE)
    settings = SamplerSettings(method, steps=4)
    resolved = settings.method_options(op)
    assert {k: resolved[k] for k in EXPECTED[method, task]} == EXPECTED[method, task]
    plan = pgdm.sampler.plan_sampling(den, op(torch.zeros(1, *SHAPE)), op, settings)
    want = settings.spec.coefficients(den.alphas_cumprod, plan.coefs["t"].cpu(), **resolved)
    for name, value in want.items():
        torch.testing.assert_close(plan.coefs[name].cpu().to(value.dtype), value, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "task,steps,scale",
    [("sr4", 20, 15.0), ("sr4", 50, 6.0), ("sr4", 100, 3.0), ("sr4", 1000, 0.3), ("sr4", 4000, 0.3), ("sr2-bicubic", 200, 1.5),
     ("inpaint-center", 1, 2.5), ("inpaint-center", 100, 1.0), ("inpaint-random0.5", 1000, 0.3), ("inpaint-center", 2000, 0.3), ("blur-gaussian3", 20, 0.3)],
)
def test_dps_step_size_falls_with_the_steps_between_the_tuned_counts(task, steps, scale):
    # tuned at 20, 100 and 1000 steps (ζ'·N constant on super-resolution), log-linear between, held outside
    op = pgdm.ops.parse(task, (1, 16, 16))
    assert SamplerSettings("dps", steps=steps).method_options(op)["scale"] == pytest.approx(scale, rel=1e-6)


def test_an_explicit_option_overrides_the_task_default():
    op = pgdm.ops.parse("inpaint-center", SHAPE)
    assert SamplerSettings("dps", steps=4, options={"scale": 1.0}).method_options(op)["scale"] == 1.0
    assert SamplerSettings("diffpir", steps=4, options={"zeta": 0.5}).method_options(op) == {"lam": 1.0, "zeta": 0.5}


def test_bad_values_are_still_refused_before_any_operator_is_known():
    with pytest.raises(ValueError, match="zeta must be in"):
        SamplerSettings("diffpir", steps=4, options={"zeta": 2.0})


def test_cpigdm_starts_from_the_noised_pseudoinverse_at_0_4_T_for_5_steps_and_0_6_T_beyond():
    den = mixture_denoiser(SHAPE)[0].float()
    op = pgdm.ops.parse("sr4", SHAPE)
    y = op(torch.rand(2, *SHAPE) * 2 - 1)
    default = pgdm.sampler.plan_sampling(den, y, op, SamplerSettings("cpigdm", steps=5), seed=3)
    explicit = pgdm.sampler.plan_sampling(den, y, op, SamplerSettings("cpigdm", steps=5, start_step=400), seed=3)
    pure = pgdm.sampler.plan_sampling(den, y, op, SamplerSettings("pigdm", steps=5), seed=3)
    assert den.num_timesteps == 1000 and default.coefs["t"].tolist() == [400, 300, 200, 100, 0]
    assert torch.equal(default.x_init, explicit.x_init) and torch.equal(default.coefs["t"], explicit.coefs["t"])
    a = den.alphas_cumprod[400]
    torch.testing.assert_close(default.x_init, a.sqrt() * op.pinv(y) + (1 - a).sqrt() * pure.x_init, rtol=1e-5, atol=1e-6)
    assert pure.coefs["t"][0] == 999  # the other methods still start from pure noise
    assert SamplerSettings("cpigdm", steps=10).coefficients(den.alphas_cumprod)["t"][0] == 600
    with pytest.raises(ValueError, match="steps must be in"):
        SamplerSettings("cpigdm", steps=700).check_model(den)  # more steps than timesteps below the default start
