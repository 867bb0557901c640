"""Wrong-typed or out-of-range Restorer/schedule arguments: one-line errors naming the argument."""
import numpy as np
import pytest
import torch

from pgdm import Restorer, schedules, validate
from pgdm.ops import SuperResolution
from test_restorer import small_denoiser


@pytest.fixture(scope="module")
def denoiser():
    return small_denoiser()


def _one_line(err):
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(steps=3.5), validate.ArgumentTypeError, r"steps must be an integer, got float 3.5"),
        (dict(steps=2.0), validate.ArgumentTypeError, r"steps must be an integer, got float 2.0"),
        (dict(steps=True), validate.ArgumentTypeError, r"steps must be an integer, got bool True"),
        (dict(steps="10"), validate.ArgumentTypeError, r"steps must be an integer, got str '10'"),
        (dict(steps=0), ValueError, r"steps must be in \[1, 1000\] for start step 999, got 0"),
        (dict(steps=5, start_step=2.5), validate.ArgumentTypeError, r"start_step must be an integer, got float"),
        (dict(steps=5, start_step=-1), ValueError, r"start step must be in \[0, 999\], got -1"),
        (dict(eta="1"), validate.ArgumentTypeError, r"eta must be a number in \[0, 1\], got str '1'"),
        (dict(eta=float("nan")), ValueError, r"eta must be in \[0, 1\], got nan"),
    ],
)
def test_restorer_arguments(denoiser, kwargs, error, match):
    with pytest.raises(error, match=match) as err:
        Restorer(denoiser, **kwargs)
    _one_line(err)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(seed=1.5), validate.ArgumentTypeError, r"seed must be an integer, got float 1.5"),
        (dict(seed="0"), validate.ArgumentTypeError, r"seed must be an integer, got str"),
        (dict(seed=[0, 1.0]), validate.ArgumentTypeError, r"seed must be an integer, got float 1.0"),
        (dict(seed=[0, 1, 2]), ValueError, r"one int per image \(2\), got 3 seeds"),
        (dict(num_samples=2.0), validate.ArgumentTypeError, r"num_samples must be an integer, got float 2.0"),
        (dict(num_samples=False), validate.ArgumentTypeError, r"num_samples must be an integer, got bool"),
        (dict(num_samples=0), ValueError, r"num_samples must be an integer ≥ 1, got 0"),
        (dict(sigma_y="0.1"), validate.ArgumentTypeError, r"sigma_y must be a number ≥ 0 on the \[0, 1\] pixel scale \(e.g. 0.05\) or one per image, got str '0.1'"),
        (dict(sigma_y=[0.1, "x"]), validate.ArgumentTypeError, r"sigma_y must be a number ≥ 0"),
        (dict(sigma_y=True), validate.ArgumentTypeError, r"sigma_y must be a number ≥ 0"),
    ],
)
def test_restore_arguments(denoiser, kwargs, error, match):
    op = SuperResolution(2)
    y = op(torch.zeros(2, 1, 8, 8))
    with pytest.raises(error, match=match) as err:
        Restorer(denoiser, steps=2).restore(y, op, **kwargs)
    _one_line(err)


def test_integer_like_seeds_are_accepted_and_equal(denoiser):
    op = SuperResolution(2)
    y = op(torch.randn(2, 1, 8, 8).clamp(-1, 1))
    restorer = Restorer(denoiser, steps=2)
    reference = restorer.restore(y, op, seed=3)
    for seed in (np.int64(3), torch.tensor(3), [3, 4], (np.int32(3), 4), torch.tensor([3, 4])):
        torch.testing.assert_close(restorer.restore(y, op, seed=seed), reference, rtol=0, atol=0)
    torch.testing.assert_close(Restorer(denoiser, steps=np.int64(2)).restore(y, op, seed=3), reference, rtol=0, atol=0)


def test_type_errors_are_value_errors_for_the_cli():
    with pytest.raises(ValueError):
        validate.positive_int("batch_size", 1.5)
    with pytest.raises(TypeError):
        validate.positive_int("batch_size", 1.5)


def test_schedules_validate_counts():
    with pytest.raises(validate.ArgumentTypeError, match="steps must be an integer"):
        schedules.timesteps(10.0)
    with pytest.raises(validate.ArgumentTypeError, match="T must be an integer"):
        schedules.linear(1000.0)
    assert schedules.timesteps(np.int64(4), 1000).tolist() == [999, 666, 333, 0]


def test_measurement_of_the_wrong_size_names_both_sizes(denoiser):
    op = SuperResolution(4)  # built for no size: h† of a 7×7 y would be a 28×28 image (a canvas, by default)
    with pytest.raises(ValueError, match=r"sr4-pool: the measurement has shape \(1, 1, 7, 7\), but the model's 8×8 images give measurements of shape \(1, 1, 2, 2\)") as err:
        Restorer(denoiser, steps=2, strategy=None).restore(torch.zeros(1, 1, 7, 7), op)
    _one_line(err)


def test_a_missing_operator_or_denoiser_is_named_in_one_line(denoiser):
    op = SuperResolution(2)
    y = op(torch.zeros(2, 1, 8, 8))
    with pytest.raises(validate.ArgumentTypeError, match=r"op must be a measurement operator, e.g. pgdm.ops.parse\('sr4', \(C, H, W\)\).*got NoneType") as err:
        Restorer(denoiser, steps=2).restore(y, None)
    _one_line(err)
    with pytest.raises(validate.ArgumentTypeError, match=r"denoiser must be a pgdm.Denoiser, e.g. pgdm.load_model\('default'\), got NoneType") as err:
        Restorer(None)
    _one_line(err)
    with pytest.raises(validate.ArgumentTypeError, match=r"wrap a bare network: pgdm.Denoiser\(net, alphas_cumprod\)"):
        Restorer(denoiser.net, steps=2)
