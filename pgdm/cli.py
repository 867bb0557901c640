"""The ``pgdm`` command line: ``restore``, ``degrade``, ``demo``, ``train``, ``convert``."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from pgdm.engine import StepCompileError, restorer

from . import train as train_cmd
from .bench import add_parser as add_bench_parser
from .io import fit_size, list_images, read_image, write_image
from .measurements import mask_path_for, read_measurement, write_measurement
from .metrics import psnr, ssim
from .operators import GaussianNoise, Operator, parse, spec_help

DEMO_IMAGES = Path(__file__).parent / "assets" / "demo"
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Item:
    """One image to restore."""

    name: str
    seed: int
    op: Operator
    y: torch.Tensor  # (1, …)
    reference: torch.Tensor | None  # (1, C, H, W) clean image when known


def _write_json_atomic(obj, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def _make_restorer(args, denoiser):
    if args.backend == "eager" and not args.channels_last:
        from .sampler import Restorer

        return Restorer(denoiser, steps=args.steps, eta=args.eta, start_step=args.start_step)
    return restorer(
        denoiser, backend=args.backend, steps=args.steps, eta=args.eta, start_step=args.start_step, channels_last=args.channels_last
    )


def _prepare(path: Path, index: int, args, template: Operator, shape: tuple[int, int, int]) -> Item:
    seed = args.seed + index
    if args.simulate:
        x = fit_size(read_image(path, shape[0]), shape[1:], args.fit)
        y = template(x)
        if args.sigma_y > 0:
            y = GaussianNoise(args.sigma_y, seed=seed)(y)
        return Item(path.stem, seed, template, y, x)
    op, y = read_measurement(template, path, shape, mask=args.mask, fit=args.fit)
    return Item(path.stem, seed, op, y, None)


def _grid(rows: list[torch.Tensor]) -> torch.Tensor:
    """Stack rows of (C, H, W) panels into one (C, H·rows, W·cols) image with 2-pixel white gutters."""
    pad = lambda t: torch.nn.functional.pad(t, (2, 2, 2, 2), value=1.0)  # noqa: E731
    channels = max(p.shape[0] for row in rows for p in row)
    return torch.cat([torch.cat([pad(p.expand(channels, -1, -1)) for p in row], dim=2) for row in rows], dim=1)


def restore_files(args) -> int:
    """``pgdm restore``: returns the exit code (1 if any input failed)."""
    from .models import load_model

    device = torch.device(args.device)
    denoiser = load_model(args.model, config=args.config, device=device, dtype=DTYPES[args.dtype])
    size = denoiser.image_size or args.size
    if size is None:
        raise SystemExit("this model has no fixed image size: pass --size")
    shape = (denoiser.channels, size, size)
    template = parse(args.task, shape, seed=args.seed)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() and not args.overwrite else {}

    items, failures, skipped = [], [], 0
    paths = list_images(args.inputs)
    masks = {mask_path_for(p) for p in paths}  # inpainting masks written by `pgdm degrade` beside their images
    for index, path in enumerate(p for p in paths if p not in masks):
        if (out / f"{path.stem}.png").exists() and not args.overwrite:
            skipped += 1
            continue
        try:
            items.append(_prepare(path, index, args, template, shape))
        except (ValueError, OSError) as err:
            failures.append(str(err))
            print(f"error: {err}", file=sys.stderr)

    restorer = _make_restorer(args, denoiser)
    groups: dict[int, list[Item]] = {}
    for item in items:
        groups.setdefault(id(item.op), []).append(item)
    batches = [g[i : i + args.batch_size] for g in groups.values() for i in range(0, len(g), args.batch_size)]
    grid_rows = []
    image_bar = tqdm(total=len(items), desc="images", unit="img", disable=args.quiet)
    for batch in batches:
        op = batch[0].op.to(device)
        y = torch.cat([it.y for it in batch]).to(device)
        step_bar = tqdm(total=args.steps, desc="steps", leave=False, disable=args.quiet)
        start = time.perf_counter()
        result = restorer.restore(
            y,
            op,
            sigma_y=args.sigma_y,
            seed=[it.seed for it in batch],
            class_labels=args.class_label,
            num_samples=args.num_samples,
            return_std=args.num_samples > 1,
            callback=lambda _: step_bar.update(1),
        )
        seconds = (time.perf_counter() - start) / len(batch)
        step_bar.close()
        x, std = result if args.num_samples > 1 else (result, None)
        residual = (op(x) - y).flatten(1).norm(dim=1) / (y[0].numel() ** 0.5)  # RMS of h(x̂) − y
        baseline = op.pinv(y).clamp(-1, 1)
        for i, it in enumerate(batch):
            if std is not None:
                write_image(std[i] / std[i].max().clamp_min(1e-8) * 2 - 1, out / f"{it.name}_std.png")
            entry = {"seconds": round(seconds, 4), "consistency_rms": float(residual[i]), "seed": it.seed}
            if it.reference is not None:
                ref = it.reference.to(device)
                entry |= {
                    "psnr": float(psnr(x[i : i + 1], ref)[0]),
                    "ssim": float(ssim(x[i : i + 1], ref)[0]),
                    "pinv_psnr": float(psnr(baseline[i : i + 1], ref)[0]),
                    "pinv_ssim": float(ssim(baseline[i : i + 1], ref)[0]),
                }
            metrics[it.name] = entry
            _write_json_atomic(metrics, metrics_path)
            write_image(x[i], out / f"{it.name}.png")  # last: an existing output means this image is complete
            panels = [baseline[i].cpu(), x[i].cpu()] + ([it.reference[0]] if it.reference is not None else [])
            grid_rows.append(panels)
        image_bar.update(len(batch))
    image_bar.close()
    if args.grid and grid_rows:
        write_image(_grid(grid_rows), args.grid)
    print(f"restored {len(items)} image(s), skipped {skipped} already done, {len(failures)} failed; outputs in {out}")
    for message in failures:
        print(f"  failed: {message}", file=sys.stderr)
    return 1 if failures else 0


def degrade_files(args) -> int:
    """``pgdm degrade``: write measurement files that ``pgdm restore`` reads back."""
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for index, path in enumerate(list_images(args.inputs)):
        try:
            x = read_image(path, 1 if args.gray else 3)
            if args.size:
                x = fit_size(x, (args.size, args.size), args.fit or "resize")
            op = parse(args.task, tuple(x.shape[1:]), seed=args.seed)
            y = op(x)
            if args.sigma_y > 0:
                if not op.linear:
                    raise ValueError(f"--sigma-y needs a linear task, but {args.task} is non-linear")
                y = GaussianNoise(args.sigma_y, seed=args.seed + index)(y)
            written = write_measurement(op, x, y, out / path.stem)
            print(" ".join(str(p) for p in written))
        except (ValueError, OSError) as err:
            failures += 1
            print(f"error: {err}", file=sys.stderr)
    return 1 if failures else 0


DEMO_TASKS = [
    ("sr4", 0.0, "super-resolution ×4 (average pooling)"),
    ("inpaint-center", 0.0, "centre 16×16 box inpainting"),
    ("jpeg10", 0.0, "JPEG quality 10"),
    ("blur-uniform9", 0.0, "uniform 9×9 deblurring"),
    ("sr2+inpaint-center+jpeg25", 0.0, "composed: SR×2, a centre hole, then JPEG 25"),
    ("inpaint-random0.5", 0.05, "noisy inpainting: half the pixels, σ_y = 0.05"),
]


def demo(args) -> int:
    """``pgdm demo``: the default model on the bundled test images, several tasks, grids and a PSNR table."""
    out = Path(args.output)
    rows = []
    for task, sigma, title in DEMO_TASKS:
        name = task.replace("+", "_")
        argv = ["restore", task, str(DEMO_IMAGES), "-o", str(out / name), "--simulate", "--steps", str(args.steps),
                "--sigma-y", str(sigma), "--grid", str(out / f"{name}_grid.png"), "--overwrite", "--quiet",
                "--device", args.device, "--batch-size", "16"]  # fmt: skip
        code = main(argv)
        if code:
            return code
        m = json.loads((out / name / "metrics.json").read_text())
        mean = lambda k: sum(v[k] for v in m.values()) / len(m)  # noqa: E731
        rows.append((title, mean("pinv_psnr"), mean("psnr"), mean("seconds")))
    print(f"\n{'task':48s} {'h†(y) PSNR':>11s} {'ΠGDM PSNR':>10s} {'s/img':>7s}")
    for title, base, ours, sec in rows:
        print(f"{title:48s} {base:11.2f} {ours:10.2f} {sec:7.2f}")
    print(f"\ngrids (input h†(y) | restored | clean) in {out}/")
    return 0


def _add_restore_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="'default', a checkpoint (.pt/.safetensors) or a diffusers folder")
    p.add_argument("--config", help="model preset name when it cannot be inferred (e.g. 256x256_diffusion_uncond)")
    p.add_argument("--steps", type=int, default=100, help="sampling steps (default: %(default)s)")
    p.add_argument("--eta", type=float, default=1.0, help="DDIM η in [0, 1] (default: %(default)s)")
    p.add_argument("--sigma-y", type=float, default=0.0, help="measurement noise std on the [0, 1] pixel scale")
    p.add_argument("--start-step", type=int, help="start from h†(y) noised to this timestep (SDEdit)")
    p.add_argument("--seed", type=int, default=0, help="image i of the input list uses seed + i (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="images restored together (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="network precision (default: %(default)s)")
    p.add_argument("--backend", choices=["eager", "compile", "cudagraph"], default="eager", help="execution backend")
    p.add_argument("--channels-last", action="store_true", help="run the network in NHWC layout (pgdm.engine; fastest on CPU with bfloat16)")
    p.add_argument("--class-label", type=int, help="class label for class-conditional models")
    p.add_argument("--num-samples", type=int, default=1, help="average this many posterior samples; also writes NAME_std.png")
    p.add_argument("--size", type=int, help="image size for models without a fixed one")
    p.add_argument("--mask", type=Path, help="inpainting mask image (white = observed)")
    p.add_argument("--simulate", action="store_true", help="inputs are clean images: degrade with TASK, restore, report metrics")
    p.add_argument("--grid", type=Path, help="write a comparison grid (h†(y) | restored | reference) to this PNG")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    fit = p.add_mutually_exclusive_group()
    fit.add_argument("--resize", dest="fit", action="store_const", const="resize", help="resize inputs to the needed size")
    fit.add_argument("--crop", dest="fit", action="store_const", const="crop", help="centre-crop inputs to the needed size")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="pgdm",
        description="Pseudoinverse-guided diffusion models (ΠGDM) for image restoration.",
        epilog="examples:\n  pgdm demo\n  pgdm degrade sr4 photo.png -o degraded/\n  pgdm restore sr4 degraded/ -o restored/",
        formatter_class=raw,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tasks = "TASK is an operator spec, operators joined by '+' in the order applied:\n" + spec_help()

    p = sub.add_parser("restore", help="restore degraded images", formatter_class=raw, description="Restore degraded image files with ΠGDM.",
                       epilog=tasks + "\n\nexamples:\n  pgdm restore sr4 low_res/ -o out/ --steps 100\n"
                       "  pgdm restore jpeg photo.jpg -o out/\n  pgdm restore inpaint-center img.png --mask mask.png -o out/\n"
                       "  pgdm restore denoise noisy.png --sigma-y 0.05 -o out/\n"
                       "  pgdm restore sr4 clean/ -o out/ --simulate --num-samples 8 --grid out/grid.png")  # fmt: skip
    p.add_argument("task", help="operator spec, e.g. sr4, jpeg10, inpaint-center, blur-uniform9, sr4+jpeg10")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("-o", "--output", required=True, help="output folder (one PNG per input, metrics.json)")
    _add_restore_options(p)
    p.set_defaults(run=restore_files)

    p = sub.add_parser("degrade", help="write measurements of clean images", formatter_class=raw,
                       description="Degrade clean images with TASK and write the measurements as files `pgdm restore` reads.",
                       epilog=tasks + "\n\nexamples:\n  pgdm degrade sr4 photos/ -o low_res/\n  pgdm degrade jpeg10 photo.png -o jpg/\n"
                       "  pgdm degrade inpaint-freeform photo.png -o holes/   # writes photo.png and photo_mask.png")  # fmt: skip
    p.add_argument("task")
    p.add_argument("inputs", nargs="+", help="clean image files or folders")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--sigma-y", type=float, default=0.0, help="add Gaussian noise of this std on the [0, 1] scale")
    p.add_argument("--seed", type=int, default=0, help="seed for masks, kernels and noise")
    p.add_argument("--gray", action="store_true", help="read images as grayscale")
    p.add_argument("--size", type=int, help="resize (or --crop) images to SIZE×SIZE first")
    fit = p.add_mutually_exclusive_group()
    fit.add_argument("--crop", dest="fit", action="store_const", const="crop", help="centre-crop instead of resizing to --size")
    p.set_defaults(run=degrade_files, fit=None)

    p = sub.add_parser("demo", help="run the default model on bundled test images", formatter_class=raw,
                       description="Restore the bundled Fashion-MNIST test images under several tasks with the default model.",
                       epilog="example:\n  pgdm demo -o demo_out --steps 100")  # fmt: skip
    p.add_argument("-o", "--output", default="demo_out", help="output folder (default: %(default)s)")
    p.add_argument("--steps", type=int, default=100, help="sampling steps (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.set_defaults(run=demo)

    p = sub.add_parser("train", help="train the default-model architecture on Fashion-MNIST", formatter_class=raw,
                       description="Train an ADM ε-prediction model on Fashion-MNIST (resumable).",
                       epilog="example:\n  pgdm train --steps 20000 --out runs/fashion32 --export model.safetensors")  # fmt: skip
    train_cmd.add_arguments(p)
    p.set_defaults(run=train_cmd.run)

    p = sub.add_parser("convert", help="convert a .pt checkpoint to safetensors + JSON config", formatter_class=raw,
                       description="Convert a guided-diffusion .pt checkpoint to .safetensors with its JSON config beside it.",
                       epilog="example:\n  pgdm convert 256x256_diffusion_uncond.pt adm256.safetensors")  # fmt: skip
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--config", help="preset name when the layout is ambiguous")
    p.set_defaults(run=_convert)

    p = sub.add_parser("export", help="export the whole ΠGDM step for one task to ONNX", formatter_class=raw,
                       description="Write the ΠGDM step (network + input-only VJP + h, h† + update) for TASK as an ONNX graph\n"
                       "with static shapes, load it in ONNX Runtime, and print its inputs (needs pip install 'pgdm[onnx]').",
                       epilog=tasks + "\n\nexample:\n  pgdm export sr4 -o sr4_b8.onnx --batch-size 8\n"
                       "  trtexec --onnx=sr4_b8.onnx   # a TensorRT engine from it (not tested here)")  # fmt: skip
    p.add_argument("task", help="operator spec (its parameters become constants of the graph)")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--model", default="default", help="'default', a checkpoint (.pt/.safetensors) or a diffusers folder")
    p.add_argument("--config", help="model preset name when it cannot be inferred")
    p.add_argument("--batch-size", type=int, default=1, help="the graph's batch size (default: %(default)s)")
    p.add_argument("--noisy", action="store_true", help="take per-image sigma_y2 (the noisy guidance)")
    p.add_argument("--seed", type=int, default=0, help="seed for random masks and kernels in TASK")
    p.set_defaults(run=_export)
    add_bench_parser(sub)
    return parser


def _export(args) -> int:
    from pgdm.export import OnnxStepRestorer, export_step

    from .models import load_model

    denoiser = load_model(args.model, config=args.config)
    if denoiser.image_size is None:
        raise ValueError("export needs a model with a fixed image size")
    op = parse(args.task, (denoiser.channels, denoiser.image_size, denoiser.image_size), seed=args.seed)
    path = export_step(denoiser, op, args.output, args.batch_size, noisy=args.noisy)
    names = OnnxStepRestorer(path).names  # loads the graph in ONNX Runtime: a broken file fails here
    print(f"wrote {path}: batch {args.batch_size}, inputs {', '.join(names)}; outputs x_next, x0")
    return 0


def _convert(args) -> int:
    from .models import convert_checkpoint

    cfg = convert_checkpoint(args.src, args.dst, config=args.config)
    print(f"wrote {args.dst} and {Path(args.dst).with_suffix('.json')} ({cfg.name or cfg.architecture})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, StepCompileError) as err:
        print(f"pgdm {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
