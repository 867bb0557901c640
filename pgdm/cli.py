"""The ``pgdm`` command line: ``restore``, ``degrade``, ``demo``, ``train``, ``convert``, ``export``, ``serve``."""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from pgdm.engine import StepCompileError, restorer

from . import serve
from . import train as train_cmd
from .grids import measurement_view, write_grid
from .bench import add_parser as add_bench_parser
from .io import fit_size, list_images, read_image, write_image
from .measurements import last_operator, measurement_files, read_measurement, write_measurement
from .metrics import consistency_rms, psnr, ssim
from .operators import GaussianNoise, Inpaint, Operator, parse, spec_help
from .outputs import MetricsFile, OutputFolder, output_names
from .sampler import NonFiniteError

DEMO_IMAGES = Path(__file__).parent / "assets" / "demo"
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Item:
    """One image to restore."""

    name: str
    path: Path
    seed: int
    op: Operator
    y: torch.Tensor  # (1, …)
    reference: torch.Tensor | None  # (1, C, H, W) clean image when known


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 1, got {value}")
    return value


def sigma_value(text: str) -> float:
    """argparse type: σ_y, a finite float ≥ 0 on the [0, 1] pixel scale."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite std ≥ 0 on the [0, 1] pixel scale (e.g. 0.05), got {text}")
    return value


def parse_device(name: str) -> torch.device:
    """``--device`` as a torch device that exists on this machine, or a one-line ValueError."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; expected cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    return device


def _make_restorer(args, denoiser, batch: int):
    if args.backend == "eager" and not args.channels_last:
        from .sampler import Restorer

        return Restorer(denoiser, steps=args.steps, eta=args.eta, start_step=args.start_step)
    # one compiled/captured batch size: the last, smaller batch is padded to it instead of compiling again
    return restorer(
        denoiser, backend=args.backend, steps=args.steps, eta=args.eta, start_step=args.start_step,
        channels_last=args.channels_last, batch_sizes=(batch,),
    )  # fmt: skip


def _prepare(path: Path, name: str, index: int, args, template: Operator, shape: tuple[int, int, int], notes: list[str]) -> Item:
    seed = args.seed + index
    if args.simulate:
        x = read_image(path, shape[0], to_gray=args.gray, notes=notes)
        h, w = x.shape[-2:]
        x = fit_size(x, shape[1:], args.fit, str(path))
        if (h, w) != tuple(shape[1:]):
            notes.append(f"{path}: {h}x{w} {'resized' if args.fit == 'resize' else 'centre-cropped'} to the model's {shape[1]}x{shape[2]}")
        y = template(x)
        if args.sigma_y > 0:
            y = GaussianNoise(args.sigma_y, seed=seed)(y)
        return Item(name, path, seed, template, y, x)
    op, y = read_measurement(template, path, shape, mask=args.mask, fit=args.fit, to_gray=args.gray, notes=notes)
    return Item(name, path, seed, op, y, None)


def _images_without_masks(paths: list[Path], template: Operator, simulate: bool) -> list[Path]:
    """The images to restore: for an inpainting task on measurement files, ``X_mask.png`` beside an input ``X.*``
    is X's mask, not an image; for every other task each file is an image."""
    if simulate or not isinstance(last_operator(template), Inpaint):
        return paths
    stems = {(p.parent, p.stem) for p in paths}
    return [p for p in paths if not (p.stem.endswith("_mask") and (p.parent, p.stem[: -len("_mask")]) in stems)]


def _model_files(model: str) -> list[Path]:
    path = Path(model)
    return [path, path.with_suffix(".json")] if path.exists() else []


def restore_files(args) -> int:
    """``pgdm restore``: returns the exit code (1 if any input failed)."""
    from .models import load_model

    device = parse_device(args.device)
    paths = list_images(args.inputs)
    denoiser = load_model(args.model, config=args.config, device=device, dtype=DTYPES[args.dtype])
    size = denoiser.image_size or args.size
    if size is None:
        raise ValueError("this model has no fixed image size: pass --size")
    shape = (denoiser.channels, size, size)
    template = parse(args.task, shape, seed=args.seed)
    images = _images_without_masks(paths, template, args.simulate)
    names = output_names(images)
    folder = OutputFolder(args.output, [*paths, *([args.mask] if args.mask else []), *_model_files(args.model)])
    targets = {p: folder.path(f"{names[p]}.png") for p in images}
    stds = {p: folder.path(f"{names[p]}_std.png") for p in images} if args.num_samples > 1 else {}
    if args.grid:
        OutputFolder(Path(args.grid).parent, [*paths, *targets.values()]).path(Path(args.grid).name)
    metrics = MetricsFile(folder.path("metrics.json"))

    items, failures, skipped, notes = [], [], 0, []
    for index, path in enumerate(images):
        if targets[path].exists() and not args.overwrite:
            skipped += 1
            continue
        try:
            items.append(_prepare(path, names[path], index, args, template, shape, notes))
        except (ValueError, OSError) as err:
            failures.append(str(err))
            print(f"error: {err}", file=sys.stderr)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)

    groups: dict[int, list[Item]] = {}
    for item in items:
        groups.setdefault(id(item.op), []).append(item)
    batch_size = min(args.batch_size, max((len(g) for g in groups.values()), default=1))
    restorer = _make_restorer(args, denoiser, batch_size)
    batches = [g[i : i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]
    if batches and args.backend != "eager":
        print(f"compiling the step for batches of {batch_size} (first run of this model, task and size: about 1-5 min on a CPU, "
              "less on a GPU; cached for later runs)...", file=sys.stderr, flush=True)  # fmt: skip
    grid_rows, done, psnrs = [], 0, []
    image_bar = tqdm(total=len(items), desc=args.label, unit="img", disable=args.quiet)
    for batch in batches:
        op = batch[0].op.to(device)
        y = torch.cat([it.y for it in batch]).to(device)
        step_bar = tqdm(total=args.steps, desc="steps", leave=False, disable=args.quiet)
        start = time.perf_counter()
        try:
            result = restorer.restore(
                y, op, sigma_y=args.sigma_y, seed=[it.seed for it in batch], class_labels=args.class_label,
                num_samples=args.num_samples, return_std=args.num_samples > 1, callback=lambda _: step_bar.update(1),
            )  # fmt: skip
            bad: set[int] = set()
        except NonFiniteError as err:
            result, bad = err.result, set(err.rows)
        seconds = (time.perf_counter() - start) / len(batch)
        step_bar.close()
        x, std = result if args.num_samples > 1 else (result, None)
        residual = consistency_rms(op, x, y)
        baseline = op.pinv(y).clamp(-1, 1)
        last = last_operator(op)
        entries = {}
        for i, it in enumerate(batch):
            if i in bad:
                failures.append(f"{it.path}: sampling produced NaN/Inf (nothing written)")
                print(f"error: {failures[-1]}", file=sys.stderr)
                continue
            entry = {"seconds": round(seconds, 4), "consistency_rms": float(residual[i]), "seed": it.seed, "sigma_y": args.sigma_y}
            if it.reference is not None:
                ref = it.reference.to(device)
                entry |= {
                    "psnr": float(psnr(x[i : i + 1], ref)[0]),
                    "ssim": float(ssim(x[i : i + 1], ref)[0]),
                    "pinv_psnr": float(psnr(baseline[i : i + 1], ref)[0]),
                    "pinv_ssim": float(ssim(baseline[i : i + 1], ref)[0]),
                }
                psnrs.append(entry["psnr"])
            entries[it.name] = entry
            if args.grid:
                view = measurement_view(y[i : i + 1], last, tuple(x.shape[-2:]))
                grid_rows.append([view.cpu(), baseline[i].cpu(), x[i].cpu()] + ([it.reference[0]] if it.reference is not None else []))
        metrics.update(entries)  # first: an image whose PNG exists is finished and has its entry
        for i, it in enumerate(batch):
            if i in bad:
                continue
            if std is not None:
                write_image(std[i] / std[i].max().clamp_min(1e-8) * 2 - 1, stds[it.path])
            write_image(x[i], targets[it.path])
            done += 1
        image_bar.update(len(batch))
        if psnrs:
            image_bar.set_postfix_str(f"PSNR {sum(psnrs) / len(psnrs):.2f} dB")
    image_bar.close()
    if args.grid and grid_rows:
        write_grid(grid_rows, GRID_LABELS, args.grid)
    print(f"restored {done} image(s), skipped {skipped} already done, {len(failures)} failed; outputs in {folder.folder}")
    for message in failures:
        print(f"  failed: {message}", file=sys.stderr)
    return 1 if failures else 0


GRID_LABELS = ("y (measured)", "pseudo-inverse", "restored", "clean")  # ASCII: the default font has no "†"


def degrade_files(args) -> int:
    """``pgdm degrade``: write measurement files that ``pgdm restore`` reads back."""
    paths = list_images(args.inputs)
    names = output_names(paths)
    folder = OutputFolder(args.output, paths)
    kinds = {}  # one operator per task is enough to know which files a measurement is stored as
    for path in paths:
        if kinds.setdefault("op", _degrade_operator(args, path)) is not None:
            for target in measurement_files(kinds["op"], folder.folder / names[path]):
                folder.path(target.name)  # refuses, before any work, an output that is an input
        else:
            del kinds["op"]
    failures = 0
    for index, path in enumerate(paths):
        try:
            notes: list[str] = []
            x = read_image(path, 1 if args.gray else 3, to_gray=args.gray)
            if args.size:
                x = fit_size(x, (args.size, args.size), args.fit or "resize", str(path))
            op = parse(args.task, tuple(x.shape[1:]), seed=args.seed)
            stem = folder.folder / names[path]
            y = op(x)
            if args.sigma_y > 0:
                if not op.linear:
                    raise ValueError(f"--sigma-y needs a linear task, but {args.task} is non-linear")
                y = GaussianNoise(args.sigma_y, seed=args.seed + index)(y)
            written = write_measurement(op, x, y, stem)
            print(" ".join(str(p) for p in written))
        except (ValueError, OSError) as err:
            failures += 1
            print(f"error: {err}", file=sys.stderr)
    return 1 if failures else 0


def _degrade_operator(args, path: Path) -> Operator | None:
    """The task's operator for ``path``'s size read from its header (None if unreadable: reported later)."""
    try:
        with Image.open(path) as im:
            width, height = im.size
        return parse(args.task, (1 if args.gray else 3, *((args.size,) * 2 if args.size else (height, width))), seed=args.seed)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


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
    for n, (task, sigma, title) in enumerate(DEMO_TASKS, 1):
        name = task.replace("+", "_")
        argv = ["restore", task, str(DEMO_IMAGES), "-o", str(out / name), "--simulate", "--steps", str(args.steps),
                "--sigma-y", str(sigma), "--grid", str(out / f"{name}_grid.png"), "--overwrite",
                "--device", args.device, "--batch-size", "16"] + (["--quiet"] if args.quiet else [])  # fmt: skip
        restore_args = build_parser().parse_args(argv)
        restore_args.label = f"[{n}/{len(DEMO_TASKS)}] {task}"
        code = restore_files(restore_args)
        if code:
            return code
        m = MetricsFile(out / name / "metrics.json").read()
        mean = lambda k: sum(v[k] for v in m.values()) / len(m)  # noqa: E731
        rows.append((title, mean("pinv_psnr"), mean("psnr"), mean("seconds")))
        print(f"[{n}/{len(DEMO_TASKS)}] {title}: h†(y) {rows[-1][1]:.2f} dB → ΠGDM {rows[-1][2]:.2f} dB", flush=True)
    print(f"\n{'task':48s} {'h†(y) PSNR':>11s} {'ΠGDM PSNR':>10s} {'s/img':>7s}")
    for title, base, ours, sec in rows:
        print(f"{title:48s} {base:11.2f} {ours:10.2f} {sec:7.2f}")
    print(f"\ngrids ({' | '.join(GRID_LABELS)}) in {out}/")
    return 0


def _add_restore_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="'default', a checkpoint (.pt/.safetensors) or a diffusers folder")
    p.add_argument("--config", help="model preset name when it cannot be inferred (e.g. 256x256_diffusion_uncond)")
    p.add_argument("--steps", type=positive_int, default=100, help="sampling steps (default: %(default)s)")
    p.add_argument("--eta", type=float, default=1.0, help="DDIM η in [0, 1] (default: %(default)s)")
    p.add_argument("--sigma-y", type=sigma_value, default=0.0, help="measurement noise std on the [0, 1] pixel scale (e.g. 0.05)")
    p.add_argument("--start-step", type=int, help="start from h†(y) noised to this timestep (SDEdit)")
    p.add_argument("--seed", type=int, default=0, help="image i of the input list uses seed + i (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images restored together (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="network precision (default: %(default)s)")
    p.add_argument("--backend", choices=["eager", "compile", "cudagraph"], default="eager", help="execution backend")
    p.add_argument("--channels-last", action="store_true", help="run the network in NHWC layout (pgdm.engine; fastest on CPU with bfloat16)")
    p.add_argument("--class-label", type=int, help="class label for class-conditional models")
    p.add_argument("--num-samples", type=positive_int, default=1, help="average this many posterior samples; also writes NAME_std.png")
    p.add_argument("--size", type=positive_int, help="image size for models without a fixed one")
    p.add_argument("--mask", type=Path, help="inpainting mask image (white = observed, black = missing)")
    p.add_argument("--simulate", action="store_true", help="inputs are clean images: degrade with TASK, restore, report metrics")
    p.add_argument("--grid", type=Path, help="write a labelled comparison grid (y | pseudo-inverse h†(y) | restored | clean) to this PNG")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist (inputs are never overwritten)")
    p.add_argument("--gray", action="store_true", help="convert colour inputs to grayscale for a 1-channel model (announced per file)")
    fit = p.add_mutually_exclusive_group()
    fit.add_argument("--resize", dest="fit", action="store_const", const="resize",
                     help="resize each input so the restored image has the model's size (for srF the measurement to 1/F of it)")  # fmt: skip
    fit.add_argument("--crop", dest="fit", action="store_const", const="crop", help="centre-crop each input to that size instead")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(label="images")


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
    p.add_argument("--sigma-y", type=sigma_value, default=0.0, help="add Gaussian noise of this std on the [0, 1] pixel scale")
    p.add_argument("--seed", type=int, default=0, help="seed for masks, kernels and noise")
    p.add_argument("--gray", action="store_true", help="read images as grayscale")
    p.add_argument("--size", type=positive_int, help="resize (or --crop) images to SIZE×SIZE first")
    fit = p.add_mutually_exclusive_group()
    fit.add_argument("--crop", dest="fit", action="store_const", const="crop", help="centre-crop instead of resizing to --size")
    p.set_defaults(run=degrade_files, fit=None)

    p = sub.add_parser("demo", help="run the default model on bundled test images", formatter_class=raw,
                       description="Restore the bundled Fashion-MNIST test images under several tasks with the default model.",
                       epilog="example:\n  pgdm demo -o demo_out --steps 100")  # fmt: skip
    p.add_argument("-o", "--output", default="demo_out", help="output folder (default: %(default)s)")
    p.add_argument("--steps", type=positive_int, default=100, help="sampling steps (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (the per-task lines are still printed)")
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
                       "  trtexec --onnx=sr4_b8.onnx   # a TensorRT engine from it (TensorRT's own tool)")  # fmt: skip
    p.add_argument("task", help="operator spec (its parameters become constants of the graph)")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--model", default="default", help="'default', a checkpoint (.pt/.safetensors) or a diffusers folder")
    p.add_argument("--config", help="model preset name when it cannot be inferred")
    p.add_argument("--batch-size", type=positive_int, default=1, help="the graph's batch size (default: %(default)s)")
    p.add_argument("--noisy", action="store_true", help="take per-image sigma_y2 (the noisy guidance)")
    p.add_argument("--seed", type=int, default=0, help="seed for random masks and kernels in TASK")
    p.set_defaults(run=_export)

    serve.add_parser(sub)
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
    except (torch.OutOfMemoryError, MemoryError) as err:
        reason = str(err).splitlines()[0] if str(err) else "the allocator refused"
        print(f"pgdm {args.command}: error: out of memory ({reason[:200]}); lower --batch-size or --num-samples", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"pgdm {args.command}: error: {err.strerror or err}{f': {err.filename}' if err.filename else ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pgdm {args.command}: interrupted; finished outputs are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
