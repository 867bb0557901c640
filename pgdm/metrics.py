"""Image-quality metrics on [-1, 1] images.

Per image: PSNR and SSIM on the [0, 1] scale (torchmetrics), measurement consistency. Per set of images, the
paper's distribution metrics: classifier accuracy (CA), FID and KID. On the default model's 32×32 grayscale
Fashion-MNIST images they are computed in the feature space of the small classifier shipped with pgdm
(:mod:`pgdm.classifier`, :func:`classifier_scores`), the usual practice for MNIST-like data; on RGB images in
torchmetrics' FID Inception network from a weights file the user supplies (:func:`inception_scores`). Nothing is
downloaded at run time.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

__all__ = [
    "psnr", "ssim", "consistency_rms", "classifier_accuracy", "frechet_distance", "kernel_distance", "FeatureScores",
    "classifier_scores", "inception_scores", "inception_unavailable", "INCEPTION_WEIGHTS_FILE",
]  # fmt: skip

# The FID Inception weights torchmetrics (through torch-fidelity) expects, by their published file name.
INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of x against ref, both (B, C, H, W) in [-1, 1], on the [0, 1] scale → (B,)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(_unit(x), _unit(ref), data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Gaussian window 11, σ 1.5) of x against ref in [-1, 1] → (B,)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(_unit(x), _unit(ref), data_range=1.0, reduction="none")


def consistency_rms(op, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image RMS of h(x̂) − y over one image's measurement entries (x: (B, C, H, W), y: (B, …)) → (B,)."""
    return (op(x) - y).flatten(1).norm(dim=1) / (y[0].numel() ** 0.5)


def classifier_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose arg-max logit is the label; logits (N, K), labels (N,) int in [0, K) → float in [0, 1]."""
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"{logits.shape[0]} logits rows but {labels.shape[0]} labels; expected one label per row")
    return float((logits.argmax(1) == labels).double().mean())


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets a (N, D) and b (M, D), in float64:
    ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2(Σ_a Σ_b)^½), unbiased covariances (FID's formula, Heusel et al. 2017).
    tr((Σ_a Σ_b)^½) is the sum of the square roots of the eigenvalues of Σ_a Σ_b (real, ≥ 0 up to rounding)."""
    a, b = _features(a, b)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_trace = torch.linalg.eigvals(cov_a @ cov_b).sqrt().real.sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * root_trace)


def kernel_distance(a: torch.Tensor, b: torch.Tensor, *, subsets: int = 100, subset_size: int = 1000, degree: int = 3,
                    gamma: float | None = None, coef: float = 1.0, seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """KID (Bińkowski et al. 2018) between feature sets a (N, D) and b (M, D): the unbiased MMD² with the kernel
    k(u, v) = (γ u·v + coef)^degree (γ = 1/D by default), on ``subsets`` random subsets of ``subset_size`` rows of
    each set (drawn with a generator seeded with ``seed``, real set first, as torchmetrics draws them). Returns
    (mean, population std) over the subsets, as torchmetrics' ``KernelInceptionDistance``."""
    a, b = _features(a, b)
    if not 2 <= subset_size <= min(a.shape[0], b.shape[0]):
        raise ValueError(f"subset_size {subset_size} must be between 2 and the smaller set's size {min(a.shape[0], b.shape[0])}")
    gamma = 1.0 / a.shape[1] if gamma is None else gamma
    gen = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        fa = a[torch.randperm(a.shape[0], generator=gen)[:subset_size]]
        fb = b[torch.randperm(b.shape[0], generator=gen)[:subset_size]]
        k_aa, k_bb, k_ab = ((u @ v.T * gamma + coef) ** degree for u, v in ((fa, fa), (fb, fb), (fa, fb)))
        m = subset_size
        within = (k_aa.sum() - k_aa.diagonal().sum() + k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1))
        scores.append(within - 2 * k_ab.sum() / m**2)
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(unbiased=False))


class FeatureScores:
    """FID and KID (and CA, given labels and a classifier head) of restorations against reference images, in the
    feature space of ``extract``: (B, C, H, W) in [-1, 1] → (B, D) features.

    reference: (N, C, H, W) in [-1, 1], the clean images; labels: (N,) their classes, head: features → logits
    (both or neither: CA). KID uses 100 subsets of min(1000, N // 2) images (None below 4 images). Calling it on
    restorations (N, C, H, W) in [-1, 1] returns ``{"fid", "kid", "kid_std"}`` and "ca" with labels.
    """

    def __init__(self, extract, reference: torch.Tensor, labels: torch.Tensor | None = None, head=None):
        if (labels is None) != (head is None):
            raise ValueError("classifier accuracy needs both labels and a classifier head, or neither")
        self.extract, self.labels, self.head = extract, labels, head
        self.reference = self._features(reference)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.extract(x[i : i + 256]) for i in range(0, x.shape[0], 256)])

    def __call__(self, x: torch.Tensor) -> dict[str, float | None]:
        feats = self._features(x)
        out: dict[str, float | None] = {"fid": frechet_distance(self.reference, feats), "kid": None, "kid_std": None}
        if (size := min(1000, feats.shape[0] // 2, self.reference.shape[0] // 2)) >= 2:
            out["kid"], out["kid_std"] = kernel_distance(self.reference, feats, subset_size=size)
        if self.labels is not None:
            with torch.no_grad():
                out["ca"] = classifier_accuracy(self.head(feats), self.labels[: feats.shape[0]])
        return out


def classifier_scores(reference: torch.Tensor, labels: torch.Tensor | None = None) -> FeatureScores:
    """:class:`FeatureScores` in the shipped Fashion-MNIST classifier's 64-d penultimate features (CA with labels);
    reference: (N, 1, 32, 32) in [-1, 1]."""
    from pgdm.classifier import load_classifier

    net = load_classifier()
    return FeatureScores(lambda x: net.features(x.float().cpu()), reference, labels, None if labels is None else net.head)


def inception_unavailable(weights: str | Path | None) -> str | None:
    """None when Inception FID/KID can run from the local ``weights`` file, else the one-line reason they are left out."""
    if weights is None:
        return f"Inception FID/KID left out: pass the local FID Inception weights ({INCEPTION_WEIGHTS_FILE}) to compute them (never downloaded at run time)"
    if not Path(weights).is_file():
        return f"Inception FID/KID left out: weights file {weights} not found (expected the FID Inception weights, {INCEPTION_WEIGHTS_FILE})"
    if importlib.util.find_spec("torch_fidelity") is None:
        return "Inception FID/KID left out: torchmetrics' Inception network needs torch-fidelity (pip install torch-fidelity)"
    return None


def inception_scores(reference: torch.Tensor, weights: str | Path) -> FeatureScores:
    """:class:`FeatureScores` in the 2048-d pool features of torchmetrics' FID Inception network loaded from the
    local file ``weights`` (:func:`inception_unavailable` says whether it can run); reference: (N, C, H, W) in
    [-1, 1], C = 1 or 3 (grayscale is repeated to RGB). Images go in as uint8 RGB, as FID's Inception expects."""
    if (reason := inception_unavailable(weights)) is not None:
        raise ValueError(reason)
    from torchmetrics.image.fid import NoTrainInceptionV3

    net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(weights))
    to_uint8 = lambda x: (_unit(x) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)  # noqa: E731  (B, 3, H, W)
    return FeatureScores(lambda x: net(to_uint8(x)).reshape(x.shape[0], -1), reference)


def _features(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) and (M, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    return a.detach().double().cpu(), b.detach().double().cpu()


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.detach().double().cpu() + 1) / 2).clamp(0, 1)
