"""LPIPS (Zhang et al. 2018, the AlexNet variant) from a local backbone file: nothing is downloaded.

LPIPS compares the unit-normalised activations of AlexNet's five ReLU layers, weighs their squared differences
per channel with the published linear layers and averages over space: d(x, x') = Σ_l mean_hw ‖w_l ⊙ (f̂_l(x) −
f̂_l(x'))‖². The linear layers are the ones torchmetrics ships (``lpips_models/alex.pth``); the backbone is
torchvision's ImageNet AlexNet, whose weights the user supplies as a file (:data:`ALEXNET_WEIGHTS_FILE`, a
state dict with torchvision's ``features.*`` keys), so torchvision itself is not needed.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["ALEXNET_WEIGHTS_FILE", "LPIPS", "lpips_unavailable"]

# torchvision's ImageNet AlexNet weights, by their published file name (LPIPS's default backbone).
ALEXNET_WEIGHTS_FILE = "alexnet-owt-7be5be79.pth"
_TAPS = (1, 4, 7, 9, 11)  # indices of the five ReLUs in torchvision's ``alexnet().features``
_SHIFT = (-0.030, -0.088, -0.188)  # LPIPS's input scaling layer, on [-1, 1] RGB
_SCALE = (0.458, 0.448, 0.450)


def lpips_unavailable(weights: str | Path | None) -> str | None:
    """None when LPIPS can run from the local AlexNet ``weights`` file, else the one-line reason it is left out."""
    if weights is None:
        return f"LPIPS left out: pass torchvision's AlexNet weights ({ALEXNET_WEIGHTS_FILE}), a local file, to compute it (never downloaded at run time)"
    if not Path(weights).is_file():
        return f"LPIPS left out: weights file {weights} not found (expected torchvision's AlexNet weights, {ALEXNET_WEIGHTS_FILE})"
    return None


def _alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features`` layout (same module indices, so its state dict loads as it is)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
    )  # fmt: skip


class LPIPS(nn.Module):
    """LPIPS distance with an AlexNet backbone loaded from ``weights`` (a local file, :data:`ALEXNET_WEIGHTS_FILE`).

    ``forward(x, ref)``: x, ref (B, C, H, W) in [-1, 1], C = 1 (repeated to RGB) or 3, H, W ≥ 31 (AlexNet's
    two pooling layers need it) → (B,) float
    distances (0 for identical images). Raises ValueError (one line) for a missing or mismatched weights file.
    """

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        if (reason := lpips_unavailable(weights)) is not None:
            raise ValueError(reason)
        import torchmetrics

        self.features = _alexnet_features()
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        try:
            self.features.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            raise ValueError(f"{weights} is not torchvision's AlexNet state dict (features.0 … features.10): {first}") from None
        lin_path = Path(torchmetrics.__file__).parent / "functional" / "image" / "lpips_models" / "alex.pth"
        lin = torch.load(lin_path, map_location="cpu", weights_only=True)
        self.register_buffer("lin", torch.cat([lin[f"lin{k}.model.1.weight"].flatten() for k in range(len(_TAPS))]), persistent=False)
        self.register_buffer("shift", torch.tensor(_SHIFT)[None, :, None, None], persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE)[None, :, None, None], persistent=False)
        self.requires_grad_(False).eval()

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x.expand(-1, 3, -1, -1) - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                out.append(x / (x.square().sum(1, keepdim=True) + 1e-8).sqrt())
        return out

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if x.shape != ref.shape or x.dim() != 4 or x.shape[1] not in (1, 3) or min(x.shape[-2:]) < 31:
            raise ValueError(f"LPIPS takes two (B, 1 or 3, H ≥ 31, W ≥ 31) image batches of one shape, got {tuple(x.shape)} and {tuple(ref.shape)}")
        x, ref = x.to(self.lin), ref.to(self.lin)
        total, start = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device), 0
        for a, b in zip(self._taps(x.clamp(-1, 1)), self._taps(ref.clamp(-1, 1))):
            w = self.lin[start : start + a.shape[1]]
            start += a.shape[1]
            total = total + torch.einsum("bchw,c->b", (a - b).square(), w) / (a.shape[-2] * a.shape[-1])
        return total
