"""ADM UNet against guided-diffusion's outputs on the four conformance fixtures (tests/fixtures/adm/README.md)."""
import pytest
import torch

from model_fixtures import CONFORMANCE, describe_blocks, fixture_state_dict, read_fixture
from pgdm.models import ModelConfig, load_network, timestep_embedding

# Relative L2 error of a low-precision body against the float32 reference, output and input gradient.
# Measured on the four fixtures (CPU, torch 2.13): fp16 ≤ 2.1e-3 / 4.1e-3, bf16 ≤ 1.6e-2 / 3.2e-2.
LOW_PRECISION_TOL = [(torch.float16, 5e-3, 1e-2), (torch.bfloat16, 4e-2, 8e-2)]


def _net(name, dtype=torch.float32):
    _, meta = read_fixture(name)
    return load_network(ModelConfig.from_dict(meta), fixture_state_dict(name), dtype=dtype)


def _run(net, name, x):
    tensors, _ = read_fixture(name)
    return net(x, tensors["input.t"], tensors.get("input.y"))


def _output_and_input_grad(net, name, memory_format=torch.contiguous_format):
    tensors, _ = read_fixture(name)
    x = tensors["input.x"].clone(memory_format=memory_format).requires_grad_(True)
    out = _run(net, name, x)
    (0.5 * out.pow(2).sum()).backward()
    return out.detach(), x.grad


def _max_abs(a, b):
    return (a.double() - b.double()).abs().max().item()


def _rel_l2(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("name", CONFORMANCE)
def test_timestep_embedding_matches_reference(name):
    tensors, meta = read_fixture(name)
    emb = timestep_embedding(tensors["input.t"], meta["resolved"]["model_channels"])
    assert emb.dtype == torch.float32
    assert _max_abs(emb, tensors["aux.timestep_embedding"]) <= 1e-6


@pytest.mark.parametrize("name", CONFORMANCE)
def test_block_structure_matches_reference(name):
    _, meta = read_fixture(name)
    with torch.device("meta"):
        net = ModelConfig.from_dict(meta).build()
    assert describe_blocks(net) == meta["blocks"]
    assert sum(p.numel() for p in net.parameters()) == meta["num_params"]


@pytest.mark.parametrize("name", CONFORMANCE)
def test_float32_output_and_input_gradient(name):
    tensors, _ = read_fixture(name)
    net = _net(name)
    out, grad = _output_and_input_grad(net, name)
    assert out.shape == tensors["output.fp32"].shape
    assert _max_abs(out, tensors["output.fp32"]) <= 1e-5
    assert _max_abs(out, tensors["output.fp64"]) <= 1e-5
    assert _max_abs(grad, tensors["output.grad_x_fp32"]) <= 3e-5
    # Only the input gradient is computed: the loaded weights are frozen.
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())


@pytest.mark.parametrize("name", CONFORMANCE)
def test_float64_output(name):
    tensors, _ = read_fixture(name)
    out = _run(_net(name, torch.float64), name, tensors["input.x"].double())
    assert out.dtype == torch.float64
    assert _max_abs(out, tensors["output.fp64"]) <= 1e-10


@pytest.mark.parametrize("name", CONFORMANCE)
def test_channels_last(name):
    # float64 shows the layout changes nothing but the summation order of float32 convolutions.
    tensors, _ = read_fixture(name)
    cl = torch.channels_last
    out64 = _run(_net(name, torch.float64).to(memory_format=cl), name, tensors["input.x"].double().to(memory_format=cl))
    assert _max_abs(out64, tensors["output.fp64"]) <= 1e-10
    out, grad = _output_and_input_grad(_net(name).to(memory_format=cl), name, memory_format=cl)
    assert out.is_contiguous(memory_format=cl)
    assert _max_abs(out, tensors["output.fp32"]) <= 3e-5
    assert _max_abs(grad, tensors["output.grad_x_fp32"]) <= 6e-5


@pytest.mark.parametrize("dtype, out_tol, grad_tol", LOW_PRECISION_TOL)
@pytest.mark.parametrize("name", CONFORMANCE[:2])  # both resamplings, both head orders, scale-shift and additive
def test_low_precision_body(name, dtype, out_tol, grad_tol):
    tensors, _ = read_fixture(name)
    net = _net(name, dtype)
    # The reference's convert_to_fp16 split: body convolutions in dtype, the rest float32.
    assert net.input_blocks[1][0].in_layers[2].weight.dtype == dtype
    assert net.input_blocks[1][0].in_layers[0].weight.dtype == torch.float32
    assert net.time_embed[0].weight.dtype == net.out[2].weight.dtype == torch.float32
    out, grad = _output_and_input_grad(net, name)
    assert out.dtype == torch.float32
    assert _rel_l2(out, tensors["output.fp32"]) <= out_tol
    assert _rel_l2(grad, tensors["output.grad_x_fp32"]) <= grad_tol


def test_class_labels_required_exactly_for_class_conditional_models():
    tensors, _ = read_fixture("s32_cond_sigma_ss_rud")
    with pytest.raises(ValueError, match="class labels"):
        _net("s32_cond_sigma_ss_rud")(tensors["input.x"], tensors["input.t"])
    with pytest.raises(ValueError, match="class labels"):
        _net("s32_uncond_eps_add_conv")(tensors["input.x"], tensors["input.t"], tensors["input.y"])
