"""The JPEG kernel against its torch reference: identical integers for h, h† and h†∘h.

Both paths are libjpeg's integer arithmetic (float64 only for the exact input rounding), so there are no
near-.5 float ties to tolerate: every mismatch is counted and must be zero. On CPU the kernel runs in
Triton's interpreter (small shapes); on CUDA also at 256×256, batched, compiled and graph-captured.
"""
import pytest
import torch

from pgdm.kernels import jpeg_codec as jc
from pgdm.operators import quality_tables

import triton  # noqa: E402,F401  (a dev dependency: the kernels run in its interpreter on CPU)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


DCT = jc.islow_matrices().to(DEVICE)


def _tables(quality: int, channels: int) -> torch.Tensor:
    t = quality_tables(quality)
    return t[:1] if channels == 1 else t[[0, 1, 1]]


def _images(shape, seed=0) -> torch.Tensor:
    """Half smooth ramps (like photos), half full-range noise (clamping, every coefficient busy)."""
    g = torch.Generator().manual_seed(seed)
    b, c, h, w = shape
    ramps = torch.nn.functional.interpolate(torch.rand(b, c, 3, 4, generator=g) * 2 - 1, size=(h, w), mode="bilinear")
    noise = torch.rand(shape, generator=g) * 2 - 1
    return torch.cat([ramps, noise]).to(DEVICE)


CASES = [  # (shape, chroma, quality)
    ((1, 3, 41, 37), (2, 2), 10),
    ((1, 3, 41, 37), (2, 2), 90),
    ((1, 3, 23, 35), (1, 1), 50),
    ((1, 3, 19, 45), (1, 2), 20),
    ((1, 1, 29, 17), (1, 1), 5),
]


@pytest.mark.parametrize("shape,chroma,quality", CASES)
def test_kernel_matches_reference_exactly(shape, chroma, quality):
    x = _images(shape)
    qt = _tables(quality, shape[1]).to(DEVICE)
    y_ref = jc.jpeg_encode_reference(x, qt, DCT, chroma)
    y_tri = jc.jpeg_encode_triton(x, qt, DCT, chroma)
    assert y_tri.shape == y_ref.shape == (x.shape[0], shape[1], *jc.padded_size(*shape[2:], chroma))
    assert int((y_tri != y_ref).sum()) == 0
    x_ref = jc.jpeg_decode_reference(y_ref, qt, DCT, chroma, shape[2:])
    assert int((jc.jpeg_decode_triton(y_ref, qt, DCT, chroma, shape[2:]) != x_ref).sum()) == 0
    assert int((jc.jpeg_roundtrip_triton(x, qt, DCT, chroma) != x_ref).sum()) == 0
    assert torch.equal(jc.jpeg_roundtrip_reference(x, qt, DCT, chroma), x_ref)


def test_decode_of_arbitrary_coefficients_matches():
    """h† on y that no encoder produced (huge, fractional, negative) stays identical and in range."""
    qt = _tables(75, 3).to(DEVICE)
    y = torch.randn(1, 3, 32, 32, device=DEVICE) * 300
    y[0, :, 0, 0] = 1e9
    out = jc.jpeg_decode_triton(y, qt, DCT, (2, 2), (32, 32))
    assert int((out != jc.jpeg_decode_reference(y, qt, DCT, (2, 2), (32, 32))).sum()) == 0
    assert out.abs().max() <= 1


def test_dispatch_env_override(monkeypatch):
    from pgdm.kernels import dispatch

    name = "PGDM_KERNELS"

    monkeypatch.setenv(name, "reference")
    assert dispatch(jc.jpeg_encode_triton, jc.jpeg_encode_reference, torch.device("cuda")) is jc.jpeg_encode_reference
    monkeypatch.setenv(name, "triton")
    assert dispatch(jc.jpeg_encode_triton, jc.jpeg_encode_reference, torch.device("cpu")) is jc.jpeg_encode_triton
    monkeypatch.setenv(name, "cuda")
    with pytest.raises(ValueError, match="PGDM_KERNELS"):
        dispatch(jc.jpeg_encode_triton, jc.jpeg_encode_reference, torch.device("cpu"))
    monkeypatch.delenv(name)
    assert dispatch(jc.jpeg_encode_triton, jc.jpeg_encode_reference, torch.device("cpu")) is jc.jpeg_encode_reference


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("chroma", [(2, 2), (1, 1), (1, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_large_batches(chroma, dtype):
    x = (torch.rand(5, 3, 256, 200, device="cuda") * 2 - 1).to(dtype)
    for quality in (5, 50, 95):
        qt = _tables(quality, 3).cuda()
        y = jc.jpeg_encode_triton(x, qt, DCT, chroma)
        assert int((y != jc.jpeg_encode_reference(x, qt, DCT, chroma)).sum()) == 0
        assert int((jc.jpeg_roundtrip_triton(x, qt, DCT, chroma) != jc.jpeg_roundtrip_reference(x, qt, DCT, chroma)).sum()) == 0


@cuda
@pytest.mark.cuda
def test_cuda_compile_and_graph_capture():
    x = torch.rand(4, 3, 64, 64, device="cuda") * 2 - 1
    qt = _tables(10, 3).cuda()
    expected = jc.jpeg_roundtrip_reference(x, qt, DCT, (2, 2))
    compiled = torch.compile(lambda t: jc.jpeg_roundtrip_triton(t, qt, DCT, (2, 2)), fullgraph=True)
    assert torch.equal(compiled(x), expected)
    static = x.clone()
    jc.jpeg_roundtrip_triton(static, qt, DCT, (2, 2))  # warm up (compile) outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = jc.jpeg_roundtrip_triton(static, qt, DCT, (2, 2))
    static.copy_(x.flip(0))
    graph.replay()
    assert torch.equal(out, jc.jpeg_roundtrip_reference(x.flip(0), qt, DCT, (2, 2)))
