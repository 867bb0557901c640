"""LPIPS from a local AlexNet file (pgdm.lpips) against a float64 computation written out layer by layer."""
import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchmetrics

from pgdm.entrypoints.cli import main
from pgdm.lpips import ALEXNET_WEIGHTS_FILE, LPIPS, lpips_unavailable

# torchvision's AlexNet: (out, in, kernel, stride, padding) of features.0/3/6/8/10
CONVS = {0: (64, 3, 11, 4, 2), 3: (192, 64, 5, 1, 2), 6: (384, 192, 3, 1, 1), 8: (256, 384, 3, 1, 1), 10: (256, 256, 3, 1, 1)}


@pytest.fixture
def alexnet_file(tmp_path) -> Path:
    """Random weights in torchvision's AlexNet layout, classifier included (LPIPS ignores it)."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for i, (out, inp, k, _, _) in CONVS.items():
        state[f"features.{i}.weight"] = torch.randn(out, inp, k, k, generator=gen) * (2 / (inp * k * k)) ** 0.5
        state[f"features.{i}.bias"] = torch.randn(out, generator=gen) * 0.1
    state["classifier.1.weight"] = torch.randn(4096, 9216, generator=gen)[:8]  # any shape: not loaded
    path = tmp_path / ALEXNET_WEIGHTS_FILE
    torch.save(state, path)
    return path


def reference_lpips(x, ref, state):
    """LPIPS written out in float64: scale, the five conv+ReLU taps (pooling after the first two), unit-normalise
    over channels, squared difference weighted by torchmetrics' linear layers, mean over space, sum."""
    lin = torch.load(Path(torchmetrics.__file__).parent / "functional/image/lpips_models/alex.pth", map_location="cpu", weights_only=True)
    shift = torch.tensor([-0.030, -0.088, -0.188]).double()[:, None, None]  # LPIPS's float32 constants
    scale = torch.tensor([0.458, 0.448, 0.450]).double()[:, None, None]
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    feats = [(v.double().expand(-1, 3, -1, -1) - shift) / scale for v in (x, ref)]
    for k, (i, (_, _, _, stride, pad)) in enumerate(CONVS.items()):
        w, b = state[f"features.{i}.weight"].double(), state[f"features.{i}.bias"].double()
        feats = [F.relu(F.conv2d(f, w, b, stride=stride, padding=pad)) for f in feats]
        a, c = (f / torch.sqrt(f.pow(2).sum(1, keepdim=True) + 1e-8) for f in feats)
        total += ((a - c) ** 2 * lin[f"lin{k}.model.1.weight"].double().view(1, -1, 1, 1)).sum(1).mean((1, 2))
        if k < 2:
            feats = [F.max_pool2d(f, 3, 2) for f in feats]
    return total


def test_lpips_matches_the_layer_by_layer_reference(alexnet_file):
    gen = torch.Generator().manual_seed(1)
    x, ref = (torch.rand(3, 3, 40, 36, generator=gen) * 2 - 1 for _ in range(2))
    net = LPIPS(alexnet_file).double()
    want = reference_lpips(x, ref, torch.load(alexnet_file, weights_only=True))
    got = net(x.double(), ref.double())
    assert got.shape == (3,) and bool((want > 0).all())
    assert torch.allclose(got, want, rtol=1e-10, atol=0)
    assert torch.allclose(LPIPS(alexnet_file)(x, ref).double(), want, rtol=1e-4, atol=0)  # float32
    assert float(net(x.double(), x.double()).abs().max()) == 0.0
    gray = x[:, :1]
    assert torch.equal(net(gray, ref[:, :1]), net(gray.expand(-1, 3, -1, -1), ref[:, :1].expand(-1, 3, -1, -1)))


def test_lpips_left_out_or_refused_in_one_line(alexnet_file, tmp_path):
    assert ALEXNET_WEIGHTS_FILE in lpips_unavailable(None) and "never downloaded" in lpips_unavailable(None)
    assert "not found" in lpips_unavailable(tmp_path / "missing.pth")
    assert lpips_unavailable(alexnet_file) is None
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not torchvision's AlexNet state dict") as e:
        LPIPS(tmp_path / "other.pth")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"H ≥ 31"):
        LPIPS(alexnet_file)(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16))


def test_bench_quality_reports_lpips_from_the_given_file(alexnet_file, tmp_path):
    out = tmp_path / "bench"
    args = ["bench", "quality", "--methods", "ddnm", "--steps", "2", "--tasks", "sr4", "--sigma-y", "0", "--n", "2",
            "--batch-size", "2", "--lpips-weights", str(alexnet_file), "-o", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    with (out / "results.csv").open() as f:
        row = next(csv.DictReader(f))
    assert row["status"] == "ok" and float(row["lpips"]) > 0
    assert "LPIPS left out" not in (out / "results.md").read_text()

