"""A small Fashion-MNIST classifier, for the paper's classifier accuracy (CA) and for FID/KID in its feature space.

The network sees images in the default model's form: (B, 1, 32, 32) float in [-1, 1], the 28×28 Fashion-MNIST
images padded with black (:func:`pgdm.data.load_fashion_mnist`). Three 3×3 convolutions with ReLU and 2×2
max-pooling (32 → 16 → 8 → 4), 2×2 averages, a 64-wide hidden layer (the penultimate features used for FID and
KID) and a linear layer to the ten class logits; 40 k parameters. The shipped weights
(``pgdm/assets/classifier/fashion32.safetensors``) were trained on the training split only
(``pgdm.entrypoints.train.train_classifier``); their test-split accuracy is in the JSON file beside them.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

__all__ = ["FashionClassifier", "CLASSIFIER_PATH", "FASHION_CLASSES", "load_classifier", "classifier_info"]

CLASSIFIER_PATH = Path(__file__).parent / "assets" / "classifier" / "fashion32.safetensors"
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


class FashionClassifier(nn.Module):
    """Ten-class CNN on (B, 1, 32, 32) images in [-1, 1]; ``features`` gives the 64-wide penultimate layer."""

    feature_dim = 64

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, w, 16, 16)
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 2w, 8, 8)
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 4w, 4, 4)
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),  # (B, 16w): 2×2 means keep a coarse layout
            nn.Linear(16 * w, self.feature_dim), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(self.feature_dim, len(FASHION_CLASSES))
        # divides the features so that their RMS over training images is 1, the scale KID's kernel (u·v/D + 1)³ expects
        self.register_buffer("feature_scale", torch.ones(()))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, 32, 32) in [-1, 1] → (B, 64) penultimate features, RMS about 1 on Fashion-MNIST images."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 32, 32):
            raise ValueError(f"the Fashion-MNIST classifier takes (B, 1, 32, 32) images, got {tuple(x.shape)}")
        return self.body(x.clamp(-1, 1)) / self.feature_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, 32, 32) in [-1, 1] → (B, 10) logits."""
        return self.head(self.features(x) * self.feature_scale)

    @torch.no_grad()
    def set_feature_scale_(self, x: torch.Tensor) -> None:
        """Set ``feature_scale`` to the RMS of the unscaled features of x: (N, 1, 32, 32) in [-1, 1]."""
        self.feature_scale.fill_(1.0)
        self.feature_scale.fill_(float(torch.cat([self.features(x[i : i + 1000]) for i in range(0, x.shape[0], 1000)]).square().mean().sqrt()))


def load_classifier(path: str | Path = CLASSIFIER_PATH) -> FashionClassifier:
    """The classifier from a ``.safetensors`` file (default: the shipped one), in eval mode with frozen weights."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"classifier weights {path} not found; train them with `pgdm train-classifier --export {path}`")
    net = FashionClassifier()
    net.load_state_dict(load_file(str(path)))
    return net.eval().requires_grad_(False)


def classifier_info(path: str | Path = CLASSIFIER_PATH) -> dict:
    """The JSON record beside the weights: training command, data, test accuracy."""
    return json.loads(Path(path).with_suffix(".json").read_text())
