"""One ``pgdm restore`` job: its model, inputs and output folder, and the restoring of any list of its images.

A job is built from a :class:`~pgdm.entrypoints.config.RestoreJobConfig`. The single-process command restores
every unfinished image in one call of :meth:`RestoreJob.restore`; each torchrun rank
(:mod:`pgdm.entrypoints.distributed`) calls it on the batches it claims. Image ``i`` of the input list uses
seed ``--seed + i`` and the sampler's noise does not depend on the batch, so an image's output is the same
whichever process restores it. Outputs are written atomically; an image's ``metrics.json`` entry is merged
(:class:`pgdm.entrypoints.outputs.MetricsFile`) before its PNG is written, so a PNG marks a finished image.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm import tqdm

from pgdm.grids import measurement_view, write_grid
from pgdm.io import fit_size, list_images, read_image, write_image
from pgdm.measurements import read_measurement
from pgdm.methods import get_method
from pgdm.metrics import consistency_rms, psnr, ssim
from pgdm.operators import GaussianNoise, Operator, parse
from pgdm.sampler import NonFiniteError

from .config import RestoreJobConfig
from .outputs import MetricsFile, OutputFolder, output_names

__all__ = ["GRID_LABELS", "RestoreJob", "WorkItem", "print_summary"]

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


def _images_without_masks(paths: list[Path], template: Operator, simulate: bool) -> list[Path]:
    """The images to restore: for a task whose measurements carry a mask file (inpainting) on measurement files,
    ``X_mask.png`` beside an input ``X.*`` is X's mask, not an image; for every other task each file is an image."""
    if simulate or not template.measurement_format.needs_mask:
        return paths
    stems = {(p.parent, p.stem) for p in paths}
    return [p for p in paths if not (p.stem.endswith("_mask") and (p.parent, p.stem[: -len("_mask")]) in stems)]


class RestoreJob:
    """The job ``config`` set up on ``device``: model loaded, output folder checked.

    Raises ValueError (one line) before any work when the model, task, inputs or output folder are unusable.
    Per-image problems are not raised: :meth:`restore` prints them as ``error: PATH: ...`` and collects them in
    :attr:`failures`. ``show_progress`` draws the per-batch step bar (off on all but one process).
    """

    def __init__(self, config: RestoreJobConfig, device: torch.device, *, show_progress: bool = True) -> None:
        task, io = config.task, config.io
        self.config, self.device, self.show_progress = config, device, show_progress and not io.quiet
        paths = list_images(io.inputs)
        self.denoiser = config.model.load(device)
        size = self.denoiser.image_size or config.model.size
        if size is None:
            raise ValueError("this model has no fixed image size: pass --size")
        self.shape = (self.denoiser.channels, size, size)
        self.template = parse(task.task, self.shape, seed=task.seed)
        get_method(config.sampler.method).check_operator(self.template)  # before any work: e.g. DPS cannot run JPEG
        self.images = _images_without_masks(paths, self.template, io.simulate)
        self.names = output_names(self.images)
        self.folder = OutputFolder(io.output, [*paths, *([task.mask] if task.mask else []), *config.model.files()])
        self.targets = {p: self.folder.path(f"{self.names[p]}.png") for p in self.images}
        self.stds = {p: self.folder.path(f"{self.names[p]}_std.png") for p in self.images} if task.num_samples > 1 else {}
        if io.grid:
            OutputFolder(io.grid.parent, [*paths, *self.targets.values()]).path(io.grid.name)
        self.metrics = MetricsFile(self.folder.path("metrics.json"))
        self.failures: list[str] = []
        self.psnrs: list[float] = []
        self.grid_rows: dict[int, list[torch.Tensor]] = {}  # input position → the image's panels
        self._restorer = None

    def pending(self) -> list[WorkItem]:
        """The images still to restore, in input order: those without an output PNG (all with ``--overwrite``)."""
        return [(i, p) for i, p in enumerate(self.images) if self.config.io.overwrite or not self.targets[p].exists()]

    def _fail(self, message: str) -> None:
        self.failures.append(message)
        print(f"error: {message}", file=sys.stderr, flush=True)

    def _prepare(self, index: int, path: Path, notes: list[str]) -> Item:
        task, io, shape, name = self.config.task, self.config.io, self.shape, self.names[path]
        seed = task.seed + index
        if io.simulate:
            x = read_image(path, shape[0], to_gray=io.gray, notes=notes)
            h, w = x.shape[-2:]
            x = fit_size(x, shape[1:], io.fit, str(path))
            if (h, w) != tuple(shape[1:]):
                notes.append(f"{path}: {h}x{w} {'resized' if io.fit == 'resize' else 'centre-cropped'} to the model's {shape[1]}x{shape[2]}")
            y = self.template(x)
            if task.sigma_y > 0:
                y = GaussianNoise(task.sigma_y, seed=seed)(y)
            return Item(index, name, path, seed, self.template, y, x)
        op, y = read_measurement(self.template, path, shape, mask=task.mask, fit=io.fit, to_gray=io.gray, notes=notes)
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
        engine = self.config.engine
        batch_size = min(engine.batch_size, max((len(g) for g in groups.values()), default=1))
        if self._restorer is None and items:
            self._restorer = engine.restorer(self.denoiser, self.config.sampler, batch_size)
            if engine.backend != "eager":
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
        task, device, grid = self.config.task, self.device, self.config.io.grid
        op = batch[0].op.to(device)
        y = torch.cat([it.y for it in batch]).to(device)
        step_bar = tqdm(total=self.config.sampler.steps, desc="steps", leave=False, disable=not self.show_progress)
        start = time.perf_counter()
        try:
            result = self._restorer.restore(
                y, op, sigma_y=task.sigma_y, seed=[it.seed for it in batch], class_labels=task.class_label,
                num_samples=task.num_samples, return_std=task.num_samples > 1, callback=lambda _: step_bar.update(1),
            )  # fmt: skip
            bad: set[int] = set()
        except NonFiniteError as err:
            result, bad = err.result, set(err.rows)
        seconds = (time.perf_counter() - start) / len(batch)
        step_bar.close()
        x, std = result if task.num_samples > 1 else (result, None)
        residual = consistency_rms(op, x, y)
        baseline = op.pinv(y).clamp(-1, 1)
        entries = {}
        for i, it in enumerate(batch):
            if i in bad:
                self._fail(f"{it.path}: sampling produced NaN/Inf (nothing written)")
                continue
            entry = {"seconds": round(seconds, 4), "consistency_rms": float(residual[i]), "seed": it.seed, "sigma_y": task.sigma_y, "method": self.config.sampler.method}
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
            if grid:
                view = measurement_view(y[i : i + 1], op, tuple(x.shape[-2:]))
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
        if self.config.io.grid and rows:
            write_grid([rows[i] for i in sorted(rows)], GRID_LABELS, self.config.io.grid)


def print_summary(restored: int, skipped: int, failures: Sequence[str], folder: Path) -> None:
    """The closing lines of ``pgdm restore``: counts on stdout, each failure on stderr."""
    print(f"restored {restored} image(s), skipped {skipped} already done, {len(failures)} failed; outputs in {folder}")
    for message in failures:
        print(f"  failed: {message}", file=sys.stderr)
