"""FID, KID and CA: against torchmetrics' own FID/KID fed the same features, and a float64 scipy reference."""
import numpy as np
import pytest
import scipy.linalg
import torch

from pgdm.metrics import classifier_accuracy, frechet_distance, kernel_distance


class _Given(torch.nn.Module):
    """A torchmetrics feature extractor that returns its input: the features are given."""

    num_features = 6

    def forward(self, x):
        return x


def _feature_sets(n=80, m=70, d=6):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, d, generator=gen, dtype=torch.float64)
    mix = torch.randn(d, d, generator=gen, dtype=torch.float64) / d**0.5
    b = 0.7 * torch.randn(m, d, generator=gen, dtype=torch.float64) @ mix + 0.3
    return a, b


def test_frechet_distance_matches_scipy_sqrtm_and_torchmetrics():
    from torchmetrics.image.fid import FrechetInceptionDistance

    a, b = _feature_sets()
    an, bn = a.numpy(), b.numpy()
    ca, cb = np.cov(an, rowvar=False), np.cov(bn, rowvar=False)
    root = scipy.linalg.sqrtm(ca @ cb).real
    expected = np.sum((an.mean(0) - bn.mean(0)) ** 2) + np.trace(ca + cb - 2 * root)
    got = frechet_distance(a, b)
    assert got == pytest.approx(expected, rel=1e-9)
    fid = FrechetInceptionDistance(feature=_Given())
    fid.update(a, real=True)
    fid.update(b, real=False)
    assert got == pytest.approx(float(fid.compute()), rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_kernel_distance_matches_torchmetrics_subsets_and_a_direct_mmd():
    from torchmetrics.image.kid import KernelInceptionDistance

    a, b = _feature_sets()
    torch.manual_seed(3)  # torchmetrics draws its subsets from the global generator, real set first, as we do
    kid = KernelInceptionDistance(feature=_Given(), subsets=20, subset_size=50)
    kid.update(a, real=True)
    kid.update(b, real=False)
    ref_mean, ref_std = kid.compute()
    mean, std = kernel_distance(a, b, subsets=20, subset_size=50, seed=3)
    assert mean == pytest.approx(float(ref_mean), rel=1e-9) and std == pytest.approx(float(ref_std), rel=1e-9)
    assert std > 0
    # whole sets: every subset is the whole set, the unbiased MMD² written out pair by pair
    k = lambda u, v: (u @ v / a.shape[1] + 1) ** 3  # noqa: E731
    n = 30
    x, y = a[:n], b[:n]
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(n)) / n**2
    mean, std = kernel_distance(x, y, subsets=3, subset_size=n)
    assert mean == pytest.approx(float(xx + yy - 2 * xy), rel=1e-9) and std == pytest.approx(0.0, abs=1e-12)


def test_metric_inputs_are_checked_in_one_line():
    a, b = _feature_sets()
    with pytest.raises(ValueError, match="subset_size 100 must be between 2 and"):
        kernel_distance(a, b, subset_size=100)
    with pytest.raises(ValueError, match=r"feature sets must be \(N, D\) and \(M, D\)"):
        frechet_distance(a, b[:, :3])
    assert classifier_accuracy(torch.tensor([[0.0, 1.0], [2.0, 1.0], [0.0, 3.0]]), torch.tensor([1, 0, 0])) == pytest.approx(2 / 3)
