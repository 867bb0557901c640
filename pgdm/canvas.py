"""Any image size with a fixed-size model: the canvas denoiser.

:class:`CanvasDenoiser` is a :class:`~pgdm.denoiser.Denoiser` whose ``forward`` takes x: (B, C, H, W) of any
H, W ≥ 1 and returns ε of the same shape, so every method of :mod:`pgdm.methods` runs on a canvas unchanged:
it sees a denoiser and an operator built for the canvas (``pgdm.ops.parse(spec, (C, H, W))``).

Two strategies carry the network over the canvas:

- ``whole``: the network runs once on the canvas, reflect-padded (equally on both sides) to the multiple of
  2^(downsamplings) the architecture needs, and ε is cropped back.
- ``tiles``: overlapping tiles of the model's size (stride ``tile − overlap``), reflect-padded at the canvas
  edges, go through the network as rows of one batch, at most ``max_rows`` at a time, and their ε are blended
  with a separable window that tapers as sin² over the overlap, normalised by the windows' sum:
  ε(x) = crop[ Σ_k P_kᵀ(w ⊙ ε_θ(P_k pad(x))) ⊘ Σ_k P_kᵀ w ]. With ``shift`` the grid moves every step by an
  offset in [0, stride)² drawn from the counter-based hash of :mod:`pgdm.rng` (a pure function of ``seed`` and
  the timestep), so seams do not stay in place and a restore stays reproducible. The blend is linear in the
  tiles' outputs, so the input VJP of ΠGDM, RG, DPS and C-ΠGDM goes through it as it goes through the network.

A canvas of exactly the model's size goes straight to the network (bitwise the fixed-size result), and
``auto`` picks ``tiles`` for a model trained at one size and ``whole`` for one without a size
(:meth:`CanvasDenoiser.strategy_for`). Everything is tensor indexing with device index tensors: no host sync
inside a step, fixed shapes per canvas size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import validate
from .denoiser import Denoiser
from .rng import _MASK32, _hash32

__all__ = ["CanvasDenoiser", "CanvasGrid", "STRATEGIES", "canvas_denoiser", "size_multiple", "blend_window"]

STRATEGIES = ("auto", "whole", "tiles")


def size_multiple(net: nn.Module) -> int:
    """2^(number of ×2 downsamplings) in ``net``: what H and W must be divisible by to go through it.

    Counts stride-2 convolutions, ADM ResBlocks with ``resample="down"`` and pooling ``Downsample`` modules
    (DDPM without conv); 1 for a network without any.
    """
    count = 0
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and tuple(m.stride) == (2, 2):
            count += 1
        elif getattr(m, "resample", None) == "down":
            count += 1
        elif type(m).__name__ == "Downsample" and not any(isinstance(c, nn.Conv2d) for c in m.modules()):
            count += 1
    return 2**count


def blend_window(tile: int, overlap: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """(tile, tile) separable window: 1 inside, sin²(π/2 · (i + ½)/overlap) over the first and last ``overlap``
    pixels, so two tiles overlapping by ``overlap`` have weights summing to 1 there (sin² + cos² = 1). All ones
    for ``overlap=0``; every entry > 0."""
    w = torch.ones(tile, dtype=torch.float64)
    if overlap > 0:
        ramp = torch.sin(0.5 * math.pi * (torch.arange(overlap, dtype=torch.float64) + 0.5) / overlap) ** 2
        w[:overlap] = ramp
        w[tile - overlap :] = torch.minimum(w[tile - overlap :], ramp.flip(0))
    return (w[:, None] * w[None, :]).to(dtype=dtype, device=device)


def _circular_no_sync(p: torch.Tensor, n: int) -> torch.Tensor:
    """Indices p wrapped into [0, n) (a periodic canvas)."""
    return torch.remainder(p, n)


def _reflect_no_sync(p: torch.Tensor, n: int) -> torch.Tensor:
    """Indices p (any int64, possibly outside [0, n)) mirrored into [0, n) without repeating the edge pixel
    (``F.pad(mode="reflect")`` extended periodically, so any amount of padding works)."""
    if n == 1:
        return torch.zeros_like(p)
    period = 2 * (n - 1)
    m = torch.remainder(p, period)
    return torch.where(m < n, m, period - m)


_EDGES = {"reflect": _reflect_no_sync, "circular": _circular_no_sync}


@dataclass(frozen=True)
class CanvasGrid:
    """The tile grid along one axis of a canvas of ``size`` pixels.

    The canvas sits at [start, start + size) inside the extent [0, padded) the tiles cover, start = ``lead`` + a
    per-step offset in [0, shift). ``lead`` ≥ overlap, so every canvas pixel lies at least ``overlap`` pixels inside
    the covered extent: near the canvas edge the tiles see (reflected) context past it, as they see a neighbour's
    pixels inside. A canvas no larger than a tile is one tile, centred.

    Attributes: size: canvas pixels; tile, stride: tile side and step (tile − overlap); count: tiles along the
    axis; padded: (count − 1)·stride + tile; shift: the number of offsets drawn from (stride when the grid moves
    each step, else 1); lead: the canvas's start at offset 0.
    """

    size: int
    tile: int
    stride: int
    count: int
    padded: int
    shift: int
    lead: int

    @classmethod
    def build(cls, size: int, tile: int, overlap: int, shift: bool) -> "CanvasGrid":
        stride = tile - overlap
        if size <= tile:
            return cls(size, tile, stride, 1, tile, 1, (tile - size) // 2)
        moves = shift
        reach = size + 2 * overlap + (stride - 1 if moves else 0)  # the extent must hold the canvas and both margins at every offset
        count = math.ceil((reach - tile) / stride) + 1
        padded = (count - 1) * stride + tile
        slack = padded - reach  # split between both ends
        return cls(size, tile, stride, count, padded, stride if moves else 1, overlap + slack // 2)


class CanvasDenoiser(Denoiser):
    """A fixed-size ε-network over a canvas of any (H, W): ``whole`` or overlapping ``tiles`` (module docstring).

    Args:
        denoiser: the model (``pgdm.load_model``); its network, schedule, channels and class conditioning are
            shared, not copied. Its ``image_size`` (None: any size) is the default tile.
        strategy: ``"auto"`` (``tiles`` when the model has an ``image_size``, else ``whole``), ``"whole"`` or
            ``"tiles"``.
        tile: tile side in pixels (default: the model's ``image_size``); a multiple of :func:`size_multiple`.
        overlap: pixels shared by neighbouring tiles, 0 ≤ overlap < tile (default: tile // 4).
        shift: move the tile grid every step by a hashed offset (default True).
        max_rows: tiles per network call (default 64); bounds the network's memory. With guidance (a VJP) and
            more tiles than that, each call is checkpointed: its activations are recomputed in the backward pass
            instead of being kept, so memory stays that of ``max_rows`` tiles at the cost of one more forward.
        seed: the grid-shift stream (offsets are a pure function of seed and timestep).
        multiple: what H, W must be divisible by for ``whole`` (default: :func:`size_multiple` of the network).
        edges: how tiles and ``whole`` see past the canvas edge: ``"reflect"`` (default: mirrored without repeating
            the edge pixel) or ``"circular"`` (the canvas wraps around: a periodic canvas, such as the analytic
            stationary prior of :mod:`pgdm.analytic` or a texture that tiles).

    ``forward(x, t, class_labels)``: x: (B, C, H, W) float (any H, W ≥ 1), t: (B,) int64 (one timestep for the
    batch, as every method calls it), class_labels: (B,) int64 or None → ε: (B, C, H, W).

    Example:
        >>> den = CanvasDenoiser(pgdm.load_model("default"), overlap=8)
        >>> den(torch.zeros(1, 1, 64, 96), torch.tensor([500])).shape
        torch.Size([1, 1, 64, 96])
    """

    def __init__(
        self,
        denoiser: Denoiser,
        strategy: str = "auto",
        *,
        tile: int | None = None,
        overlap: int | None = None,
        shift: bool = True,
        max_rows: int = 64,
        seed: int = 0,
        multiple: int | None = None,
        edges: str = "reflect",
    ) -> None:
        if isinstance(denoiser, CanvasDenoiser):
            raise ValueError("the denoiser is already a CanvasDenoiser; pass the fixed-size model it wraps")
        super().__init__(
            denoiser.net, denoiser.alphas_cumprod, learn_sigma=denoiser.learn_sigma, class_cond=denoiser.class_cond,
            image_size=None, channels=denoiser.channels,
        )  # fmt: skip
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown canvas strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
        self.model_size = denoiser.image_size
        self.multiple = validate.positive_int("multiple", multiple) if multiple is not None else size_multiple(denoiser.net)
        if tile is None and self.model_size is None and strategy == "tiles":
            raise ValueError("strategy 'tiles' needs a tile size: the model has no image_size; pass tile=")
        self.tile = validate.positive_int("tile", tile) if tile is not None else self.model_size
        if self.tile is not None and self.tile % self.multiple:
            raise ValueError(f"tile {self.tile} is not a multiple of {self.multiple}, which this network's downsamplings need")
        default_overlap = (self.tile or 0) // 4
        self.overlap = validate.integer("overlap", overlap) if overlap is not None else default_overlap
        if self.tile is not None and not 0 <= self.overlap < self.tile:
            raise ValueError(f"overlap must be in [0, tile) = [0, {self.tile}), got {self.overlap}")
        if edges not in _EDGES:
            raise ValueError(f"unknown edges {edges!r}; expected 'reflect' or 'circular'")
        self.strategy, self.shift, self.edges = strategy, bool(shift), edges
        self.max_rows = validate.positive_int("max_rows", max_rows)
        self.seed = validate.integer("seed", seed)
        if self.tile is not None:
            self.register_buffer("window", blend_window(self.tile, self.overlap, device=denoiser.alphas_cumprod.device), persistent=False)

    def extra_repr(self) -> str:
        return f"strategy={self.strategy}, tile={self.tile}, overlap={self.overlap}, shift={self.shift}, max_rows={self.max_rows}, edges={self.edges}"

    def check_input(self, shape: torch.Size, class_labels: torch.Tensor | None) -> None:
        """Like :meth:`Denoiser.check_input`, for any H, W ≥ 1."""
        if len(shape) != 4 or shape[1] != self.channels or shape[2] < 1 or shape[3] < 1:
            raise ValueError(f"model expects images of shape (B, {self.channels}, H, W), got {tuple(shape)}")
        if self.class_cond and class_labels is None:
            raise ValueError("this model is class-conditional: pass class_labels, a (B,) int tensor or an int")
        if not self.class_cond and class_labels is not None:
            raise ValueError("this model is unconditional: class_labels must be None")

    def strategy_for(self, height: int, width: int) -> str:
        """``"model"`` (the canvas is the model's size: straight to the network), ``"whole"`` or ``"tiles"``.

        ``auto`` takes ``tiles`` whenever the model was trained at one size (the network then always sees
        what it was trained on; small canvases become one reflect-padded tile) and ``whole`` otherwise.
        """
        if self.model_size is not None and (height, width) == (self.model_size, self.model_size):
            return "model"
        if self.strategy == "auto":
            return "whole" if self.tile is None else "tiles"
        return self.strategy

    def grids(self, height: int, width: int) -> tuple[CanvasGrid, CanvasGrid]:
        """The tile grids along H and W of a ``tiles`` canvas."""
        return (CanvasGrid.build(height, self.tile, self.overlap, self.shift), CanvasGrid.build(width, self.tile, self.overlap, self.shift))

    def tiles_per_image(self, height: int, width: int) -> int:
        """Network rows per image of this size (1 for ``whole`` and model-sized canvases)."""
        if self.strategy_for(height, width) != "tiles":
            return 1
        gh, gw = self.grids(height, width)
        return gh.count * gw.count

    def network(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """ε_θ of model-sized rows: ``Denoiser.forward`` (what the tiles and the whole canvas go through)."""
        return super().forward(x, t, class_labels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """ε over the canvas. x: (B, C, H, W); t: (B,) int64; class_labels: (B,) int64 or None → (B, C, H, W)."""
        h, w = x.shape[-2:]
        strategy = self.strategy_for(h, w)
        if strategy == "model":
            return self.network(x, t, class_labels)
        if strategy == "whole":
            return self._whole(x, t, class_labels)
        return self._tiles(x, t, class_labels)

    def _whole(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        ph, pw = -h % m, -w % m
        if ph == 0 and pw == 0:
            return self.network(x, t, class_labels)
        edge = _EDGES[self.edges]
        rows = edge(torch.arange(h + ph, device=x.device) - ph // 2, h)
        cols = edge(torch.arange(w + pw, device=x.device) - pw // 2, w)
        xp = x.index_select(2, rows).index_select(3, cols)  # (B, C, H + ph, W + pw)
        return self.network(xp, t, class_labels)[..., ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]

    def _offset_no_sync(self, t: torch.Tensor, grid: CanvasGrid, axis: int) -> torch.Tensor:
        """0-d int64 start of the canvas in the padded extent for this step: lead + hash(seed, axis, t) mod shift,
        on t's device."""
        if grid.shift == 1:
            return torch.full((), grid.lead, dtype=torch.int64, device=t.device)
        key = _hash32(torch.full((), (self.seed * 2 + axis) & _MASK32, dtype=torch.int64, device=t.device))
        return grid.lead + torch.remainder(_hash32(key ^ _hash32(t.reshape(-1)[0].to(torch.int64) & _MASK32)), grid.shift)

    def _tiles(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        b, c, h, w = x.shape
        gh, gw = self.grids(h, w)
        tile, dev = self.tile, x.device
        oy, ox = self._offset_no_sync(t, gh, 0), self._offset_no_sync(t, gw, 1)
        edge = _EDGES[self.edges]
        rows = edge(torch.arange(gh.padded, device=dev) - oy, h)  # padded coordinate → canvas row
        cols = edge(torch.arange(gw.padded, device=dev) - ox, w)
        xp = x.index_select(2, rows).index_select(3, cols)  # (B, C, Hp, Wp)
        per_image = gh.count * gw.count
        total = b * per_image
        window = self.window.to(x.device, x.dtype)
        chunks = []
        for start in range(0, total, self.max_rows):
            r = torch.arange(start, min(start + self.max_rows, total), device=dev)
            args = (xp, r, t, class_labels, gh, gw, window)
            if total > self.max_rows and _checkpointable(xp):
                chunks.append(checkpoint(self._tile_eps, *args, use_reentrant=False))
            else:
                chunks.append(self._tile_eps(*args))
        eps_w = torch.cat(chunks)  # (B·nh·nw, C, T, T), windowed
        cols_ = eps_w.view(b, per_image, c * tile * tile).transpose(1, 2)  # (B, C·T·T, nh·nw)
        fold = dict(output_size=(gh.padded, gw.padded), kernel_size=(tile, tile), stride=(gh.stride, gw.stride))
        num = F.fold(cols_, **fold)  # (B, C, Hp, Wp)
        den = F.fold(window.reshape(1, tile * tile, 1).expand(1, -1, per_image), **fold)  # (1, 1, Hp, Wp)
        eps_p = num / den
        in_rows = torch.arange(h, device=dev) + oy  # canvas row → padded coordinate
        in_cols = torch.arange(w, device=dev) + ox
        return eps_p.index_select(2, in_rows).index_select(3, in_cols)

    def _tile_eps(self, xp, r, t, class_labels, gh: CanvasGrid, gw: CanvasGrid, window):
        """Windowed ε of tile rows r (flat (image, i, j) indices): (len(r), C, T, T)."""
        per_image = gh.count * gw.count
        img, k = r // per_image, r % per_image
        i, j = k // gw.count, k % gw.count
        tile = self.tile
        ri = (i * gh.stride)[:, None] + torch.arange(tile, device=r.device)  # (n, T) padded rows
        ci = (j * gw.stride)[:, None] + torch.arange(tile, device=r.device)  # (n, T) padded cols
        ch = torch.arange(xp.shape[1], device=r.device)
        # one gather straight into (n, C, T, T) with NCHW strides (a permuted gather has channels-last strides
        # when C = 1, which sends the network's convolutions down another kernel)
        tiles = xp[img[:, None, None, None], ch[None, :, None, None], ri[:, None, :, None], ci[:, None, None, :]]
        labels = None if class_labels is None else class_labels[img]
        return self.network(tiles, t[img], labels) * window


def _checkpointable(x: torch.Tensor) -> bool:
    """Autograd will differentiate through x, by the tape (not torch.func transforms, not dynamo tracing, which
    do not take checkpoint's saved-tensor hooks)."""
    if torch.compiler.is_compiling() or torch._C._functorch.peek_interpreter_stack() is not None:
        return False
    return torch.is_grad_enabled() and x.requires_grad


def canvas_denoiser(
    denoiser: Denoiser,
    strategy: str | None = "auto",
    *,
    tile: int | None = None,
    overlap: int | None = None,
    shift: bool = True,
    max_rows: int = 64,
    seed: int = 0,
) -> Denoiser:
    """``denoiser`` as :class:`CanvasDenoiser` (what ``Restorer(strategy=...)`` uses); returned as it is when it
    already is one, when ``strategy`` is None (the model's own size only) or when the model takes any size and
    nothing but ``auto`` was asked for."""
    if isinstance(denoiser, CanvasDenoiser) or strategy is None:
        if (tile, overlap) != (None, None):
            where = "set them on the CanvasDenoiser" if strategy is not None else "they need strategy 'auto', 'tiles' or 'whole'"
            raise ValueError(f"tile/overlap given with {'a CanvasDenoiser' if strategy is not None else 'strategy=None'}: {where}")
        return denoiser
    if denoiser.image_size is None and strategy == "auto" and tile is None:
        return denoiser
    return CanvasDenoiser(denoiser, strategy, tile=tile, overlap=overlap, shift=shift, max_rows=max_rows, seed=seed)
