"""Throughput of the non-linear and Fourier operators' hot paths.

* JPEG h†∘h at 256×256, batch 1/16/64, quality 10, 4:2:0: pgdm's torch reference, pgdm's fused Triton
  kernel (CUDA), kornia's differentiable JPEG and Pillow encode+decode (CPU, one image at a time).
  On CUDA the Triton row also reports effective bandwidth (read x + write h†(h(x))) against the
  device's peak HBM bandwidth; the target is ≥ 70 %.
* Blur pinv's Fourier-domain filter, X̂·conj(K̂)/(|K̂|²+λ) with cutoff: a straightforward torch version
  (gain tensor, then multiply) against ``spectral_filter`` (reference and Triton), complex64.

Timing: ``triton.testing.do_bench`` (CUDA events, median and 20/80 % quantiles) on CUDA; on CPU
``time.perf_counter`` around each call after warm-up calls, same quantiles. Run:
    OMP_NUM_THREADS=1 python benchmarks/bench_ops.py [--device cpu|cuda] [--batches 1 16 64] [--csv out.csv]
Never collected by pytest.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from typing import Callable

import numpy as np
import torch
from timing import time_ms

from pgdm.kernels.jpeg_codec import islow_matrices, jpeg_roundtrip_reference, jpeg_roundtrip_triton
from pgdm.kernels.spectral_filter import spectral_filter_reference, spectral_filter_triton
from pgdm.operators import quality_tables

# Peak HBM bandwidth by device-name fragment, GB/s (vendor data sheets).
PEAK_GBS = {"H200": 4800.0, "H100 SXM": 3350.0, "H100 PCIe": 2000.0, "H100": 3350.0, "A100-SXM4-80GB": 2039.0, "A100": 1555.0}


def pillow_roundtrip(x: torch.Tensor, tables: list[list[int]]) -> torch.Tensor:
    from PIL import Image

    out = []
    for img in torch.floor(x * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy():
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", qtables=tables, subsampling=2)
        out.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 127.5 - 1


def jpeg_rows(device: str, batches: list[int], size: int, quality: int, reps: int, warmup: int) -> list[dict]:
    qt = quality_tables(quality)[[0, 1, 1]].to(device)
    dct = islow_matrices().to(device)
    rows = []
    for batch in batches:
        x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
        candidates: dict[str, Callable[[], object]] = {"pgdm torch reference": lambda: jpeg_roundtrip_reference(x, qt, dct, (2, 2))}
        if device == "cuda":
            candidates["pgdm Triton (fused, 1 launch)"] = lambda: jpeg_roundtrip_triton(x, qt, dct, (2, 2))
        try:
            import kornia.enhance

            q = torch.full((batch,), float(quality), device=device)
            x01 = (x + 1) / 2
            candidates["kornia jpeg_codec_differentiable"] = lambda: kornia.enhance.jpeg_codec_differentiable(x01, q)
        except ImportError:
            pass
        if device == "cpu":
            tables = [t.flatten().tolist() for t in qt[:2].cpu()]
            candidates["Pillow save+load (libjpeg-turbo)"] = lambda: pillow_roundtrip(x, tables)
        for name, fn in candidates.items():
            med, lo, hi = time_ms(fn, device, reps, warmup)
            row = dict(op=f"JPEG h†∘h q{quality} 4:2:0", impl=name, batch=batch, size=f"{size}x{size}", ms=med, ms_p20=lo, ms_p80=hi, images_per_s=batch / med * 1e3)
            if "Triton" in name:
                gbs = 2 * x.numel() * x.element_size() / (med * 1e-3) / 1e9
                peak = next((v for k, v in PEAK_GBS.items() if k in torch.cuda.get_device_name()), float("nan"))
                row.update(gbs=gbs, pct_peak=100 * gbs / peak)
            rows.append(row)
    return rows


def blur_rows(device: str, batches: list[int], size: int, reps: int, warmup: int) -> list[dict]:
    rows = []
    kernel = torch.zeros(size, size, device=device)
    kernel[:9, :9] = 1 / 81
    k_hat = torch.fft.rfft2(kernel)
    cutoff = 1e-3 * k_hat.abs().max()

    def straightforward(v_hat: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        power = k_hat.real.square() + k_hat.imag.square()
        lam4 = lam.view(-1, 1, 1, 1)
        keep = (power.sqrt() > cutoff) | (lam4 > 0)
        gain = torch.where(keep, k_hat.conj() / (power + lam4), torch.zeros_like(k_hat))
        return v_hat * gain

    for batch in batches:
        v_hat = torch.fft.rfft2(torch.randn(batch, 3, size, size, device=device))
        lam = torch.full((batch,), 0.01, device=device)
        candidates = {
            "torch straightforward (gain tensor, multiply)": lambda: straightforward(v_hat, lam),
            "pgdm spectral_filter reference": lambda: spectral_filter_reference(v_hat, k_hat, lam, cutoff),
        }
        if device == "cuda":
            candidates["pgdm spectral_filter Triton (fused)"] = lambda: spectral_filter_triton(v_hat, k_hat, lam, cutoff)
        for name, fn in candidates.items():
            med, lo, hi = time_ms(fn, device, reps, warmup)
            row = dict(op="blur pinv spectral filter", impl=name, batch=batch, size=f"{size}x{size}", ms=med, ms_p20=lo, ms_p80=hi, images_per_s=batch / med * 1e3)
            if device == "cuda":
                gbs = 2 * v_hat.numel() * v_hat.element_size() / (med * 1e-3) / 1e9
                row.update(gbs=gbs)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--quality", type=int, default=10)
    p.add_argument("--reps", type=int, default=None, help="timed calls (CPU default 5, CUDA do_bench default)")
    p.add_argument("--csv", default=None, help="also write the rows to this CSV file")
    args = p.parse_args(argv)
    reps = args.reps or (5 if args.device == "cpu" else 100)
    warmup = 1 if args.device == "cpu" else 25
    rows = jpeg_rows(args.device, args.batches, args.size, args.quality, reps, warmup)
    rows += blur_rows(args.device, args.batches, args.size, reps, warmup)
    timer = "triton.testing.do_bench" if args.device == "cuda" else f"time.perf_counter, {warmup} warm-up + {reps} timed calls"
    dev = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"# {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}, timing: {timer}")
    print("| op | implementation | batch | size | ms (median) | ms p20–p80 | images/s | GB/s | % peak HBM |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        gbs = f"{r['gbs']:.0f}" if "gbs" in r else "–"
        pct = f"{r['pct_peak']:.0f}" if "pct_peak" in r else "–"
        print(f"| {r['op']} | {r['impl']} | {r['batch']} | {r['size']} | {r['ms']:.3f} | {r['ms_p20']:.3f}–{r['ms_p80']:.3f} | {r['images_per_s']:.1f} | {gbs} | {pct} |")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
            writer.writeheader()
            writer.writerows(rows)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
