"""input_vjp: the input-only VJP of pigdm_step, eager (autograd.grad) and under dynamo (torch.func.vjp)."""
import torch
from torch import nn

from pgdm.sampler import input_vjp


def _net_and_inputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.SiLU(), nn.Conv2d(4, 2, 3, padding=1)).double()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    v = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    return net, x, v


def _f(net):
    def f(x):
        eps = net(x)
        return x - 0.5 * eps, eps  # (x̂-like output, aux)

    return f


def test_eager_vjp_is_the_dense_jacobian_transpose_times_v_with_no_weight_gradients():
    net, x, v = _net_and_inputs()  # trainable weights, on purpose
    jac = torch.autograd.functional.jacobian(lambda z: _f(net)(z)[0], x).reshape(x.numel(), x.numel())
    want = (jac.T @ v.flatten()).reshape(x.shape)
    with torch.no_grad():  # how the samplers call it
        out, vjp_fn, aux = input_vjp(_f(net), x)
        (got,) = vjp_fn(v)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out, _f(net)(x)[0])
    assert not out.requires_grad and not aux.requires_grad and not got.requires_grad
    assert all(p.grad is None for p in net.parameters())


def test_dynamo_traced_vjp_equals_eager():
    net, x, v = _net_and_inputs()
    net.requires_grad_(False)

    def step(x, v):
        out, vjp_fn, aux = input_vjp(_f(net), x)
        return out, vjp_fn(v)[0], aux

    eager = step(x, v)
    traced = torch.compile(step, backend="eager", fullgraph=True)(x, v)  # the torch.func.vjp branch, no Inductor
    for a, b in zip(traced, eager):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
