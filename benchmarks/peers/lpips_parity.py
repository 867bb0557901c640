"""pgdm's LPIPS (``pgdm.lpips``, AlexNet from a local file) against torchmetrics' own LPIPS network on one backbone.

torchmetrics builds its LPIPS backbone with torchvision (a peer only here, never a dependency of pgdm); the same
AlexNet weights (``--weights FILE``, torchvision's layout; default: torchvision's random initialisation, seeded)
go into both, and the distances of random image pairs and of Fashion-MNIST test pairs are compared.

    OMP_NUM_THREADS=1 python benchmarks/peers/lpips_parity.py --peer-site DIR [--weights alexnet-owt-7be5be79.pth]
"""
from __future__ import annotations

import argparse
import sys
import tempfile

import torch

from pgdm.data import load_fashion_mnist, to_model_range
from pgdm.lpips import LPIPS


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-site", help="a folder put on sys.path for torchvision")
    p.add_argument("--weights", help="torchvision AlexNet weights file (default: a seeded random AlexNet)")
    args = p.parse_args(argv)
    if args.peer_site:
        sys.path.append(args.peer_site)
    from compare_deepinv import import_deepinv  # declares torchvision's fake ops before torchvision is imported

    import_deepinv(None)
    import torchvision
    from torchmetrics.functional.image.lpips import _LPIPS

    torch.manual_seed(0)
    alexnet = torchvision.models.alexnet(weights=None)
    if args.weights:
        alexnet.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    with tempfile.NamedTemporaryFile(suffix=".pth") as f:
        torch.save(alexnet.state_dict(), f.name)
        ours = LPIPS(f.name)
    theirs = _LPIPS(pretrained=True, net="alex", pnet_rand=True).eval()
    # their backbone: slice1 … slice5 holding alexnet.features' modules under their own indices
    theirs.net.load_state_dict({f"{s}.{k}.{p}": v for s, part in theirs.net.named_children() for k in part._modules
                                for p, v in alexnet.features[int(k)].named_parameters()})  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    fm = to_model_range(load_fashion_mnist(split="test", size=32)[:64])
    pairs = {"random RGB 64×64": [torch.rand(16, 3, 64, 64, generator=gen) * 2 - 1 for _ in range(2)],
             "Fashion-MNIST 32×32 (grayscale→RGB)": [fm[:32].expand(-1, 3, -1, -1), fm[32:].expand(-1, 3, -1, -1)]}  # fmt: skip
    print("| pairs | pgdm mean | torchmetrics mean | max abs difference |\n|---|---|---|---|")
    with torch.no_grad():
        for label, (a, b) in pairs.items():
            d_ours, d_theirs = ours(a, b), theirs(a, b).flatten()
            print(f"| {label} | {float(d_ours.mean()):.6f} | {float(d_theirs.mean()):.6f} | {float((d_ours - d_theirs).abs().max()):.2e} |")


if __name__ == "__main__":
    main()
