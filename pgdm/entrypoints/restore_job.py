"""One ``pgdm restore`` job: its model, inputs and output folder, and the restoring of any list of its images.

A job is built from a :class:`~pgdm.entrypoints.config.RestoreJobConfig`. The single-process command restores
every unfinished image in one call of :meth:`RestoreJob.restore`; each torchrun rank
(:mod:`pgdm.entrypoints.distributed`) calls it on the batches it claims. Image ``i`` of the input list uses
seed ``--seed + i`` and the sampler's noise does not depend on the batch, so an image's output is the same
whichever process restores it. Outputs are written atomically and durably (temporary file, fsync, rename, fsync of
the folder); an image's ``metrics.json`` entry is merged (:class:`pgdm.entrypoints.outputs.MetricsFile`) only after
its PNG is in place, so an entry always has its file. An image is finished when it has both; one with a PNG but no
entry (a kill between the two) is restored again. A write that fails (a full disk) stops the job with a one-line
error naming the file; what was finished is kept and the same command resumes.
"""
from __future__ import annotations

import sys
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from pgdm.grids import measurement_view, write_grid
from pgdm.io import fit_size, is_colour, list_images, open_image_checked, read_image, write_image
from pgdm.measurements import image_shape_of, read_measurement
from pgdm.methods import get_method
from pgdm.metrics import consistency_rms, psnr, ssim
from pgdm.operators import GaussianNoise, Operator, parse
from pgdm.sampler import NonFiniteError

from .config import RestoreJobConfig
from .outputs import MetricsFile, OutputFolder, output_names
from .progress import progress_bar

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


def embedded_model_for(paths: Sequence[Path], gray: bool = False) -> str:
    """The embedded model for ``paths`` when no ``--model`` is given: "photo" (RGB) if any is in colour and
    ``gray`` is not set, else "default" (grayscale)."""
    return "default" if gray or not any(is_colour(p) for p in paths) else "photo"


class RestoreJob:
    """The job ``config`` set up on ``device``: model loaded, output folder checked.

    Raises ValueError (one line) before any work when the model, task, inputs or output folder are unusable.
    Per-image problems are not raised: :meth:`restore` prints them as ``error: PATH: ...`` and collects them in
    :attr:`failures`. ``show_progress`` draws the per-batch step bar (off on all but one process).
    """

    def __init__(self, config: RestoreJobConfig, device: torch.device, *, show_progress: bool = True) -> None:
        task, io = config.task, config.io
        self.config, self.device, self.show_progress = config, device, show_progress and not io.quiet
        duplicates: list[str] = []
        paths = list_images(io.inputs, duplicates)
        for note in duplicates if show_progress else ():
            print(f"note: {note}", file=sys.stderr)
        if config.model.name is None:  # the embedded model that fits the inputs' colour
            config = dataclasses.replace(config, model=dataclasses.replace(config.model, name=embedded_model_for(paths, io.gray)))
            self.config = config
        self.denoiser = config.model.load(device)
        size = self.denoiser.image_size or config.model.size
        if size is None and io.fit is not None:
            raise ValueError("--resize/--crop fit images to the model's size, but this model has none: pass --size")
        self.shape = None if size is None else (self.denoiser.channels, size, size)  # the model's size; images keep their own
        self._templates: dict[tuple[int, ...], Operator] = {}
        self.template = self._template(self.shape or (self.denoiser.channels, 256, 256))  # checks TASK before any work
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
        """The images still to restore, in input order: those without an output PNG or without a ``metrics.json``
        entry (all with ``--overwrite``)."""
        if self.config.io.overwrite:
            return list(enumerate(self.images))
        listed = self.metrics.read()
        return [(i, p) for i, p in enumerate(self.images) if not (self.targets[p].exists() and self.names[p] in listed)]

    def by_size(self, work: Sequence[WorkItem]) -> list[WorkItem]:
        """``work`` with the images of one size next to each other, sizes in order of first appearance and input order
        within a size (from the files' headers; unreadable ones last, to fail when restored), so that consecutive
        positions fill whole batches of one operator. The input order when --resize/--crop fits every image to
        one size."""
        if self.config.io.fit is not None:
            return list(work)

        def header_size(path: Path) -> tuple[int, int] | None:
            try:
                with open_image_checked(path, str(path)) as im:
                    return im.size
            except (ValueError, OSError, SyntaxError):
                return None

        sizes = [header_size(path) for _, path in work]
        first = {size: k for k, size in reversed(list(enumerate(sizes)))}
        order = sorted(range(len(work)), key=lambda k: (sizes[k] is None, first[sizes[k]], k))
        return [work[k] for k in order]

    def _fail(self, message: str) -> None:
        self.failures.append(message)
        print(f"error: {message}", file=sys.stderr, flush=True)

    def _template(self, shape: tuple[int, ...], path: Path | None = None) -> Operator:
        """The task's operator for images of ``shape`` (C, H, W), built once per shape; errors name ``path``."""
        op = self._templates.get(shape)
        if op is None:
            try:
                op = self._templates[shape] = parse(self.config.task.task, shape, seed=self.config.task.seed)
            except ValueError as err:
                raise ValueError(f"{path}: {err}" if path is not None else str(err)) from None
        return op

    def _prepare(self, index: int, path: Path, notes: list[str]) -> Item:
        """Image ``path`` read as (operator, y): at its own size, or fitted to the model's with --resize/--crop."""
        task, io, name, channels = self.config.task, self.config.io, self.names[path], self.denoiser.channels
        seed = task.seed + index
        if io.simulate:
            x = read_image(path, channels, to_gray=io.gray, notes=notes)
            h, w = x.shape[-2:]
            if io.fit is not None and (h, w) != tuple(self.shape[1:]):
                x = fit_size(x, self.shape[1:], io.fit, str(path))
                notes.append(f"{path}: {h}×{w} {'resized' if io.fit == 'resize' else 'centre-cropped'} to the model's {self.shape[1]}×{self.shape[2]}")
            op = self._template(tuple(x.shape[1:]), path)
            y = op(x)
            if task.sigma_y > 0:
                y = GaussianNoise(task.sigma_y, seed=seed)(y)
            return Item(index, name, path, seed, op, y, x)
        shape = self.shape if io.fit is not None else image_shape_of(self.template, path, channels)
        op, y = read_measurement(self._template(shape, path), path, shape, mask=task.mask, fit=io.fit, to_gray=io.gray, notes=notes)
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
            self._restorer = engine.restorer(self.config.canvas.wrap(self.denoiser), self.config.sampler, batch_size)
            if engine.backend in ("compile", "cudagraph", "onnx"):
                verb = "exporting" if engine.backend == "onnx" else "compiling"
                print(f"{verb} the step for batches of {batch_size} (first run of this model, task and size: about 1-5 min on a CPU, "
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
        step_bar = progress_bar(self.config.sampler.steps, "steps", disable=not self.show_progress, nested=True, leave=False)
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
        written = {}
        try:
            for i, it in enumerate(batch):
                if i in bad:
                    continue
                if std is not None:
                    self._write(std[i] / std[i].max().clamp_min(1e-8) * 2 - 1, self.stds[it.path])
                self._write(x[i], self.targets[it.path])
                written[it.name] = entries[it.name]
        finally:
            self.metrics.update(written)  # after the files: an entry in metrics.json always has its PNG on disk
        return len(written)

    def _write(self, image: torch.Tensor, path: Path) -> None:
        try:
            write_image(image, path)
        except OSError as err:
            reason = err.strerror or str(err)
            raise OSError(err.errno, f"cannot write {path} ({reason}); the images finished so far are kept: "
                          "make room and run the same command again to resume") from None  # fmt: skip

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
