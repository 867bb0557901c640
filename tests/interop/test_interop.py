"""pgdm.interop: DLPack arrays (NumPy here; CuPy in benchmarks/device_check.sh) into Restorer/Engine and back."""
import numpy as np
import pytest
import torch

from engine_helpers import tiny_denoiser
from pgdm import Restorer
from pgdm.engine import restorer
from pgdm.interop import is_dlpack_array, like, to_tensor
from pgdm.ops import SuperResolution


def test_to_tensor_and_like_share_memory():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = to_tensor(a)
    t[0, 0] = 42.0
    assert a[0, 0] == 42.0 and t.dtype == torch.float32 and is_dlpack_array(a) and not is_dlpack_array(t)
    strided = to_tensor(a[:, ::2])  # a non-contiguous view keeps its strides
    assert torch.equal(strided, torch.tensor(a[:, ::2]))
    back = like(t, a)
    assert isinstance(back, np.ndarray) and np.shares_memory(back, a)
    assert like(t, t) is t and to_tensor(t) is t
    with pytest.raises(TypeError, match="DLPack"):
        to_tensor([[1.0, 2.0]])


@pytest.mark.parametrize(
    "kind, dtype", [("Restorer", torch.float32), ("Restorer", torch.float64), ("Engine", torch.float32)], ids=["Restorer", "Restorer-fp64", "Engine"]
)
def test_restore_takes_and_returns_numpy(kind, dtype):
    den = tiny_denoiser().to(dtype)
    r = Restorer(den, steps=2) if kind == "Restorer" else restorer(den, steps=2)
    op = SuperResolution(2)
    gen = torch.Generator().manual_seed(0)
    y = op(torch.rand(2, 1, 16, 16, generator=gen, dtype=dtype) * 2 - 1)
    ref_mean, ref_std = r.restore(y, op, seed=5, num_samples=2, return_std=True)
    y_np = y.numpy()
    y_np.setflags(write=False)  # a read-only array is read, never written
    mean, std = r.restore(y_np, op, seed=5, num_samples=2, return_std=True)
    assert isinstance(mean, np.ndarray) and isinstance(std, np.ndarray) and mean.dtype == y_np.dtype
    assert np.array_equal(mean, ref_mean.numpy()) and np.array_equal(std, ref_std.numpy())
    assert np.array_equal(y_np, y.numpy())
    single = r.restore(y_np[:1], op, seed=5)
    assert isinstance(single, np.ndarray) and single.shape == (1, 1, 16, 16)
