"""Every linear operator against its dense matrix, in float64."""
import pytest
import torch
import torch.nn.functional as F

from pgdm.ops import (
    Blur,
    Colorize,
    Compose,
    Identity,
    Inpaint,
    SuperResolution,
    center_box_mask,
    freeform_mask,
    parse,
    random_pixel_mask,
)
from test_helpers import dense

# name -> (factory, clean image shape (C, H, W))
OPERATORS = {
    "identity": (lambda: Identity(), (2, 4, 4)),
    "inpaint-center": (lambda: Inpaint(center_box_mask(6, 6)), (2, 6, 6)),
    "inpaint-random": (lambda: Inpaint(random_pixel_mask(6, 6, 0.5, seed=3)), (2, 6, 6)),
    "sr2-pool": (lambda: SuperResolution(2, "pool"), (2, 6, 8)),
    "sr4-bicubic": (lambda: SuperResolution(4, "bicubic"), (1, 16, 12)),
    "sr2-bicubic": (lambda: SuperResolution(2, "bicubic"), (2, 6, 8)),
    "blur-uniform3": (lambda: Blur.uniform(3), (1, 8, 7)),
    "blur-uniform9": (lambda: Blur.uniform(9), (1, 12, 12)),  # exact spectral zeros at k = 4, 8
    "blur-gaussian5": (lambda: Blur.gaussian(5, 1.0), (2, 8, 8)),
    "blur-motion7": (lambda: Blur.motion(7, seed=1), (1, 9, 10)),
    "colorize": (lambda: Colorize(), (3, 4, 5)),
    "sr2+inpaint": (lambda: Compose([SuperResolution(2), Inpaint(center_box_mask(4, 4))]), (1, 8, 8)),
    "blur+sr2-bicubic": (lambda: Compose([Blur.gaussian(3, 0.7), SuperResolution(2, "bicubic")]), (1, 8, 8)),
}
LAMS = [1e-3, 0.05, 1.0]


def build(name):
    factory, shape = OPERATORS[name]
    return factory().double(), shape


def threshold(op):
    """The largest fixed relative cutoff of the parts' pseudo-inverses (0 for the numerical default, rtol=None)."""
    parts = op.ops if isinstance(op, Compose) else [op]
    return max(getattr(p, "rtol", None) or 0.0 for p in parts)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_forward_and_adjoint_match_dense(name):
    op, shape = build(name)
    H = dense(op, shape)
    x = torch.randn(1, *shape, dtype=torch.float64)
    y = op(x)
    torch.testing.assert_close(y.flatten(), H @ x.flatten())
    v = torch.randn_like(y)
    torch.testing.assert_close(op.adjoint(v).flatten(), H.T @ v.flatten())
    # adjointness: <Hx, v> = <x, Hᵀv>
    torch.testing.assert_close((y * v).sum(), (x * op.adjoint(v)).sum())


@pytest.mark.parametrize("name", sorted(n for n in OPERATORS if "+" not in n))
def test_pinv_matches_dense_pseudoinverse(name):
    op, shape = build(name)
    H = dense(op, shape)
    y = op(torch.randn(1, *shape, dtype=torch.float64))
    Hp = torch.linalg.pinv(H, rtol=max(threshold(op), 1e-10))
    torch.testing.assert_close(op.pinv(y).flatten(), Hp @ y.flatten())
    P = dense(op.pinv, y.shape[1:])
    # H H† H = H, up to the singular values below the threshold that H† zeroes on purpose
    torch.testing.assert_close(H @ P @ H, H, atol=1e-9 + threshold(op), rtol=0)
    torch.testing.assert_close(P @ H @ P, P, atol=1e-9, rtol=0)  # H† H H† = H†


@pytest.mark.parametrize("name", sorted(OPERATORS))
@pytest.mark.parametrize("lam", LAMS)
def test_regularized_pinv_matches_dense_formula(name, lam):
    op, shape = build(name)
    H = dense(op, shape)
    v = op(torch.randn(1, *shape, dtype=torch.float64)) + 0.1 * torch.randn_like(op(torch.zeros(1, *shape, dtype=torch.float64)))
    m = H.shape[0]
    expected = H.T @ torch.linalg.solve(H @ H.T + lam * torch.eye(m, dtype=torch.float64), v.flatten())
    tol = 1e-6 if isinstance(op, Compose) else 1e-10  # Compose solves by conjugate gradient
    torch.testing.assert_close(op.regularized_pinv(v, lam).flatten(), expected, atol=tol, rtol=tol)


@pytest.mark.parametrize("name", sorted(n for n in OPERATORS if "+" not in n))
def test_regularized_pinv_at_zero_is_pinv(name):
    op, shape = build(name)
    y = op(torch.randn(2, *shape, dtype=torch.float64))
    torch.testing.assert_close(op.regularized_pinv(y, 0.0), op.pinv(y), atol=1e-10, rtol=1e-10)


def test_per_image_lam_equals_separate_calls():
    op = SuperResolution(2, "bicubic").double()
    v = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    lam = torch.tensor([0.0, 0.1, 2.0], dtype=torch.float64)
    batched = op.regularized_pinv(v, lam)
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], op.regularized_pinv(v[i : i + 1], float(lam[i])))


def test_per_image_masks():
    masks = freeform_mask(16, 16, seed=5, batch=3)
    assert 0.05 < 1 - masks.mean() < 0.9, "strokes should hide a visible but partial area"
    assert not torch.equal(masks[0], masks[1])
    op = Inpaint(masks)
    x = torch.randn(3, 3, 16, 16)
    for i in range(3):
        torch.testing.assert_close(op(x)[i], Inpaint(masks[i : i + 1])(x[i : i + 1])[0])
    tiled = op.repeat_batch(2)
    torch.testing.assert_close(tiled(torch.cat([x, x])), torch.cat([op(x), op(x)]))


def test_bicubic_matches_torch_antialiased_interpolate():
    x = torch.randn(2, 3, 32, 24, dtype=torch.float64)
    for f in (2, 4):
        ref = F.interpolate(x, scale_factor=1 / f, mode="bicubic", antialias=True, align_corners=False)
        torch.testing.assert_close(SuperResolution(f, "bicubic").double()(x), ref, atol=1e-6, rtol=0)


def test_pool_matches_avg_pool():
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(SuperResolution(4)(x), F.avg_pool2d(x, 4))


def test_blur_is_centered_circular_convolution():
    x = torch.randn(1, 1, 12, 12, dtype=torch.float64)
    k = torch.rand(3, 3, dtype=torch.float64)
    k = k / k.sum()
    padded = F.pad(x, (1, 1, 1, 1), mode="circular")
    ref = F.conv2d(padded, k.flip(0, 1)[None, None])  # conv2d is correlation
    torch.testing.assert_close(Blur(k).double()(x), ref)


def test_composition_operator_and_order():
    sr, inp = SuperResolution(2), Inpaint(center_box_mask(4, 4))
    x = torch.randn(1, 1, 8, 8)
    torch.testing.assert_close((inp * sr)(x), inp(sr(x)))
    assert (inp * sr).spec == "sr2-pool+inpaint"
    c = Compose([sr, inp])
    torch.testing.assert_close(c.pinv(c(x)), sr.pinv(inp.pinv(inp(sr(x)))))


def test_parse_builds_chain_for_image_shape():
    op = parse("sr4-bicubic+inpaint-center", (3, 64, 64))
    assert isinstance(op, Compose) and op.spec == "sr4-bicubic+inpaint"
    assert op(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 16, 16)
    assert op.ops[1].mask.shape[-2:] == (16, 16)
    assert parse("blur-uniform9", (3, 32, 32)).spec == "blur-uniform9"
    assert parse("sr4", (1, 32, 32)).spec == "sr4-pool"
    with pytest.raises(ValueError, match="unknown operator 'sr4-lanczos'"):
        parse("sr4-lanczos", (3, 64, 64))


@pytest.mark.parametrize(
    "op, x, message",
    [
        (SuperResolution(4), torch.zeros(1, 3, 30, 32), "divisible by 4"),
        (Colorize(), torch.zeros(1, 1, 8, 8), r"expected \(B, 3, H, W\)"),
        (Blur.uniform(9), torch.zeros(1, 3, 8, 8), "H ≥ 9"),
        (Inpaint(center_box_mask(8, 8)), torch.zeros(1, 3, 16, 16), "does not match mask"),
        (Identity(), torch.zeros(3, 8, 8), r"\(B, C, H, W\)"),
    ],
)
def test_bad_input_raises_one_line_error(op, x, message):
    with pytest.raises(ValueError, match=message) as info:
        op(x)
    assert "\n" not in str(info.value)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="factor"):
        SuperResolution(0)
    with pytest.raises(ValueError, match="kernel"):
        SuperResolution(2, "lanczos")
    with pytest.raises(ValueError, match="2-D"):
        Blur(torch.ones(3))
    with pytest.raises(ValueError, match="per-image lam"):
        Identity().regularized_pinv(torch.zeros(2, 1, 2, 2), torch.zeros(3))


def test_state_dict_round_trip_and_dtype_move():
    op = Inpaint(random_pixel_mask(8, 8, seed=1))
    clone = Inpaint(torch.ones(1, 1, 8, 8))
    clone.load_state_dict(op.state_dict())
    torch.testing.assert_close(clone.mask, op.mask)
    blur = Blur.gaussian(5, 1.0).double()
    assert blur.kernel.dtype == torch.float64
    assert blur(torch.zeros(1, 1, 8, 8, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("spec", ["blur-uniform0", "blur-gaussian9-0", "blur-motion0"])
def test_degenerate_blur_specs_rejected(spec):
    with pytest.raises(ValueError, match="blur"):
        parse(spec, (1, 16, 16))
