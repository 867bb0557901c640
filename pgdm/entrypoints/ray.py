"""ΠGDM restoration as a Ray Data map (``pip install 'pgdm[ray]'``).

:class:`Restore` is a callable class for ``Dataset.map_batches``: Ray builds one per actor, so the model is
loaded once per actor, and calls it on NumPy batches::

    ds = ds.map_batches(Restore, fn_constructor_kwargs={"task": "sr4", "steps": 50}, batch_size=16,
                        num_gpus=1, concurrency=4)

The module needs Ray only to be used by Ray; it imports without it.
"""
from __future__ import annotations

import numpy as np
import torch

from pgdm.io import pixels_to_tensor, to_uint8
from pgdm.measurements import measurement_shape
from pgdm.operators import parse

from .config import CanvasSettings, EngineSettings, ModelSettings, sampler_settings

__all__ = ["Restore"]


class Restore:
    """Restore a batch of measurement images, as ``pgdm restore TASK`` restores measurement files.

    Batch columns (a dict of NumPy arrays, Ray's ``batch_format="numpy"``):
        image: (B, h, w) or (B, h, w, C) uint8 measurements as ``pgdm degrade`` writes them, of any size (for
            ``sr4``, an h×w measurement restores a 4h×4w image; batches of different sizes may follow each
            other); JPEG tasks need the .jpg files and ``pgdm restore``.
        seed: (B,) int, the noise seed of each row (``pgdm restore`` uses ``--seed`` + the image's position).
        mask: (B, H, W) uint8, optional: each row's inpainting mask, white (255) = observed, black (0) = missing.
        sigma_y: (B,) float, optional: each row's measurement-noise std on the [0, 1] pixel scale (default 0).
    Returns the batch with ``restored``: (B, H, W) or (B, H, W, C) uint8, the pixels ``pgdm restore`` writes.

    Args (``fn_constructor_kwargs``): task: operator spec (``sr4``, ``inpaint-center``, ``blur-uniform9``, …);
    model/config: as ``pgdm restore --model/--config``; steps, eta, start_step, method: the sampler's (eta None:
    the method's default); device: default
    ``cuda`` when Ray gave the actor a GPU, else ``cpu``; task_seed: seed of random masks and kernels in
    ``task``; backend, precision, channels_last: as ``pgdm restore`` (compiled or captured for ``batch_size``
    rows, the ``map_batches`` batch size); strategy, tile, overlap: how the model covers images of other sizes,
    as ``pgdm restore --strategy/--tile/--overlap``.
    """

    def __init__(
        self,
        task: str,
        *,
        model: str = "default",
        config: str | None = None,
        steps: int = 100,
        eta: float | None = None,
        start_step: int | None = None,
        method: str = "pigdm",
        device: str | None = None,
        task_seed: int = 0,
        backend: str = "auto",
        precision: str = "auto",
        channels_last: bool | None = None,
        batch_size: int = 16,
        strategy: str = "auto",
        tile: int | None = None,
        overlap: int | None = None,
    ) -> None:
        model_settings = ModelSettings(model, config, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
        engine = EngineSettings(backend, precision, channels_last, batch_size)
        sampler = sampler_settings(method, steps, eta, start_step)
        self.device = model_settings.torch_device()
        self.denoiser = model_settings.load(self.device)
        if self.denoiser.image_size is None:
            raise ValueError(f"model {model} has no fixed image size; the Ray map needs one")
        self.shape = (self.denoiser.channels, self.denoiser.image_size, self.denoiser.image_size)
        self.task, self.task_seed = task, task_seed
        self.template = parse(task, self.shape, seed=task_seed)
        if not self.template.measurement_format.pixels:
            raise ValueError(f"{task}: a JPEG measurement is its coefficients, not pixels; restore the .jpg files with pgdm restore")
        self.channels = measurement_shape(self.template, self.shape)[0]  # of each measurement row
        self.restorer = engine.restorer(CanvasSettings(strategy, tile, overlap).wrap(self.denoiser), sampler)

    def _measurements(self, images: np.ndarray) -> torch.Tensor:
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(f"column 'image' must be uint8 (B, h, w[, C]) measurements, got {images.dtype} {tuple(images.shape)}")
        return torch.cat([pixels_to_tensor(row, self.channels) for row in images])

    def _operator(self, measured: tuple[int, int], masks: np.ndarray | None):
        """The task's operator for measurements of size ``measured`` (h, w), with the rows' masks."""
        op = parse(self.task, (self.shape[0], *self.template.input_size(measured)), seed=self.task_seed)
        if not op.measurement_format.needs_mask:
            return op
        if masks is None:
            raise ValueError("an inpainting task needs a 'mask' column: (B, H, W) uint8, white = observed")
        if masks.ndim != 3 or tuple(masks.shape[1:]) != measured or not np.isin(masks, (0, 255)).all():
            raise ValueError(f"column 'mask' must be (B, {measured[0]}, {measured[1]}) uint8 of 0 (missing) and 255 (observed) only")
        return op.with_mask(torch.from_numpy(masks == 255)[:, None])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "seed" not in batch:
            raise ValueError("column 'seed' is missing: one int per row, so a row's result does not depend on its batch")
        measurements = self._measurements(batch["image"])
        op = self._operator(tuple(measurements.shape[-2:]), batch.get("mask"))
        y = op.last.project_measurement(measurements)
        sigma_y = batch.get("sigma_y", 0.0)
        sigma_y = torch.from_numpy(np.array(sigma_y, dtype=np.float64))  # a copy: Ray batches are read-only
        with torch.no_grad():
            x = self.restorer.restore(y.to(self.device), op.to(self.device), sigma_y=sigma_y, seed=[int(s) for s in batch["seed"]])
        return {**batch, "restored": np.stack([to_uint8(row) for row in x])}

