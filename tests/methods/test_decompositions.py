"""The closed-form SVDs operators expose for DDRM: Uᵀ h(x) = s ⊙ Vᵀx, VᵀV = I, and V Vᵀ projects onto the row
space (h(x − V Vᵀx) ≈ 0), against the operator's own h, in float64, on awkward sizes. Singular values below
``rtol``·max are reported as 0 (as ``pinv`` treats them), which bounds the error by rtol·s_max·|Vᵀx|."""
import pytest
import torch

from pgdm.operators.functional import numerical_rtol

from pgdm.ops import Blur, Colorize, Identity, Inpaint, SuperResolution, random_pixel_mask

OPS = {
    "identity": (lambda: Identity(), (2, 1, 6, 10)),
    "inpaint-per-image": (lambda: Inpaint(random_pixel_mask(6, 10, 0.5, batch=2)), (2, 1, 6, 10)),
    "sr2-pool": (lambda: SuperResolution(2), (2, 3, 6, 10)),
    "sr3-bicubic": (lambda: SuperResolution(3, "bicubic"), (2, 1, 9, 12)),
    "blur-gaussian": (lambda: Blur.gaussian(5, 1.2), (2, 1, 7, 10)),
    "blur-uniform": (lambda: Blur.uniform(3), (2, 3, 8, 9)),
    "colorize": (lambda: Colorize(), (2, 3, 5, 7)),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_svd_reproduces_the_operator(name):
    make, shape = OPS[name]
    op = make().double()
    assert op.decomposable
    x = torch.randn(shape, dtype=torch.float64)
    z = op.V_adjoint(x)
    s = op.singular_values(x)
    rtol = getattr(op, "rtol", 0.0)
    rtol = numerical_rtol(max(shape[-2:]), torch.float64) if rtol is None else rtol  # Blur's default: the rounding level
    bound = rtol * float(s.max()) * float(z.abs().max()) + 1e-10
    assert float((op.U_adjoint(op(x)) - s * z).abs().max()) <= bound
    torch.testing.assert_close(op.V_adjoint(op.V(z)), z, atol=1e-10, rtol=1e-10)
    assert float(op(x - op.V(z)).abs().max()) <= bound * x[0].numel() ** 0.5
