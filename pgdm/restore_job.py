"""One ``pgdm restore`` job: its model, inputs and output folder, and the restoring of any list of its images.

The single-process command restores every unfinished image in one call of :meth:`RestoreJob.restore`; each
torchrun rank (:mod:`pgdm.distributed`) calls it on the batches it claims. Image ``i`` of the input list uses
seed ``--seed + i`` and the sampler's noise does not depend on the batch, so an image's output is the same
whichever process restores it. Outputs are written atomically; an image's ``metrics.json`` entry is merged
(:class:`pgdm.outputs.MetricsFile`) before its PNG is written, so a PNG marks a finished image.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm import tqdm

from pgdm.engine import restorer

from .grids import measurement_view, write_grid
from .io import fit_size, is_colour, list_images, read_image, write_image
from .measurements import last_operator, read_measurement
from .metrics import consistency_rms, psnr, ssim
from .operators import GaussianNoise, Inpaint, Operator, parse
from .outputs import MetricsFile, OutputFolder, output_names
from .methods import get_method
from .sampler import NonFiniteError, Restorer

__all__ = ["DTYPES", "GRID_LABELS", "RestoreJob", "WorkItem", "make_restorer", "parse_device", "print_summary"]

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
GRID_LABELS = ("y (measured)", "pseudo-inverse", "restored", "clean")  # ASCII: the default font has no "†"
WorkItem = tuple[int, Path]  # (position in the job's input list, which picks the seed; the image file)


@dataclass
class Item:
    """One image read and ready to restore."""

    index: int  # position in the job's input list
    name: str
    path: Path
    seed: int
    op: Operator
    y: torch.Tensor  # (1, …)
    reference: torch.Tensor | None  # (1, C, H, W) clean image when known


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


def make_restorer(args: argparse.Namespace, denoiser, batch: int):
    """The restorer the options ask for: :class:`pgdm.Restorer`, or an engine compiled/captured for ``batch``."""
    if args.backend == "eager" and not args.channels_last:
        return Restorer(denoiser, steps=args.steps, eta=args.eta, start_step=args.start_step, method=args.method)
    # one compiled/captured batch size: the last, smaller batch is padded to it instead of compiling again
    return restorer(
        denoiser, backend=args.backend, steps=args.steps, eta=args.eta, start_step=args.start_step, method=args.method,
        channels_last=args.channels_last, batch_sizes=(batch,),
    )  # fmt: skip


def _images_without_masks(paths: list[Path], template: Operator, simulate: bool) -> list[Path]:
    """The images to restore: for an inpainting task on measurement files, ``X_mask.png`` beside an input ``X.*``
    is X's mask, not an image; for every other task each file is an image."""
    if simulate or not isinstance(last_operator(template), Inpaint):
        return paths
    stems = {(p.parent, p.stem) for p in paths}
    return [p for p in paths if not (p.stem.endswith("_mask") and (p.parent, p.stem[: -len("_mask")]) in stems)]


def embedded_model_for(paths: Sequence[Path], gray: bool = False) -> str:
    """The embedded model for ``paths`` when no ``--model`` is given: "photo" (RGB) if any is in colour and
    ``gray`` is not set, else "default" (grayscale)."""
    return "default" if gray or not any(is_colour(p) for p in paths) else "photo"


def _model_files(model: str) -> list[Path]:
    path = Path(model)
    return [path, path.with_suffix(".json")] if path.exists() else []


class RestoreJob:
    """The ``pgdm restore`` options ``args`` set up on ``device``: model loaded, output folder checked.

    Raises ValueError (one line) before any work when the model, task, inputs or output folder are unusable.
    Per-image problems are not raised: :meth:`restore` prints them as ``error: PATH: ...`` and collects them in
    :attr:`failures`. ``show_progress`` draws the per-batch step bar (off on all but one process).
    """

    def __init__(self, args: argparse.Namespace, device: torch.device, *, show_progress: bool = True) -> None:
        from .models import load_model

        self.args, self.device, self.show_progress = args, device, show_progress and not args.quiet
        paths = list_images(args.inputs)
        model = args.model or embedded_model_for(paths, args.gray)
        self.denoiser = load_model(model, config=args.config, device=device, dtype=DTYPES[args.dtype])
        size = self.denoiser.image_size or args.size
        if size is None:
            raise ValueError("this model has no fixed image size: pass --size")
        self.shape = (self.denoiser.channels, size, size)
        self.template = parse(args.task, self.shape, seed=args.seed)
        get_method(args.method).check_operator(self.template)  # before any work: e.g. DPS cannot run JPEG
        self.images = _images_without_masks(paths, self.template, args.simulate)
        self.names = output_names(self.images)
        self.folder = OutputFolder(args.output, [*paths, *([args.mask] if args.mask else []), *_model_files(model)])
        self.targets = {p: self.folder.path(f"{self.names[p]}.png") for p in self.images}
        self.stds = {p: self.folder.path(f"{self.names[p]}_std.png") for p in self.images} if args.num_samples > 1 else {}
        if args.grid:
            OutputFolder(Path(args.grid).parent, [*paths, *self.targets.values()]).path(Path(args.grid).name)
        self.metrics = MetricsFile(self.folder.path("metrics.json"))
        self.failures: list[str] = []
        self.psnrs: list[float] = []
        self.grid_rows: dict[int, list[torch.Tensor]] = {}  # input position → the image's panels
        self._restorer = None

    def pending(self) -> list[WorkItem]:
        """The images still to restore, in input order: those without an output PNG (all with ``--overwrite``)."""
        return [(i, p) for i, p in enumerate(self.images) if self.args.overwrite or not self.targets[p].exists()]

    def _fail(self, message: str) -> None:
        self.failures.append(message)
        print(f"error: {message}", file=sys.stderr, flush=True)

    def _prepare(self, index: int, path: Path, notes: list[str]) -> Item:
        args, shape, name, seed = self.args, self.shape, self.names[path], self.args.seed + index
        if args.simulate:
            x = read_image(path, shape[0], to_gray=args.gray, notes=notes)
            h, w = x.shape[-2:]
            x = fit_size(x, shape[1:], args.fit, str(path))
            if (h, w) != tuple(shape[1:]):
                notes.append(f"{path}: {h}x{w} {'resized' if args.fit == 'resize' else 'centre-cropped'} to the model's {shape[1]}x{shape[2]}")
            y = self.template(x)
            if args.sigma_y > 0:
                y = GaussianNoise(args.sigma_y, seed=seed)(y)
            return Item(index, name, path, seed, self.template, y, x)
        op, y = read_measurement(self.template, path, shape, mask=args.mask, fit=args.fit, to_gray=args.gray, notes=notes)
        return Item(index, name, path, seed, op, y, None)

    def restore(self, work: Sequence[WorkItem], on_batch: Callable[[int], None] | None = None) -> int:
        """Restore ``work`` into the output folder in batches of ``--batch-size``; returns how many were written.

        Images sharing an operator are batched together. ``on_batch(n)`` is called after each batch of n images.
        The restorer is built on the first call, for batches of at most this call's largest group.
        """
        items, notes = [], []
        for index, path in work:
            try:
                items.append(self._prepare(index, path, notes))
            except (ValueError, OSError) as err:
                self._fail(str(err))
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        groups: dict[int, list[Item]] = {}
        for item in items:
            groups.setdefault(id(item.op), []).append(item)
        batch_size = min(self.args.batch_size, max((len(g) for g in groups.values()), default=1))
        if self._restorer is None and items:
            self._restorer = make_restorer(self.args, self.denoiser, batch_size)
            if self.args.backend != "eager":
                print(f"compiling the step for batches of {batch_size} (first run of this model, task and size: about 1-5 min on a CPU, "
                      "less on a GPU; cached for later runs)...", file=sys.stderr, flush=True)  # fmt: skip
        written = 0
        for group in groups.values():
            for start in range(0, len(group), batch_size):
                batch = group[start : start + batch_size]
                written += self._restore_batch(batch)
                if on_batch is not None:
                    on_batch(len(batch))
        return written

    def _restore_batch(self, batch: list[Item]) -> int:
        args, device = self.args, self.device
        op = batch[0].op.to(device)
        y = torch.cat([it.y for it in batch]).to(device)
        step_bar = tqdm(total=args.steps, desc="steps", leave=False, disable=not self.show_progress)
        start = time.perf_counter()
        try:
            result = self._restorer.restore(
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
                self._fail(f"{it.path}: sampling produced NaN/Inf (nothing written)")
                continue
            entry = {"seconds": round(seconds, 4), "consistency_rms": float(residual[i]), "seed": it.seed, "sigma_y": args.sigma_y, "method": args.method}
            if it.reference is not None:
                ref = it.reference.to(device)
                entry |= {
                    "psnr": float(psnr(x[i : i + 1], ref)[0]),
                    "ssim": float(ssim(x[i : i + 1], ref)[0]),
                    "pinv_psnr": float(psnr(baseline[i : i + 1], ref)[0]),
                    "pinv_ssim": float(ssim(baseline[i : i + 1], ref)[0]),
                }
                self.psnrs.append(entry["psnr"])
            entries[it.name] = entry
            if args.grid:
                view = measurement_view(y[i : i + 1], last, tuple(x.shape[-2:]))
                self.grid_rows[it.index] = [view.cpu(), baseline[i].cpu(), x[i].cpu()] + ([it.reference[0]] if it.reference is not None else [])
        self.metrics.update(entries)  # first: an image whose PNG exists is finished and has its entry
        for i, it in enumerate(batch):
            if i in bad:
                continue
            if std is not None:
                write_image(std[i] / std[i].max().clamp_min(1e-8) * 2 - 1, self.stds[it.path])
            write_image(x[i], self.targets[it.path])
        return len(batch) - len(bad)

    def write_grid(self, rows: dict[int, list[torch.Tensor]] | None = None) -> None:
        """Write ``--grid``, one row per restored image in input order: ``rows`` (default: this process's own,
        :attr:`grid_rows`). Nothing without --grid or rows."""
        rows = self.grid_rows if rows is None else rows
        if self.args.grid and rows:
            write_grid([rows[i] for i in sorted(rows)], GRID_LABELS, self.args.grid)


def print_summary(restored: int, skipped: int, failures: Sequence[str], folder: Path) -> None:
    """The closing lines of ``pgdm restore``: counts on stdout, each failure on stderr."""
    print(f"restored {restored} image(s), skipped {skipped} already done, {len(failures)} failed; outputs in {folder}")
    for message in failures:
        print(f"  failed: {message}", file=sys.stderr)
