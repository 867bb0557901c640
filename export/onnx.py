"""A method's whole step as one ONNX graph: network forward (and input-only VJP), h and h†, and the update.

:func:`export_step` traces the method's step function itself (for ΠGDM :func:`pgdm.methods.pigdm_step`, the
same function ``Restorer`` and ``pgdm.engine`` run) for one model, one operator and one batch size with ``make_fx``, decomposing the
backward operators that ONNX lacks into forward ones (an input-gradient convolution is a transposed
convolution), and writes it with ``torch.onnx.export``. The result runs in ONNX Runtime (tested) and is
the input a TensorRT engine is built from:

    inputs   x (B, C, H, W) float32; t () int64 and the method's other coefficients () float32 (one row of its
             table, :func:`coefficient_names`; ΠGDM: alpha_t, alpha_s, c1, c2, r2, w); y (B, …) float32; y_pinv (B, C, H, W) float32;
             noise (B, C, H, W) float32 standard normal; then sigma_y2 (B,) float32 for ``noisy=True``
             and class_labels (B,) int64 for class-conditional models
    outputs  x_next (B, C, H, W) float32, x0 (B, C, H, W) float32 (x̂ after clipping when ``clip_denoised``)

The operator's matrices/masks are constants of the graph; shapes are static (export once per batch
size and image size, as TensorRT engines are built). A :class:`pgdm.canvas.CanvasDenoiser` exports the step for
one canvas size (``canvas=(H, W)``, any H, W): its tile gathering, network rows and window blend are in the graph,
and so is the per-step grid shift, computed from ``t`` by the same counter-based hash as in PyTorch (its
``seed`` a constant), so the graph needs no input beyond a fixed-size model's. The file's metadata records what
the graph was built for (method, batch, image shape, canvas settings, noisy, class-conditional, clip_denoised,
an operator fingerprint). :class:`OnnxStepRestorer`
is a restorer like ``pgdm.Restorer`` (the same ``restore``: plan, then loop) whose loop runs the graph in ONNX
Runtime, refusing plans the graph does not fit and drawing the noise with :func:`pgdm.rng.gaussian_no_sync`, so
its samples are those of ``pgdm.Restorer`` up to float32 reordering.
"""
from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch._decomp import core_aten_decompositions
from torch.fx.experimental.proxy_tensor import make_fx
from torch.nn.attention import SDPBackend, sdpa_kernel

from pgdm import schedules
from pgdm.canvas import CanvasDenoiser
from pgdm.denoiser import Denoiser
from pgdm.methods import get_method
from pgdm.operators import Operator
from pgdm.sampler import RestoreInterface, SamplerSettings, SamplingPlan, settings_from, step_inputs

__all__ = ["OnnxStepRestorer", "UnsupportedStep", "coefficient_names", "export_step", "input_names", "step_decompositions"]

aten = torch.ops.aten
OUTPUTS = ("x_next", "x0")


class UnsupportedStep(ValueError):
    """A part of the step that the ONNX export cannot express (raised while tracing, reported by export_step)."""


def _conv_input_grad(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed, output_padding, groups, output_mask):
    """aten.convolution_backward for the input gradient only: the transposed convolution with the same weight.

    At stride 1 it is written as the plain convolution it equals — the kernel flipped in space, its input and output
    channels swapped within each group, padding dilation·(k − 1) − padding — because runtimes have their fastest
    kernels for Conv (ONNX Runtime's blocked NCHWc convolutions), not for ConvTranspose."""
    if transposed or list(output_mask) != [True, False, False]:
        raise UnsupportedStep(f"ONNX export differentiates w.r.t. the input of plain convolutions only (output_mask={output_mask})")
    k = weight.shape[2:]
    extra = [input.shape[2 + i] - ((grad_output.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k[i] - 1) + 1) for i in range(len(k))]
    flipped_pad = [dilation[i] * (k[i] - 1) - padding[i] for i in range(len(k))]
    if all(s == 1 for s in stride) and not any(extra) and all(p >= 0 for p in flipped_pad):
        c_out, c_in_g = weight.shape[:2]
        w = weight.reshape(groups, c_out // groups, c_in_g, *k).transpose(1, 2).reshape(c_in_g * groups, c_out // groups, *k)
        return aten.convolution(grad_output, w.flip(list(range(2, 2 + len(k)))), None, stride, flipped_pad, dilation, False, [0] * len(k), groups), None, None
    return aten.convolution(grad_output, weight, None, stride, padding, dilation, True, extra, groups), None, None


def _nearest_upsample_grad(grad_output, output_size, input_size, scales_h=None, scales_w=None):
    """aten.upsample_nearest2d_backward for integer factors: the sum over each fh×fw block."""
    b, c, h, w = input_size
    if output_size[0] % h or output_size[1] % w:
        raise UnsupportedStep(f"ONNX export supports integer nearest upsampling only ({h}x{w} → {output_size[0]}x{output_size[1]})")
    fh, fw = output_size[0] // h, output_size[1] // w
    return grad_output.reshape(b, c, h, fh, w, fw).sum((3, 5))


def _avg_pool_grad(grad_output, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """aten.avg_pool2d_backward for non-overlapping windows that tile the input: spread evenly."""
    b, c, h, w = input.shape
    kh, kw = kernel_size
    tiles = list(stride or kernel_size) == [kh, kw] and not any(padding) and not ceil_mode and not divisor_override
    if not tiles or h % kh or w % kw:
        raise UnsupportedStep(f"ONNX export supports non-overlapping average pooling that tiles the input only (kernel {kernel_size}, stride {stride}, {h}x{w})")
    spread = grad_output[:, :, :, None, :, None].expand(b, c, h // kh, kh, w // kw, kw) / (kh * kw)
    return spread.reshape(b, c, h, w)


def _empty_permuted(size, physical_layout, *, dtype=None, layout=None, device=None, pin_memory=None):
    """aten.empty_permuted (torch.func's buffers): layout is irrelevant in ONNX; zeros instead of garbage."""
    return torch.zeros(size, dtype=dtype, device=device)


def step_decompositions() -> dict:
    """PyTorch's core ATen decompositions plus what ONNX lacks: the three backward operators the UNets need
    (in forward ops) and torch.func's permuted empty buffers."""
    table = dict(core_aten_decompositions())
    table[aten.empty_permuted.default] = _empty_permuted
    table[aten.convolution_backward.default] = _conv_input_grad
    table[aten.upsample_nearest2d_backward.default] = _nearest_upsample_grad
    table[aten.avg_pool2d_backward.default] = _avg_pool_grad
    return table


def coefficient_names(method: str = "pigdm") -> list[str]:
    """The names of a method's per-step coefficients, in the graph's input order (``t`` first)."""
    return list(SamplerSettings(method, steps=2).coefficients(schedules.linear(2)))


def input_names(noisy: bool, class_cond: bool, method: str = "pigdm") -> list[str]:
    """The graph's input names, in order (see the module docstring)."""
    return ["x", *coefficient_names(method), "y", "y_pinv", "noise"] + (["sigma_y2"] if noisy else []) + (["class_labels"] if class_cond else [])


class _Step(nn.Module):
    """The method's step with flat tensor arguments, in the graph's input order."""

    def __init__(self, denoiser: Denoiser, op: Operator, noisy: bool, clip_denoised: bool, method: str) -> None:
        super().__init__()
        self.denoiser, self.op, self.noisy, self.clip_denoised = denoiser, op, noisy, clip_denoised
        self.names, self.method_step = coefficient_names(method), get_method(method).step

    def forward(self, x, *args):
        n = len(self.names)
        coef = dict(zip(self.names, args[:n]))
        y, y_pinv, noise, *rest = args[n:]
        sigma_y2 = rest[0] if self.noisy else None
        labels = rest[-1] if self.denoiser.class_cond else None
        return self.method_step(self.denoiser, x, coef, y, y_pinv, self.op, noise, sigma_y2=sigma_y2, class_labels=labels, clip_denoised=self.clip_denoised)


def _image_shape(denoiser: Denoiser, canvas: tuple[int, int] | None) -> tuple[int, int, int]:
    """(C, H, W) of the graph's images: the model's size, or ``canvas`` for a :class:`CanvasDenoiser`."""
    if canvas is None:
        if isinstance(denoiser, CanvasDenoiser):
            raise ValueError("export_step of a CanvasDenoiser needs canvas=(H, W): the ONNX graph has static shapes")
        if denoiser.image_size is None:
            raise ValueError("export_step needs a model with a fixed image_size (the ONNX graph has static shapes)")
        return denoiser.channels, denoiser.image_size, denoiser.image_size
    if len(canvas) != 2 or not all(isinstance(v, int) and v >= 1 for v in canvas):
        raise ValueError(f"canvas must be (H, W), two integers ≥ 1, got {canvas!r}")
    if not isinstance(denoiser, CanvasDenoiser) and tuple(canvas) != (denoiser.image_size,) * 2:
        raise ValueError(f"canvas={tuple(canvas)} needs a CanvasDenoiser (pgdm.canvas) around the model; this one takes {denoiser.image_size}×{denoiser.image_size} only")
    return denoiser.channels, int(canvas[0]), int(canvas[1])


def _example_inputs(
    denoiser: Denoiser, op: Operator, shape: tuple[int, int, int], batch: int, noisy: bool, seed: int, settings: SamplerSettings
) -> list[torch.Tensor]:
    """Step inputs for tracing (seed 0) and for checking the traced graph on other values (other seeds), for
    images of ``shape`` (C, H, W)."""
    T = denoiser.num_timesteps
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *shape, generator=gen)
    y = op(x.clamp(-1, 1))
    t = (T // 2 + seed * 97) % (T - 1)
    table = settings.spec.coefficients(denoiser.alphas_cumprod, torch.tensor([t, t // 2]), **settings.method_options(op))
    coef = {k: v[0] for k, v in table.items()}
    args = [x, coef["t"]] + [v.float() for k, v in coef.items() if k != "t"] + [y, op.pinv(y), torch.randn(x.shape, generator=gen)]
    if noisy:
        args.append(torch.rand(batch, generator=gen) * 0.02 * (torch.arange(batch) > 0))  # row 0 noiseless
    if denoiser.class_cond:
        args.append(torch.randint(0, 2, (batch,), generator=gen))
    return args


def export_step(
    denoiser: Denoiser,
    op: Operator,
    path: str | os.PathLike,
    batch_size: int,
    *,
    canvas: tuple[int, int] | None = None,
    noisy: bool = False,
    clip_denoised: bool = True,
    method: str = "pigdm",
    options: dict | None = None,
) -> str:
    """Write a method's step (ΠGDM by default) for ``op`` on float32 (batch_size, C, H, W) images to ``path`` (ONNX);
    returns the path. ``method``/``options``: as for ``pgdm.Restorer``.

    ``denoiser``: a model with a fixed ``image_size``, or a :class:`pgdm.canvas.CanvasDenoiser` around one with
    ``canvas``, any device/dtype (a float32 CPU copy is traced).
    ``op``: an operator with batch-independent parameters (an inpainting mask of batch 1, SR, JPEG, …), built for
    the graph's images (``pgdm.ops.parse(spec, (C, H, W))``);
    ``canvas``: (H, W) of the images the graph takes, for a ``CanvasDenoiser`` (default: the model's size);
    ``noisy``: the graph takes per-image sigma_y2 (the noisy guidance, linear operators only);
    ``clip_denoised``: as for ``Restorer``. The traced graph is checked against the eager step on two
    other input sets (other t, images, noise, σ_y, labels) before it is written, and the written file
    in ONNX Runtime (when installed) once more, so a value baked in by tracing or an exporter that
    changes the arithmetic is an error, not a wrong file. Raises ValueError (one line) for what cannot
    be exported.
    """
    shape = _image_shape(denoiser, canvas)
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    if noisy and not op.linear:
        raise ValueError(f"noisy guidance needs a linear operator; {type(op).__name__} is not (export it with noisy=False)")
    settings = SamplerSettings(method, steps=2, options=options or {})
    settings.spec.check_operator(op)
    if not op.is_row_independent():
        raise ValueError("export_step needs an operator without per-image parameters (e.g. an inpainting mask of batch 1): they would become graph constants")
    try:
        import onnxscript.optimizer  # torch.onnx's exporter builds the graph with it
    except ImportError:
        raise ValueError("ONNX export needs onnx and onnxscript: pip install 'pgdm[onnx]'") from None
    den = copy.deepcopy(denoiser).float().cpu().eval().requires_grad_(False)
    op = copy.deepcopy(op).cpu()
    step = _Step(den, op, noisy, clip_denoised, settings.method)
    try:
        with sdpa_kernel(SDPBackend.MATH):  # attention as matmul + softmax, which ONNX has
            graph = make_fx(step, decomposition_table=step_decompositions(), tracing_mode="real")(*_example_inputs(den, op, shape, batch_size, noisy, 0, settings))
        for seed in (1, 2):
            check = _example_inputs(den, op, shape, batch_size, noisy, seed, settings)
            for got, want in zip(graph(*check), step(*check)):
                if float((got - want).norm()) > 1e-4 * float(want.norm()) + 1e-6:
                    raise UnsupportedStep("the traced step depends on input values (a Python branch or .item() in the model or operator)")
        example = _example_inputs(den, op, shape, batch_size, noisy, 0, settings)
        program = torch.onnx.export(
            _Graph(graph).eval(), tuple(example), dynamo=True, verbose=False, optimize=False,
            input_names=input_names(noisy, den.class_cond, settings.method), output_names=list(OUTPUTS),
        )  # fmt: skip
    except (UnsupportedStep, torch.onnx.errors.OnnxExporterError) as e:
        raise ValueError(f"cannot export the {settings.method} step for {type(op).__name__} to ONNX: {_reason(e)}") from e
    # constant folding and dead-node removal only: the exporter's default optimisation adds pattern rewrites that
    # take minutes on a step graph (thousands of nodes: the network and its VJP) for no measurable speed in
    # ONNX Runtime, which fuses on its own when it loads the file
    onnxscript.optimizer.fold_constants(program.model)
    onnxscript.optimizer.remove_unused_nodes(program.model)
    meta = dict(method=settings.method, batch=batch_size, image="×".join(map(str, shape)), noisy=noisy, class_cond=den.class_cond,
                clip_denoised=clip_denoised, operator=op.fingerprint())  # fmt: skip
    if isinstance(den, CanvasDenoiser):
        meta["canvas"] = f"{den.strategy_for(*shape[1:])}: {den.extra_repr()}, seed={den.seed}"
    program.model.metadata_props.update({f"pgdm.{k}": str(v) for k, v in meta.items()})
    program.save(os.fspath(path))
    _check_in_onnx_runtime(os.fspath(path), step, _example_inputs(den, op, shape, batch_size, noisy, 1, settings))
    return os.fspath(path)


def _check_in_onnx_runtime(path: str, step: nn.Module, inputs: list[torch.Tensor]) -> None:
    """Run the written graph in ONNX Runtime (when installed) against the eager step; delete it and raise if the
    ONNX conversion changed the results (seen with torch 2.11's exporter on JPEG's integer rounding)."""
    try:
        import onnxruntime
    except ImportError:
        return
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = {i.name: v.numpy() for i, v in zip(session.get_inputs(), inputs)}
    for name, got, want in zip(OUTPUTS, session.run(list(OUTPUTS), feed), step(*inputs)):
        err = float((torch.from_numpy(got) - want).norm() / want.norm().clamp_min(1e-12))
        if err > 1e-4:
            os.remove(path)
            raise ValueError(f"the ONNX graph does not compute the step: {name} differs by {err:.2e} (relative) in ONNX Runtime; torch {torch.__version__}'s exporter")


def _reason(error: Exception) -> str:
    """The exporter's one-line cause (its "Exception summary" line) without terminal colour codes."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() or [type(error).__name__]
    return next((ln for ln in lines if ln.startswith("<class")), lines[0])


class _Graph(nn.Module):
    """A traced GraphModule as the module ``torch.onnx.export`` takes (its own ``forward`` signature)."""

    def __init__(self, traced: nn.Module) -> None:
        super().__init__()
        self.traced = traced  # not "graph": that name is a GraphModule attribute torch.export trips over

    def forward(self, *args):
        return self.traced(*args)


class OnnxStepRestorer(RestoreInterface):
    """``restore`` (:meth:`pgdm.sampler.RestoreInterface.restore`, as ``pgdm.Restorer``) with the exported step run in
    ONNX Runtime (CPU or any provider).

    The graph fixes the method, batch size, image size, operator and clip_denoised; ``denoiser`` (the exported
    model: the ``CanvasDenoiser`` for a canvas graph) gives the noise schedule the plan is made with, and ``steps``, ``eta``, ``start_step``, ``options`` the sampler's
    settings as for ``pgdm.Restorer``. The host loop feeds each step's coefficients and the counter-based noise
    (the same draws as ``pgdm.Restorer``). A plan must fit the graph: its batch size, operator, noise (a noisy
    graph also runs noiseless plans: σ_y = 0 rows take the noiseless guidance), labels and clip_denoised.
    ``threads``: ONNX Runtime's intra-op threads (None: its default). ``end_on_measurement``: as for ``pgdm.Restorer``
    (applied after the loop, outside the graph).

    Example:
        >>> runner = OnnxStepRestorer("sr4_b2.onnx", pgdm.load_model("default"), steps=20)
        >>> x = runner.restore(y, op, seed=0)   # (2, 1, 32, 32) in [-1, 1]
    """

    def __init__(
        self,
        path: str | os.PathLike,
        denoiser: Denoiser,
        steps: int = 100,
        eta: float | None = None,
        start_step: int | None = None,
        *,
        options: dict | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int | None = None,
        end_on_measurement: bool = True,
    ) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ValueError("running an exported step needs onnxruntime: pip install 'pgdm[onnx]'") from None
        session_options = onnxruntime.SessionOptions()
        if threads:
            session_options.intra_op_num_threads = threads
        self.path = os.fspath(path)  # the graph file (another runtime, e.g. OpenVINO, can read the same)
        self.session = onnxruntime.InferenceSession(self.path, session_options, providers=list(providers))
        self.names = [i.name for i in self.session.get_inputs()]
        self.meta = self.session.get_modelmeta().custom_metadata_map  # "pgdm.*" keys written by export_step
        self.batch = int(self.meta.get("pgdm.batch", self.session.get_inputs()[0].shape[0]))
        self.method = self.meta.get("pgdm.method", "pigdm")
        self.coefficients = coefficient_names(self.method)
        clip_denoised = self.meta.get("pgdm.clip_denoised", "True") == "True"
        self.settings = settings_from(self.method, steps, eta, start_step, clip_denoised, options, end_on_measurement=end_on_measurement)
        self.settings.check_model(denoiser)
        self.denoiser = denoiser

    def check_plan(self, plan: SamplingPlan) -> None:
        """Raise a one-line ValueError when ``plan`` does not fit this graph."""
        rows = plan.rows
        if plan.method != self.method:
            raise ValueError(f"this graph runs method {self.method!r}, the plan is for {plan.method!r}")
        if rows != self.batch:
            raise ValueError(f"this graph was exported for batch {self.batch}, the plan has {rows} rows")
        image = self.meta.get("pgdm.image")
        if image and "×".join(map(str, plan.x_init.shape[1:])) != image:
            raise ValueError(f"this graph was exported for {image} images, the plan's are {'×'.join(map(str, plan.x_init.shape[1:]))}")
        if plan.sigma_y2 is not None and "sigma_y2" not in self.names:
            raise ValueError("the plan has measurement noise but this graph was exported without noisy=True")
        if (plan.class_labels is not None) != ("class_labels" in self.names):
            raise ValueError("class labels: the plan and the exported model disagree on class conditioning")
        if self.meta.get("pgdm.clip_denoised", str(plan.clip_denoised)) != str(plan.clip_denoised):
            raise ValueError(f"this graph was exported with clip_denoised={self.meta['pgdm.clip_denoised']}, the plan has {plan.clip_denoised}")
        fingerprint = self.meta.get("pgdm.operator", "")
        if fingerprint and plan.op.fingerprint() != fingerprint:
            raise ValueError(f"the plan's operator ({type(plan.op).__name__}) is not the one this graph was exported with")

    def run_plan(self, plan: SamplingPlan, callback: Callable[[dict], None] | None = None) -> torch.Tensor:
        """Every step of ``plan``; returns the final samples (B, C, H, W), unclamped, float32 on the CPU.

        callback: called after every step with {"i", "t", "x"}."""
        self.check_plan(plan)
        fixed = self.plan_inputs(plan)  # converted once, not every step
        x = plan.x_init.float().cpu()
        for i in range(plan.coefs["t"].shape[0]):
            x = torch.from_numpy(self.session.run(["x_next"], self.step_feed(plan, x, i, fixed))[0])
            if callback is not None:
                callback({"i": i, "t": plan.coefs["t"][i], "x": x})
        return x

    def plan_inputs(self, plan: SamplingPlan) -> dict:
        """The graph inputs that stay the same for every step of ``plan`` (y, h†(y), σ_y², labels) as NumPy arrays."""
        fixed = {"y": plan.y.float().cpu().numpy(), "y_pinv": plan.y_pinv.float().cpu().numpy()}
        if "sigma_y2" in self.names:
            sigma_y2 = plan.sigma_y2 if plan.sigma_y2 is not None else torch.zeros(plan.rows)
            fixed["sigma_y2"] = sigma_y2.float().cpu().numpy()
        if "class_labels" in self.names:
            fixed["class_labels"] = plan.class_labels.cpu().numpy()
        return fixed

    def step_feed(self, plan: SamplingPlan, x: torch.Tensor, i: int, fixed: dict | None = None) -> dict:
        """The graph's inputs for step ``i`` of ``plan`` from the current sample ``x`` (B, C, H, W) float32 CPU;
        ``fixed``: :meth:`plan_inputs` of the plan, when the caller already has it."""
        coef, noise = step_inputs(plan, i, torch.float32)
        feed = {"x": x.numpy(), "noise": noise.cpu().numpy()}
        feed |= {k: coef[k].cpu().numpy() if k == "t" else coef[k].float().cpu().numpy() for k in self.coefficients}
        return feed | (fixed if fixed is not None else self.plan_inputs(plan))
