"""Any image size with a fixed-size model: the canvas denoiser.

:class:`CanvasDenoiser` is a :class:`~pgdm.denoiser.Denoiser` whose ``forward`` takes x: (B, C, H, W) of any
H, W ≥ 1 and returns ε of the same shape, so every method of :mod:`pgdm.methods` runs on a canvas unchanged:
it sees a denoiser and an operator built for the canvas (``pgdm.ops.parse(spec, (C, H, W))``).

Two strategies carry the network over the canvas:

- ``whole``: the network runs once on the canvas, reflect-padded (equally on both sides) to the multiple of
  2^(downsamplings) the architecture needs, and ε is cropped back.
- ``tiles``: overlapping tiles of the model's size (stride ``tile − overlap``) go through the network as rows of
  one batch, at most ``max_rows`` at a time (each call gathers its own tiles and adds its ε into the canvas, so
  only one call's tiles exist at once and memory beyond the network's is a few canvas-sized tensors), and their
  ε are blended with a separable window w that tapers as sin² over the overlap, each tile's copy divided by the
  windows' sum at its pixels so the weights at every pixel sum to 1: ε(x) = Σ_k P_kᵀ(w_k ⊙ ε_θ(P_k x)) with
  w_k = w ⊘ P_k(Σ_k' P_k'ᵀ w) (the network's output weighted before it is added, so no canvas-sized sum of
  weights is kept and the VJP, Σ_k P_kᵀ J_kᵀ(w_k ⊙ P_k u), needs no scaled copy of u). By default
  (``edges="inside"``) the tiles stay inside the canvas, the first and last of each row and column ending on its
  edge, so no tile sees past it; ``reflect`` and ``circular`` pad the canvas instead and let tiles run over its
  edge. With ``shift`` the grid moves every step by an offset in [0, stride)² drawn from the counter-based hash
  of :mod:`pgdm.rng` (a pure function of ``seed`` and the timestep), so seams do not stay in place and a restore
  stays reproducible. The blend is linear in the
  tiles' outputs, so the input VJP of ΠGDM, RG, DPS and C-ΠGDM goes through it as it goes through the network.

A canvas of exactly the model's size goes straight to the network (bitwise the fixed-size result), and
``auto`` picks ``tiles`` for a model trained at one size and ``whole`` for one without a size
(:meth:`CanvasDenoiser.strategy_for`). Everything is tensor indexing with device index tensors: no host sync
inside a step, fixed shapes per canvas size.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import nn

from . import validate
from .denoiser import Denoiser, eager_vjp
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
    """(tile,) window of one axis (the tiles' 2-D window is its outer product with itself): 1 inside,
    sin²(π/2 · (i + ½)/overlap) over the first and last ``overlap`` pixels, so two tiles overlapping by ``overlap``
    have weights summing to 1 there (sin² + cos² = 1). All ones for ``overlap=0``; every entry > 0."""
    w = torch.ones(tile, dtype=torch.float64)
    if overlap > 0:
        ramp = torch.sin(0.5 * math.pi * (torch.arange(overlap, dtype=torch.float64) + 0.5) / overlap) ** 2
        w[:overlap] = ramp
        w[tile - overlap :] = torch.minimum(w[tile - overlap :], ramp.flip(0))
    return w.to(dtype=dtype, device=device)


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


_EDGES = {"inside": _reflect_no_sync, "reflect": _reflect_no_sync, "circular": _circular_no_sync}  # "inside": tiles clamped to the canvas; reflect where it is smaller than a tile and for ``whole``


@dataclass(frozen=True)
class CanvasGrid:
    """The tile grid along one axis of a canvas of ``size`` pixels, in the coordinates of the extent [0, padded) the
    tiles are cut from.

    Two layouts. **Clamped** (``edges="inside"``, a canvas larger than a tile): the extent is the canvas itself;
    tile k starts at clamp(k·stride − offset, 0, size − tile), offset in [0, shift), so the first and last tiles end
    on the canvas edge and no tile sees past it. **Padded** (``reflect``/``circular``, or a canvas no larger than a
    tile): the canvas sits at [start, start + size) of a reflect- or wrap-padded extent, start = ``lead`` + offset,
    and tile k starts at k·stride; ``lead`` ≥ overlap, so near the canvas edge the tiles see context past it, as
    they see a neighbour's pixels inside. A canvas no larger than a tile is one tile, centred.

    Attributes: size: canvas pixels; tile, stride: tile side and step (tile − overlap); count: tiles along the
    axis; padded: the extent's length (``size`` when clamped); shift: the number of offsets drawn from (stride when
    the grid moves each step, else 1); lead: the canvas's start at offset 0 (0 when clamped); clamped: the layout;
    groups: tiles k and k + groups never overlap at any offset (the blend adds each such class in one pass).
    """

    size: int
    tile: int
    stride: int
    count: int
    padded: int
    shift: int
    lead: int
    clamped: bool = False
    groups: int = 1

    @classmethod
    def build(cls, size: int, tile: int, overlap: int, shift: bool, clamped: bool = False) -> "CanvasGrid":
        stride = tile - overlap
        if size <= tile:
            return cls(size, tile, stride, 1, tile, 1, (tile - size) // 2)
        moves = stride if shift else 1
        if clamped:  # cover [0, size) at every offset: the last unclamped start (count − 1)·stride − (moves − 1) ≥ size − tile
            count = math.ceil((size - tile + moves - 1) / stride) + 1
            # the last tile moves left by at most its overshoot at offset 0, the first right by at most moves − 1
            reach = tile + max((count - 1) * stride - (size - tile), moves - 1)
            return cls(size, tile, stride, count, size, moves, 0, True, min(count, math.ceil(reach / stride)))
        reach = size + 2 * overlap + moves - 1  # the extent must hold the canvas and both margins at every offset
        count = math.ceil((reach - tile) / stride) + 1
        padded = (count - 1) * stride + tile
        slack = padded - reach  # split between both ends
        return cls(size, tile, stride, count, padded, moves, overlap + slack // 2, False, min(count, math.ceil(tile / stride)))


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
        edges: what tiles see at the canvas edge: ``"inside"`` (default: tiles clamped inside the canvas, the
            outermost ending on its edge; a canvas side shorter than a tile, and ``whole``'s padding, reflected),
            ``"reflect"`` (the canvas mirrored without repeating the edge pixel, tiles running over its edge) or
            ``"circular"`` (the canvas wraps around: a periodic canvas, such as the analytic stationary prior of
            :mod:`pgdm.analytic` or a texture that tiles).

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
        edges: str = "inside",
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
            raise ValueError(f"unknown edges {edges!r}; expected one of {', '.join(_EDGES)}")
        self.strategy, self.shift, self.edges = strategy, bool(shift), edges
        self.max_rows = validate.positive_int("max_rows", max_rows)
        self.seed = validate.integer("seed", seed)
        if self.tile is not None:
            self.register_buffer("window_1d", blend_window(self.tile, self.overlap, device=denoiser.alphas_cumprod.device), persistent=False)

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
        clamped = self.edges == "inside"
        return tuple(CanvasGrid.build(n, self.tile, self.overlap, self.shift, clamped) for n in (height, width))

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
        """0-d int64 grid offset for this step, hash(seed, axis, t) mod shift (0 for a still grid), on t's device."""
        if grid.shift == 1:
            return torch.zeros((), dtype=torch.int64, device=t.device)
        key = _hash32(torch.full((), (self.seed * 2 + axis) & _MASK32, dtype=torch.int64, device=t.device))
        return torch.remainder(_hash32(key ^ _hash32(t.reshape(-1)[0].to(torch.int64) & _MASK32)), grid.shift)

    def _layout(self, t: torch.Tensor, grid: CanvasGrid, axis: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """One axis at this step: (tile starts in the extent (count,), extent → canvas index (padded,) or None when the
        extent is the canvas, canvas → extent index (size,) or None likewise)."""
        dev = t.device
        offset = self._offset_no_sync(t, grid, axis)
        starts = torch.arange(grid.count, device=dev) * grid.stride
        if grid.clamped:
            return torch.clamp(starts - offset, 0, grid.size - grid.tile), None, None
        at = grid.lead + offset
        return starts, _EDGES[self.edges](torch.arange(grid.padded, device=dev) - at, grid.size), torch.arange(grid.size, device=dev) + at

    def eps_with_vjp(
        self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """(ε over the canvas, u ↦ (∂ε/∂x)ᵀ u), as :meth:`Denoiser.eps_with_vjp`. A ``tiles`` canvas of more than
        ``max_rows`` tiles, differentiated eagerly (:func:`~pgdm.denoiser.eager_vjp`), keeps no tape: ε comes from
        network calls without one, and the VJP runs each call again under autograd (:meth:`_tiles_vjp`), so
        neither pass holds more than one call's activations, and the VJP nothing canvas-sized beyond u but its result
        (and the padded extent's gradients where tiles run past the canvas)."""
        if self.strategy_for(*x.shape[-2:]) == "tiles" and self._several_calls(x) and eager_vjp(x):
            with torch.no_grad():
                eps = self._tiles(x, t, class_labels)
            return eps, functools.partial(self._tiles_vjp, x, t, class_labels)
        return super().eps_with_vjp(x, t, class_labels)

    def _several_calls(self, x: torch.Tensor) -> bool:
        """The tiles of x take more than one network call (more than ``max_rows``)."""
        gh, gw = self.grids(*x.shape[-2:])
        return x.shape[0] * gh.count * gw.count > self.max_rows

    def _tile_step(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None) -> "_TileStep":
        """This step's tiling of x (B, C, H, W): the extent and its network calls."""
        h, w = x.shape[-2:]
        gh, gw = self.grids(h, w)
        ry, rows, in_rows = self._layout(t, gh, 0)
        rx, cols, in_cols = self._layout(t, gw, 1)
        xp = x if rows is None else x.index_select(2, rows)
        xp = xp if cols is None else xp.index_select(3, cols)  # (B, C, Hp, Wp)
        window_1d = self.window_1d.to(x.device, x.dtype)
        weights = (_tile_weights(ry, gh, window_1d), _tile_weights(rx, gw, window_1d))
        blocks = functools.partial(self._sum_blocks, t=t, class_labels=class_labels, ry=ry, rx=rx, weights=weights, grids=(gh, gw))
        return _TileStep(xp, blocks, rows, cols, in_rows, in_cols)

    def _tiles(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        step = self._tile_step(x, t, class_labels)
        if self._several_calls(x) and _recomputable(step.xp):  # several network calls, by the tape
            num = _RecomputedBlocks.apply(step.xp, step.blocks, *(p for p in self.net.parameters() if p.requires_grad))
        else:
            num, _ = step.blocks(step.xp)
        num = num if step.in_rows is None else num.index_select(2, step.in_rows)
        return num if step.in_cols is None else num.index_select(3, step.in_cols)

    def _tiles_vjp(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None, u: torch.Tensor) -> torch.Tensor:
        """(∂ε/∂x)ᵀ u for :meth:`_tiles` at x, u: (B, C, H, W): its operations transposed in reverse order (as autograd
        takes them: the same values), every network call run again under autograd. Beyond u it allocates the
        result and, where the tiles run past the canvas, the padded extent's gradients."""
        step = self._tile_step(x, t, class_labels)
        b, c, h, w = x.shape
        hp, wp = step.xp.shape[-2:]
        g = u if step.in_cols is None else u.new_zeros(b, c, h, wp).index_add_(3, step.in_cols, u)
        g = g if step.in_rows is None else g.new_zeros(b, c, hp, wp).index_add_(2, step.in_rows, g)
        g, _ = step.blocks(step.xp, g)
        g = g if step.cols is None else g.new_zeros(b, c, hp, w).index_add_(3, step.cols, g)
        return g if step.rows is None else g.new_zeros(b, c, h, w).index_add_(2, step.rows, g)

    def _sum_blocks(
        self, xp: torch.Tensor, grad: torch.Tensor | None = None, params: tuple[torch.Tensor, ...] = (), *,
        t: torch.Tensor, class_labels: torch.Tensor | None, ry: torch.Tensor, rx: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor],
        grids: tuple[CanvasGrid, CanvasGrid],
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:  # fmt: skip
        """Without ``grad``: (Σ_ij P_ijᵀ(w_ij ⊙ ε_θ(P_ij xp)) over every tile (i, j) of every image, ()), xp (B, C,
        Hp, Wp) → (B, C, Hp, Wp), w_ij the tile's normalised window (:func:`_tile_weights`, ``weights`` = the rows'
        and the columns' factors). With ``grad`` (B, C, Hp, Wp): that sum's VJP, (Σ_ij P_ijᵀ J_ijᵀ(w_ij ⊙ P_ij grad),
        the VJP's gradients of ``params``, network weights), J_ij the network's Jacobian at tile (i, j), each call's
        network run again under autograd. One network call per block of :func:`_chunks`, each added in place into
        one canvas: beyond xp (and grad) the only canvas-sized tensor is the result."""
        gh, gw = grids
        c, hp, wp = xp.shape[1:]
        sums, param_grads = [], ()
        for images, blocks in _chunks(xp.shape[0], gh.count, gw.count, self.max_rows):
            out = xp.new_zeros(images.stop - images.start, c, hp * wp)  # its own tensor, not a view: the in-place adds
            # trace as plain index_add (torch.compile, ONNX) where adding into a slice would not
            for i0, i1, j0, j1 in blocks:
                ryb, rxb = ry[i0:i1], rx[j0:j1]
                tiles = _gather_tiles(xp[images], ryb, rxb, self.tile)  # (b·ni·nj, C, T, T)
                n = (i1 - i0) * (j1 - j0)  # tiles per image in this call
                t_rows = t[images].repeat_interleave(n)
                labels = None if class_labels is None else class_labels[images].repeat_interleave(n)
                window = (weights[0][i0:i1, None, :, None] * weights[1][None, j0:j1, None, :]).view(n, 1, self.tile, self.tile)
                window = window.repeat(images.stop - images.start, 1, 1, 1)  # (b·ni·nj, 1, T, T), image-major as the tiles
                if grad is None:
                    vals = self.network(tiles, t_rows, labels) * window
                else:
                    with torch.enable_grad():
                        tiles = tiles.detach().requires_grad_()
                        eps_w = self.network(tiles, t_rows, labels) * window
                        vals, *grads = torch.autograd.grad(eps_w, (tiles, *params), _gather_tiles(grad[images], ryb, rxb, self.tile),
                                                           allow_unused=True, materialize_grads=True)  # fmt: skip
                    param_grads = tuple(grads) if not param_grads else tuple(a + g for a, g in zip(param_grads, grads))
                vals = vals.view(-1, i1 - i0, j1 - j0, c, self.tile, self.tile).permute(0, 3, 1, 2, 4, 5)
                _overlap_add(vals, ryb, rxb, gh, gw, out)
            sums.append(out.view(-1, c, hp, wp))
        return (sums[0] if len(sums) == 1 else torch.cat(sums)), param_grads


class _TileStep(NamedTuple):
    """One step's tiling (:meth:`CanvasDenoiser._tile_step`). xp: (B, C, Hp, Wp) the extent the tiles are cut from;
    blocks: :meth:`CanvasDenoiser._sum_blocks` bound to the step; rows, cols: extent → canvas indices, in_rows,
    in_cols: canvas → extent indices (None where the extent is the canvas)."""

    xp: torch.Tensor
    blocks: Callable
    rows: torch.Tensor | None
    cols: torch.Tensor | None
    in_rows: torch.Tensor | None
    in_cols: torch.Tensor | None


class _RecomputedBlocks(torch.autograd.Function):
    """``blocks(xp)`` (:meth:`CanvasDenoiser._sum_blocks` bound to one step) whose backward is ``blocks(xp, grad,
    params)``: each network call's activations are recomputed in the backward pass instead of being kept (a
    checkpoint per call), both passes add every call's result in place into one canvas, so neither keeps more than
    one call's tiles at a time, and ``params`` (the network's trainable weights) get their gradients too."""

    @staticmethod
    def forward(ctx, xp: torch.Tensor, blocks, *params: torch.Tensor) -> torch.Tensor:
        ctx.blocks = blocks
        ctx.save_for_backward(xp, *params)
        with torch.no_grad():
            return blocks(xp)[0]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        xp, *params = ctx.saved_tensors
        grad_xp, grad_params = ctx.blocks(xp.detach(), grad, tuple(params))
        return grad_xp, None, *grad_params


def _chunks(images: int, nh: int, nw: int, max_rows: int) -> list[tuple[slice, list[tuple[int, int, int, int]]]]:
    """How the tiles of ``images`` canvases of nh × nw tiles go through the network at most ``max_rows`` at a time:
    (a slice of the images, the blocks (i0, i1, j0, j1) of their grid), each block of each slice one network call.
    Whole grids of several images when one grid fits; otherwise one image at a time in blocks of whole grid rows
    (or of parts of one row when a row alone is larger), so only one call's tiles exist at once."""
    per_image = nh * nw
    if per_image <= max_rows:
        step = max_rows // per_image
        return [(slice(s, min(s + step, images)), [(0, nh, 0, nw)]) for s in range(0, images, step)]
    if nw <= max_rows:
        step = max_rows // nw
        blocks = [(i, min(i + step, nh), 0, nw) for i in range(0, nh, step)]
    else:
        blocks = [(i, i + 1, j, min(j + max_rows, nw)) for i in range(nh) for j in range(0, nw, max_rows)]
    return [(slice(s, s + 1), blocks) for s in range(images)]


def _tile_weights(starts: torch.Tensor, grid: CanvasGrid, window_1d: torch.Tensor) -> torch.Tensor:
    """(count, T): along one axis, tile k's window divided by the windows' sum at each of its pixels, w(s) / Σ_k'
    w(starts[k] + s − starts[k']). Tile (i, j)'s 2-D weight is the outer product of its row's and its column's
    (the window is separable and the tiles form a product grid), so the weights of the tiles covering a pixel sum to 1."""
    span = torch.arange(grid.tile, device=starts.device)
    return window_1d[None, :] * _coverage(starts, grid, window_1d).reciprocal()[starts[:, None] + span]


def _coverage(starts: torch.Tensor, grid: CanvasGrid, window_1d: torch.Tensor) -> torch.Tensor:
    """Σ_k w(p − starts[k]) at every extent position p along one axis: (grid.padded,)."""
    pos = torch.arange(grid.padded, device=starts.device)[None, :] - starts[:, None]  # (count, padded)
    inside = (pos >= 0) & (pos < grid.tile)
    return torch.where(inside, window_1d[pos.clamp(0, grid.tile - 1)], 0).sum(0)


def _gather_tiles(xp: torch.Tensor, ry: torch.Tensor, rx: torch.Tensor, tile: int) -> torch.Tensor:
    """Tile (i, j) of every image is xp[..., ry[i]:ry[i] + T, rx[j]:rx[j] + T]: (B, C, Hp, Wp) → (B·nh·nw, C, T, T),
    image-major, then i, then j."""
    b, c = xp.shape[:2]
    span = torch.arange(tile, device=xp.device)
    bi = torch.arange(b, device=xp.device)[:, None, None, None, None, None]
    ri = (ry[:, None] + span)[None, :, None, None, :, None]  # (1, nh, 1, 1, T, 1) extent rows
    ci = (rx[:, None] + span)[None, None, :, None, None, :]  # (1, 1, nw, 1, 1, T) extent cols
    ch = torch.arange(c, device=xp.device)[None, None, None, :, None, None]
    # one gather straight into (B, nh, nw, C, T, T), so the rows are NCHW-contiguous (a permuted view has
    # channels-last strides when C = 1, which sends the network's convolutions down another kernel)
    return xp[bi, ch, ri, ci].view(-1, c, tile, tile)


def _overlap_add(vals: torch.Tensor, ry: torch.Tensor, rx: torch.Tensor, gh: CanvasGrid, gw: CanvasGrid, out: torch.Tensor) -> None:
    """Σ_(i, j) of tile (i, j) of ``vals`` (B, C, nh, nw, T, T) placed at rows [ry[i], ry[i] + T) and columns
    [rx[j], rx[j] + T) of a zero (B, C, gh.padded, gw.padded) extent: the transpose of :func:`_gather_tiles`. The
    tiles are added one class of (i mod gh.groups, j mod gw.groups) at a time: inside a class no two tiles overlap,
    so every pixel takes at most one addition per pass and the sum's order is the same on every device and run.
    Added in place into ``out``, a (B, C, gh.padded · gw.padded) tensor."""
    b, c, nh, nw, tile, _ = vals.shape
    wp = gw.padded
    span = torch.arange(tile, device=vals.device)
    for gi in range(min(gh.groups, nh)):
        ii = torch.arange(gi, nh, gh.groups, device=vals.device)
        rows = (ry[ii][:, None] + span)[:, None, :, None] * wp  # (ni, 1, T, 1)
        for gj in range(min(gw.groups, nw)):
            jj = torch.arange(gj, nw, gw.groups, device=vals.device)
            idx = rows + (rx[jj][:, None] + span)[None, :, None, :]  # (ni, nj, T, T) flat extent positions
            part = vals.index_select(2, ii).index_select(3, jj)  # (B, C, ni, nj, T, T)
            out.index_add_(2, idx.reshape(-1), part.reshape(b, c, -1))


def _recomputable(x: torch.Tensor) -> bool:
    """Autograd will differentiate through x by the tape, where :class:`_RecomputedBlocks` applies (not under
    torch.func transforms or dynamo tracing, which differentiate the plain sum)."""
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
