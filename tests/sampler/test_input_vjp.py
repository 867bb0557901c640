"""input_vjp: the input-only VJP of pigdm_step, eager (autograd.grad) and under dynamo (torch.func.vjp)."""
import contextlib

import pytest
import torch
from torch import nn

from pgdm.methods import input_vjp


def _net_and_inputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.SiLU(), nn.Conv2d(4, 2, 3, padding=1)).double()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    v = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    return net, x, v


def _f(net):
    return lambda x: x - 0.5 * net(x)  # an x̂-like output


def _dense_vjp(net, x, v):
    jac = torch.autograd.functional.jacobian(_f(net), x).reshape(x.numel(), x.numel())
    return (jac.T @ v.flatten()).reshape(x.shape)


CONTEXTS = {"no_grad": torch.no_grad, "grad_enabled": contextlib.nullcontext, "inference_mode": torch.inference_mode}


@pytest.mark.parametrize("context", CONTEXTS)
def test_vjp_is_the_dense_jacobian_transpose_times_v_and_computes_no_weight_gradient(context):
    net, x, v = _net_and_inputs()  # trainable weights, on purpose
    want = _dense_vjp(net, x, v)
    weight_grads = []
    for p in net.parameters():
        p.register_hook(lambda g: weight_grads.append(g))
    with CONTEXTS[context]():
        out, vjp_fn = input_vjp(_f(net), x)
        got = vjp_fn(v)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out, _f(net)(x).detach())
    assert not out.requires_grad and not got.requires_grad
    assert not weight_grads, "a weight gradient was computed"


def test_an_x_that_needs_a_gradient_keeps_out_differentiable():
    net, x, v = _net_and_inputs()
    x.requires_grad_()
    out, vjp_fn = input_vjp(_f(net), x)  # grad mode on: the caller differentiates through the step
    g = vjp_fn(v)
    torch.testing.assert_close(g, _dense_vjp(net, x.detach(), v), rtol=1e-10, atol=1e-12)
    (dx,) = torch.autograd.grad((out * v).sum(), x)
    torch.testing.assert_close(dx, g, rtol=1e-10, atol=1e-12)


def test_an_output_that_ignores_x_has_a_zero_vjp():
    x, v = torch.randn(2, 3), torch.randn(2, 3)
    const = torch.ones(2, 3)
    with torch.no_grad():
        g = input_vjp(lambda z: const * 2, x)[1](v)
    assert torch.equal(g, torch.zeros_like(x))


def test_dynamo_traced_vjp_equals_eager():
    net, x, v = _net_and_inputs()
    net.requires_grad_(False)

    def step(x, v):
        out, vjp_fn = input_vjp(_f(net), x)
        return out, vjp_fn(v)

    eager = step(x, v)
    traced = torch.compile(step, backend="eager", fullgraph=True)(x, v)  # the torch.func.vjp branch, no Inductor
    for a, b in zip(traced, eager):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
