"""The ``pgdm`` command line: ``restore`` (also under torchrun), ``degrade``, ``demo``, ``train``, ``train-classifier``, ``convert``, ``export``, ``serve``."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import pgdm
from pgdm import validate
from pgdm.grids import write_grid
from pgdm.io import fit_size, list_images, open_image_checked, read_image
from pgdm.measurements import measurement_files, write_measurement
from pgdm.methods import METHODS
from pgdm.operators import GaussianNoise, Operator, check_spec, parse, spec_help

from . import distributed
from . import train as train_cmd
from .arguments import add_canvas_options, add_engine_options, add_model_options, canvas_size
from .bench import add_parser as add_bench_parser
from .config import CanvasSettings, EngineSettings, IOSettings, ModelSettings, RestoreJobConfig, TaskSettings, sampler_settings, sigma_y_value
from .outputs import MetricsFile, OutputFolder, output_names
from .progress import progress_bar
from .restore_job import GRID_LABELS, RestoreJob, print_summary
from .serve.cli import add_parser as add_serve_parser

DEMO_IMAGES = pgdm.data.DEMO_DIR
# The photos held out of the photo model's training: 32×32 crops at their own scale, and the whole photos
# (chelsea 300×451, flower 427×640) downscaled by Pillow's antialiased bicubic to 96×144, what `pgdm demo --photos`
# restores (245 s of one CPU core at 20 steps; benchmarks/eval_photo.py restores them at full size).
PHOTO_DEMO_IMAGES = Path(pgdm.__file__).parent / "assets" / "photo_demo"
PHOTO_DEMO_WHOLE = tuple(PHOTO_DEMO_IMAGES / f"{name}.png" for name in pgdm.data.PHOTO_HELD_OUT)


def restore_config(args: argparse.Namespace) -> RestoreJobConfig:
    """The job the ``pgdm restore`` options describe (validated here, once)."""
    return RestoreJobConfig(
        task=TaskSettings(args.task, args.sigma_y, args.seed, args.num_samples, args.class_label, args.mask),
        io=IOSettings(tuple(args.inputs), args.output, args.simulate, args.grid, args.overwrite, args.gray, args.fit, args.quiet, args.label),
        sampler=sampler_settings(args.method, args.steps, args.eta, args.start_step, args.end_on_measurement),
        engine=EngineSettings(args.backend, args.precision, args.channels_last, args.batch_size, args.autotune_budget),
        model=ModelSettings(args.model, args.config, args.size, args.device),
        canvas=CanvasSettings(args.strategy, args.tile, args.overlap),
    )


def restore_files(args: argparse.Namespace) -> int:
    """``pgdm restore``: returns the exit code (1 if any input failed). Under torchrun the ranks share the job."""
    return run_restore(restore_config(args))


def run_restore(config: RestoreJobConfig) -> int:
    """Run ``config`` in this process (or as this rank's share under torchrun); the exit code (1 if any input failed)."""
    if distributed.launched_by_torchrun():
        return distributed.restore(config)
    return _run_job(config)[0]


def _run_job(config: RestoreJobConfig) -> tuple[int, RestoreJob]:
    """Run ``config`` in this process: (the exit code, the job, which holds the grid rows)."""
    job = RestoreJob(config, config.model.torch_device())
    work = job.pending()
    image_bar = progress_bar(len(work), config.io.label, "img", disable=config.io.quiet)

    def advance(count: int) -> None:
        image_bar.update(count)
        if job.psnrs:
            image_bar.set_postfix_str(f"PSNR {sum(job.psnrs) / len(job.psnrs):.2f} dB")

    done = job.restore(work, on_batch=advance)
    image_bar.close()
    job.write_grid()
    print_summary(done, len(job.images) - len(work), job.failures, job.folder.folder)
    return (1 if job.failures else 0), job


def degrade_files(args) -> int:
    """``pgdm degrade``: write measurement files that ``pgdm restore`` reads back."""
    sigma_y = sigma_y_value(args.sigma_y)
    check_spec(args.task)  # a bad task is one error, before any image
    if args.size is not None:
        validate.positive_int("--size", args.size)
    duplicates: list[str] = []
    paths = list_images(args.inputs, duplicates)
    for note in duplicates:
        print(f"note: {note}", file=sys.stderr)
    names = output_names(paths)
    folder = OutputFolder(args.output, paths)
    kinds = {}  # one operator per task is enough to know which files a measurement is stored as
    for path in paths:
        if kinds.setdefault("op", _degrade_operator(args, path)) is not None:
            for target in measurement_files(kinds["op"], folder.folder / names[path]):
                folder.path(target.name)  # refuses, before any work, an output that is an input
        else:
            del kinds["op"]
    if sigma_y > 0 and "op" in kinds and not kinds["op"].linear:
        raise ValueError(f"--sigma-y needs a linear task, but {args.task} is non-linear; drop --sigma-y")
    failures = 0
    for index, path in enumerate(paths):
        try:
            x = read_image(path, 1 if args.gray else 3, to_gray=args.gray)
            if args.size:
                x = fit_size(x, (args.size, args.size), args.fit or "resize", str(path))
            op = _degrade_operator_for(args, path, tuple(x.shape[1:]))
            stem = folder.folder / names[path]
            y = op(x)
            if sigma_y > 0:
                if not op.linear:
                    raise ValueError(f"--sigma-y needs a linear task, but {args.task} is non-linear")
                y = GaussianNoise(sigma_y, seed=args.seed + index)(y)
            written = write_measurement(op, x, y, stem)
            print(" ".join(str(p) for p in written))
        except (ValueError, OSError) as err:
            failures += 1
            print(f"error: {err}", file=sys.stderr)
    return 1 if failures else 0


def _degrade_operator_for(args, path: Path, shape: tuple[int, int, int]) -> Operator:
    """The task's operator for ``path``'s image; an image the task cannot take is named, with the flag that fits it."""
    try:
        return parse(args.task, shape, seed=args.seed)
    except ValueError as err:
        fix = "; pass --size S to resize every image to S×S first (--crop to centre-crop instead)" if not args.size else "; pass another --size"
        raise ValueError(f"{path}: {err}{fix}") from None


def _degrade_operator(args, path: Path) -> Operator | None:
    """The task's operator for ``path``'s size read from its header (None if unreadable: reported later)."""
    try:
        with open_image_checked(path, str(path)) as im:
            width, height = im.size
        return parse(args.task, (1 if args.gray else 3, *((args.size,) * 2 if args.size else (height, width))), seed=args.seed)
    except (OSError, ValueError, SyntaxError):
        return None


DEMO_STEPS = 20
DEMO_TASKS = [
    ("sr4", 0.0, "super-resolution ×4 (average pooling)"),
    ("inpaint-center", 0.0, "centre 16×16 box inpainting"),
    ("jpeg10", 0.0, "JPEG quality 10"),
    ("blur-uniform9", 0.0, "uniform 9×9 deblurring"),
    ("sr2+inpaint-center+jpeg25", 0.0, "composed: SR×2, a centre hole, then JPEG 25"),
    ("inpaint-random0.5", 0.05, "noisy inpainting: half the pixels, σ_y = 0.05"),
]
PHOTO_DEMO_TASKS = [
    ("denoise", 0.1, "denoising, σ_y = 0.1"),
    ("jpeg10", 0.0, "JPEG quality 10"),
    ("sr2-bicubic", 0.0, "super-resolution ×2 (bicubic)"),
    ("inpaint-random0.3", 0.0, "inpainting: 30 % of the pixels missing"),
]
# 32×32 tiles overlapping by 4 pixels restore these photos as well as the default 8 (within 0.1 dB) with 27 % fewer
# tiles (benchmarks/RESULTS.md, "Photo model on whole photos").
PHOTO_DEMO_OVERLAP = 4


def demo(args) -> int:
    """``pgdm demo``: the default model on the bundled test images (``--photos``: the photo model on the whole
    held-out photos, through overlapping 32×32 tiles), several tasks, grids and a PSNR table; with ``--photos``
    also ``grid.png``, one row per task and photo."""
    out = Path(args.output)
    images, tasks, model = (PHOTO_DEMO_WHOLE, PHOTO_DEMO_TASKS, "photo") if args.photos else ((DEMO_IMAGES,), DEMO_TASKS, "default")
    canvas = CanvasSettings(overlap=PHOTO_DEMO_OVERLAP) if args.photos else CanvasSettings()
    rows, grid_rows, row_labels = [], [], []
    started = time.perf_counter()
    for n, (task, sigma, title) in enumerate(tasks, 1):
        name = task.replace("+", "_")
        config = RestoreJobConfig(
            task=TaskSettings(task, sigma),
            io=IOSettings(images, out / name, simulate=True, grid=out / f"{name}_grid.png", overwrite=True,
                          quiet=args.quiet, label=f"[{n}/{len(tasks)}] {task}"),
            sampler=sampler_settings(steps=args.steps),
            engine=EngineSettings("eager", "fp32", batch_size=16),  # a first impression: no measuring or compiling
            model=ModelSettings(model, device=args.device),
            canvas=canvas,
        )  # fmt: skip
        code, job = _run_job(config)
        if code:
            return code
        grid_rows += [job.grid_rows[i] for i in sorted(job.grid_rows)]
        row_labels += [f"{task}, {job.images[i].stem}" for i in sorted(job.grid_rows)]
        m = MetricsFile(out / name / "metrics.json").read()
        mean = lambda k: sum(v[k] for v in m.values()) / len(m)  # noqa: E731
        rows.append((title, mean("pinv_psnr"), mean("psnr"), mean("seconds")))
        elapsed = time.perf_counter() - started
        timing = f"{_duration(elapsed)} so far"
        if n < len(tasks):  # the tasks cost about the same: the first one's time sets the pace
            timing += f", about {_duration(elapsed / n * (len(tasks) - n))} to go"
        print(f"[{n}/{len(tasks)}] {title}: h†(y) {rows[-1][1]:.2f} dB → ΠGDM {rows[-1][2]:.2f} dB ({timing})", flush=True)
    print(f"\n{'task':48s} {'h†(y) PSNR':>11s} {'ΠGDM PSNR':>10s} {'s/img':>7s}")
    for title, base, ours, sec in rows:
        print(f"{title:48s} {base:11.2f} {ours:10.2f} {sec:7.2f}")
    if args.photos:
        write_grid(grid_rows, GRID_LABELS, out / "grid.png", row_labels=row_labels)
    print(f"\ngrids ({' | '.join(GRID_LABELS)}) in {out}/; {args.steps} steps, {_duration(time.perf_counter() - started)} in all")
    return 0


def _duration(seconds: float) -> str:
    """``42 s`` or ``3 min 05 s``."""
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


def _add_restore_options(p: argparse.ArgumentParser) -> None:
    add_model_options(p, default=None)
    p.add_argument("--steps", type=int, default=100, help="sampling steps (default: %(default)s)")
    p.add_argument("--method", choices=sorted(METHODS), default="pigdm", help="restoration method (docs/methods.md; default: %(default)s)")
    p.add_argument("--eta", type=float, help="DDIM η in [0, 1] for the methods that have one (default: the method's, ΠGDM 1.0)")
    p.add_argument("--sigma-y", type=float, default=0.0, help="measurement noise std on the [0, 1] pixel scale (e.g. 0.05)")
    p.add_argument("--start-step", type=int, help="start from h†(y) noised to this timestep (SDEdit) (default: pure noise)")
    p.add_argument("--end-on-measurement", action=argparse.BooleanOptionalAction, default=True,
                   help="after the last step, put the noiseless rows of a linear task exactly on h(x) = y: x + h†(y) − h†(h(x)); "
                   "--no-end-on-measurement gives the literal algorithm (default: on)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="image i of the input list uses seed + i (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="images restored together (default: %(default)s)")
    add_engine_options(p)
    p.add_argument("--class-label", type=int, help="class label for class-conditional models")
    p.add_argument("--num-samples", type=int, default=1, help="average this many posterior samples; also writes NAME_std.png")
    p.add_argument("--size", type=int, help="the model's image size, for models without a fixed one (the size --resize/--crop fit to)")
    add_canvas_options(p)
    p.add_argument("--mask", type=Path, help="inpainting mask image (white = observed, black = missing)")
    p.add_argument("--simulate", action="store_true", help="inputs are clean images: degrade with TASK, restore, report metrics")
    p.add_argument("--grid", type=Path, help="write a labelled comparison grid (y | pseudo-inverse h†(y) | restored | clean) to this PNG")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist (inputs are never overwritten)")
    p.add_argument("--gray", action="store_true", help="convert colour inputs to grayscale for a 1-channel model (announced per file; "
                   "without --model: the default model)")  # fmt: skip
    fit = p.add_mutually_exclusive_group()
    fit.add_argument("--resize", dest="fit", action="store_const", const="resize",
                     help="resize each input so the restored image has the model's size (for srF the measurement to 1/F of it); "
                     "without --resize/--crop every image is restored at its own size")  # fmt: skip
    fit.add_argument("--crop", dest="fit", action="store_const", const="crop", help="centre-crop each input to that size instead")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(label="images")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written, and every option's default in its help: the help text's own
    "(default: ...)" where it has one, else the value (``off`` for a flag, ``none`` for no value)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.required or action.default is argparse.SUPPRESS or "(default" in text or "%(default)" in text:
            return text
        if action.nargs == 0:
            return f"{text} (default: {'on' if action.default else 'off'})"
        return f"{text} (default: {'none' if action.default is None else '%(default)s'})"


def build_parser() -> argparse.ArgumentParser:
    raw = HelpFormatter
    parser = argparse.ArgumentParser(
        prog="pgdm",
        description="Pseudoinverse-guided diffusion models (ΠGDM) for image restoration.",
        epilog="examples:\n  pgdm demo\n  pgdm degrade sr4 photo.png -o degraded/\n  pgdm restore sr4 degraded/ -o restored/",
        formatter_class=raw,
    )
    parser.add_argument("--version", action="version", version=f"pgdm {pgdm.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    tasks = "TASK is an operator spec, operators joined by '+' in the order applied:\n" + spec_help()

    p = sub.add_parser("restore", help="restore degraded images", formatter_class=raw, description="Restore degraded image files with ΠGDM.",
                       epilog=tasks + "\n\nexamples:\n  pgdm restore sr4 low_res/ -o out/ --steps 100\n"
                       "  pgdm restore jpeg photo.jpg -o out/\n  pgdm restore inpaint-center img.png --mask mask.png -o out/\n"
                       "  pgdm restore denoise noisy.png --sigma-y 0.05 -o out/\n"
                       "  pgdm restore sr4 clean/ -o out/ --simulate --num-samples 8 --grid out/grid.png\n"
                       "  torchrun --nproc-per-node 4 -m pgdm restore sr4 low_res/ -o out/ --device cuda   # docs/scale-out.md")  # fmt: skip
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
    p.add_argument("--sigma-y", type=float, default=0.0, help="add Gaussian noise of this std on the [0, 1] pixel scale")
    p.add_argument("--seed", type=int, default=0, help="seed for masks, kernels and noise")
    p.add_argument("--gray", action="store_true", help="read images as grayscale")
    p.add_argument("--size", type=int, help="resize (or --crop) images to SIZE×SIZE first")
    fit = p.add_mutually_exclusive_group()
    fit.add_argument("--crop", dest="fit", action="store_const", const="crop", help="centre-crop instead of resizing to --size")
    p.set_defaults(run=degrade_files, fit=None)

    p = sub.add_parser("demo", help="run an embedded model on bundled test images", formatter_class=raw,
                       description="Restore the bundled Fashion-MNIST test images under several tasks with the default model\n"
                       "(--photos: the held-out colour photos, whole, with the photo model).",
                       epilog="examples:\n  pgdm demo -o demo_out --steps 100\n  pgdm demo --photos -o demo_photos")  # fmt: skip
    p.add_argument("--photos", action="store_true", help="the photo model on the whole held-out photos (96×144): denoising, JPEG, SR×2, inpainting")
    p.add_argument("-o", "--output", default="demo_out", help="output folder (default: %(default)s)")
    p.add_argument("--steps", type=int, default=DEMO_STEPS, help="sampling steps; ΠGDM at 20 reaches what 100 do on these tasks (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (the per-task lines are still printed)")
    p.set_defaults(run=demo)

    p = sub.add_parser("train", help="train the embedded models' architecture (Fashion-MNIST or photo crops)", formatter_class=raw,
                       description="Train an ADM ε-prediction model on Fashion-MNIST or on crops of photos (resumable).",
                       epilog="examples:\n  pgdm train --steps 20000 --out runs/fashion32 --export model.safetensors\n"
                              "  pgdm train --dataset photos --out runs/photo32 --export photo.safetensors")  # fmt: skip
    train_cmd.add_arguments(p)
    p.set_defaults(run=train_cmd.run)

    p = sub.add_parser("train-classifier", help="train the Fashion-MNIST classifier behind `pgdm bench quality`'s CA, FID and KID",
                       formatter_class=raw, description="Train the small Fashion-MNIST classifier on the training split; report its test accuracy.",
                       epilog="example:\n  pgdm train-classifier --epochs 3 --export classifier.safetensors")  # fmt: skip
    train_cmd.add_classifier_arguments(p)
    p.set_defaults(run=train_cmd.run_classifier)

    p = sub.add_parser("convert", help="convert a .pt checkpoint to safetensors + JSON config", formatter_class=raw,
                       description="Convert a guided-diffusion .pt checkpoint to .safetensors with its JSON config beside it.",
                       epilog="example:\n  pgdm convert 256x256_diffusion_uncond.pt adm256.safetensors")  # fmt: skip
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--config", help="preset name when the layout is ambiguous")
    p.set_defaults(run=_convert)

    p = sub.add_parser("export", help="export a method's whole step (ΠGDM by default) for one task to ONNX", formatter_class=raw,
                       description="Write one step of a restoration method (network + input-only VJP + h, h† + update) for TASK as an\n"
                       "ONNX graph with static shapes, load it in ONNX Runtime, and print its inputs (needs pip install 'pgdm[onnx]').",
                       epilog=tasks + "\n\nexample:\n  pgdm export sr4 -o sr4_b8.onnx --batch-size 8\n  pgdm export sr4 -o sr4_ddrm.onnx --method ddrm\n"
                       "  pgdm export sr4 -o sr4_480x640.onnx --canvas 480x640   # one canvas size, in tiles of the model's size\n"
                       "  trtexec --onnx=sr4_b8.onnx   # a TensorRT engine from it (TensorRT's own tool)")  # fmt: skip
    p.add_argument("task", help="operator spec (its parameters become constants of the graph)")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--model", default="default", help="'default', a checkpoint (.pt/.safetensors) or a diffusers folder")
    p.add_argument("--config", help="model preset name when it cannot be inferred")
    p.add_argument("--batch-size", type=int, default=1, help="the graph's batch size (default: %(default)s)")
    p.add_argument("--noisy", action="store_true", help="take per-image sigma_y2 (the noisy guidance)")
    p.add_argument("--method", choices=sorted(METHODS), default="pigdm", help="restoration method whose step to export (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for random masks and kernels in TASK")
    p.add_argument("--canvas", type=canvas_size, metavar="HxW", help="the image size the graph takes, for images of another size than "
                   "the model's (docs/large-images.md; default: the model's size)")  # fmt: skip
    add_canvas_options(p)
    p.set_defaults(run=_export)

    add_serve_parser(sub)
    add_bench_parser(sub)
    return parser


def _export(args) -> int:
    from pgdm.export import OnnxStepRestorer, export_step

    from pgdm.models import load_model

    validate.positive_int("--batch-size", args.batch_size)
    denoiser = load_model(args.model, config=args.config)
    if denoiser.image_size is None:
        raise ValueError("export needs a model with a fixed image size")
    canvas = args.canvas or (denoiser.image_size, denoiser.image_size)
    if canvas != (denoiser.image_size, denoiser.image_size):
        denoiser = CanvasSettings(args.strategy, args.tile, args.overlap).wrap(denoiser)
    op = parse(args.task, (denoiser.channels, *canvas), seed=args.seed)
    path = export_step(denoiser, op, args.output, args.batch_size, noisy=args.noisy, method=args.method, canvas=canvas)
    names = OnnxStepRestorer(path, denoiser).names  # loads the graph in ONNX Runtime: a broken file fails here
    print(f"wrote {path}: method {args.method}, batch {args.batch_size}, {canvas[0]}×{canvas[1]}, inputs {', '.join(names)}; outputs x_next, x0")
    return 0


def _convert(args) -> int:
    from pgdm.models import convert_checkpoint

    cfg = convert_checkpoint(args.src, args.dst, config=args.config)
    print(f"wrote {args.dst} and {Path(args.dst).with_suffix('.json')} ({cfg.name or cfg.architecture})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"pgdm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        from pgdm.engine import StepCompileError  # loaded only when a step failed to compile

        if not isinstance(err, StepCompileError):
            raise
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
