"""The whole ΠGDM step as one ONNX graph: network forward, input-only VJP, h and h†, and the update.

:func:`export_step` traces :func:`pgdm.sampler.pigdm_step` itself (the same function ``Restorer`` and
``pgdm.engine`` run) for one model, one operator and one batch size with ``make_fx``, decomposing the
backward operators that ONNX lacks into forward ones (an input-gradient convolution is a transposed
convolution), and writes it with ``torch.onnx.export``. The result runs in ONNX Runtime or TensorRT:

    inputs   x (B, C, H, W) float32; t () int64; alpha_t, alpha_s, c1, c2, r2 () float32 (one row of
             :func:`pgdm.sampler.pigdm_coefficients`); y (B, …) float32; y_pinv (B, C, H, W) float32;
             noise (B, C, H, W) float32 standard normal; then sigma_y2 (B,) float32 for ``noisy=True``
             and class_labels (B,) int64 for class-conditional models
    outputs  x_next (B, C, H, W) float32, x0 (B, C, H, W) float32 (x̂ after clipping when ``clip_denoised``)

The operator's matrices/masks are constants of the graph; shapes are static (export once per batch
size, as TensorRT engines are built). :class:`OnnxStepRestorer` runs a whole restore with the graph in
ONNX Runtime, drawing the noise with :func:`pgdm.rng.gaussian_no_sync`, so its samples are those of
``pgdm.Restorer`` up to float32 reordering.
"""
from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence

import torch
from torch import nn
from torch._decomp import core_aten_decompositions
from torch.fx.experimental.proxy_tensor import make_fx
from torch.nn.attention import SDPBackend, sdpa_kernel

from pgdm.denoiser import Denoiser
from pgdm.operators import Operator
from pgdm.rng import gaussian_no_sync
from pgdm.sampler import SamplingPlan, pigdm_coefficients, pigdm_step, summarize_samples

__all__ = ["COEFFICIENTS", "OnnxStepRestorer", "export_step", "input_names", "step_decompositions"]

aten = torch.ops.aten
COEFFICIENTS = ("t", "alpha_t", "alpha_s", "c1", "c2", "r2")
OUTPUTS = ("x_next", "x0")


def _conv_input_grad(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed, output_padding, groups, output_mask):
    """aten.convolution_backward for the input gradient only: the transposed convolution with the same weight."""
    if transposed or list(output_mask) != [True, False, False]:
        raise NotImplementedError(f"ONNX export differentiates w.r.t. the input of plain convolutions only (output_mask={output_mask})")
    k = weight.shape[2:]
    extra = [input.shape[2 + i] - ((grad_output.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k[i] - 1) + 1) for i in range(len(k))]
    return aten.convolution(grad_output, weight, None, stride, padding, dilation, True, extra, groups), None, None


def _nearest_upsample_grad(grad_output, output_size, input_size, scales_h=None, scales_w=None):
    """aten.upsample_nearest2d_backward for integer factors: the sum over each fh×fw block."""
    b, c, h, w = input_size
    if output_size[0] % h or output_size[1] % w:
        raise NotImplementedError(f"ONNX export supports integer nearest upsampling only ({h}x{w} → {output_size[0]}x{output_size[1]})")
    fh, fw = output_size[0] // h, output_size[1] // w
    return grad_output.reshape(b, c, h, fh, w, fw).sum((3, 5))


def _avg_pool_grad(grad_output, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """aten.avg_pool2d_backward for non-overlapping windows (stride = kernel, no padding): spread evenly."""
    if list(stride) != list(kernel_size) or any(padding) or divisor_override:
        raise NotImplementedError(f"ONNX export supports non-overlapping average pooling only (kernel {kernel_size}, stride {stride})")
    b, c, h, w = input.shape
    kh, kw = kernel_size
    spread = grad_output[:, :, :, None, :, None].expand(b, c, h // kh, kh, w // kw, kw) / (kh * kw)
    return spread.reshape(b, c, h, w)


def step_decompositions() -> dict:
    """PyTorch's core ATen decompositions plus the three backward operators the UNets need, in forward ops."""
    table = dict(core_aten_decompositions())
    table[aten.convolution_backward.default] = _conv_input_grad
    table[aten.upsample_nearest2d_backward.default] = _nearest_upsample_grad
    table[aten.avg_pool2d_backward.default] = _avg_pool_grad
    return table


def input_names(noisy: bool, class_cond: bool) -> list[str]:
    """The graph's input names, in order (see the module docstring)."""
    return ["x", *COEFFICIENTS, "y", "y_pinv", "noise"] + (["sigma_y2"] if noisy else []) + (["class_labels"] if class_cond else [])


class _Step(nn.Module):
    """pigdm_step with flat tensor arguments, in the graph's input order."""

    def __init__(self, denoiser: Denoiser, op: Operator, noisy: bool, clip_denoised: bool) -> None:
        super().__init__()
        self.denoiser, self.op, self.noisy, self.clip_denoised = denoiser, op, noisy, clip_denoised

    def forward(self, x, t, alpha_t, alpha_s, c1, c2, r2, y, y_pinv, noise, *rest):
        coef = dict(zip(COEFFICIENTS, (t, alpha_t, alpha_s, c1, c2, r2)))
        sigma_y2 = rest[0] if self.noisy else None
        labels = rest[-1] if self.denoiser.class_cond else None
        return pigdm_step(self.denoiser, x, coef, y, y_pinv, self.op, noise, sigma_y2=sigma_y2, class_labels=labels, clip_denoised=self.clip_denoised)


def _example_inputs(denoiser: Denoiser, op: Operator, batch: int, noisy: bool) -> list[torch.Tensor]:
    c, s = denoiser.channels, denoiser.image_size
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c, s, s, generator=gen)
    y = op(x.clamp(-1, 1))
    coef = {k: v[0] for k, v in pigdm_coefficients(denoiser.alphas_cumprod, torch.tensor([500, 400]), 1.0).items()}
    args = [x, coef["t"]] + [coef[k].float() for k in COEFFICIENTS[1:]] + [y, op.pinv(y), torch.randn(x.shape, generator=gen)]
    if noisy:
        args.append(torch.full((batch,), 0.01))
    if denoiser.class_cond:
        args.append(torch.zeros(batch, dtype=torch.int64))
    return args


def export_step(
    denoiser: Denoiser,
    op: Operator,
    path: str | os.PathLike,
    batch_size: int,
    *,
    noisy: bool = False,
    clip_denoised: bool = True,
) -> str:
    """Write the ΠGDM step for ``op`` on float32 (batch_size, C, H, W) images to ``path`` (ONNX); returns the path.

    ``denoiser``: a float32 model on the CPU with a fixed ``image_size`` (it is copied and frozen, not changed).
    ``op``: an operator with batch-independent parameters (an inpainting mask of batch 1, SR, blur, …);
    ``noisy``: the graph takes per-image sigma_y2 (the noisy guidance); ``clip_denoised``: as for ``Restorer``.
    Raises ValueError (one line) for a model or operator the exporter cannot express.
    """
    if denoiser.image_size is None:
        raise ValueError("export_step needs a model with a fixed image_size (the ONNX graph has static shapes)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    den = copy.deepcopy(denoiser).float().cpu().eval().requires_grad_(False)
    step = _Step(den, op, noisy, clip_denoised)
    example = _example_inputs(den, op, batch_size, noisy)
    try:
        with sdpa_kernel(SDPBackend.MATH):  # attention as matmul + softmax, which ONNX has
            graph = make_fx(step, decomposition_table=step_decompositions(), tracing_mode="real")(*example)
        program = torch.onnx.export(
            _Graph(graph).eval(), tuple(example), dynamo=True, verbose=False,
            input_names=input_names(noisy, den.class_cond), output_names=list(OUTPUTS),
        )  # fmt: skip
    except (NotImplementedError, torch.onnx.errors.OnnxExporterError) as e:
        raise ValueError(f"cannot export the ΠGDM step for {type(op).__name__} to ONNX: {_reason(e)}") from e
    program.save(os.fspath(path))
    return os.fspath(path)


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


class OnnxStepRestorer:
    """Runs a :class:`~pgdm.sampler.SamplingPlan` with an exported step in ONNX Runtime (CPU or any provider).

    The host loop feeds each step's coefficients and the counter-based noise (the same draws as
    ``pgdm.Restorer``); ``restore`` takes a plan of exactly the exported batch size.
    """

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        import onnxruntime  # optional dependency: pip install 'pgdm[onnx]'

        self.session = onnxruntime.InferenceSession(os.fspath(path), providers=list(providers))
        self.names = [i.name for i in self.session.get_inputs()]
        self.batch = self.session.get_inputs()[0].shape[0]

    def run_plan(self, plan: SamplingPlan) -> torch.Tensor:
        """Every step of ``plan``; returns the final samples (B, C, H, W), unclamped, float32 on the CPU."""
        if plan.x_init.shape[0] != self.batch:
            raise ValueError(f"this graph was exported for batch {self.batch}, the plan has {plan.x_init.shape[0]} rows")
        fixed = {"y": plan.y, "y_pinv": plan.y_pinv, "sigma_y2": plan.sigma_y2, "class_labels": plan.class_labels}
        fixed = {k: v.cpu().numpy() if k == "class_labels" else v.float().cpu().numpy() for k, v in fixed.items() if v is not None and k in self.names}
        x = plan.x_init.float().cpu()
        for i in range(plan.coefs["t"].shape[0]):
            feed = dict(fixed, x=x.numpy(), noise=gaussian_no_sync(plan.keys.cpu(), i, x.shape[1:], torch.float32).numpy())
            feed.update({k: plan.coefs[k][i].cpu().numpy() if k == "t" else plan.coefs[k][i].float().cpu().numpy() for k in COEFFICIENTS})
            x = torch.from_numpy(self.session.run(["x_next"], feed)[0])
        return x

    def restore(self, plan: SamplingPlan, return_std: bool = False):
        """The plan's restored images in [-1, 1] (mean over its K samples), as ``Restorer.restore`` returns them."""
        return summarize_samples(self.run_plan(plan), plan.num_samples, return_std)
