"""The UNets' attention helper against softmax(q·kᵀ/√d)·v written out in float64."""
import pytest
import torch
import torch.nn.functional as F

from pgdm.models.layers import attention


def _reference(q, k, v):
    q, k, v = (t.double() for t in (q, k, v))
    return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1) @ v


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 8e-3)])
def test_attention_and_its_vjp_match_float64(dtype, tol):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 64, 16, generator=gen).to(dtype).requires_grad_(True) for _ in range(3))
    cot = torch.randn(2, 4, 64, 16, generator=gen).to(dtype)
    out = attention(q, k, v)
    assert out.dtype == dtype  # low precision in, low precision out (computed in float32 on CPU)
    upcast = F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(dtype)
    assert torch.equal(out, upcast)  # the float32 path, not PyTorch's slow CPU half-precision kernel
    grads = torch.autograd.grad(out, (q, k, v), cot)
    ref = _reference(q, k, v)
    ref_grads = torch.autograd.grad(ref, (q, k, v), cot.double())
    for got, want in zip((out, *grads), (ref, *ref_grads)):
        rel = (got.double() - want).norm() / want.norm()
        assert rel <= tol, (dtype, rel.item())
