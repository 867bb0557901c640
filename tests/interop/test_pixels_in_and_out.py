"""Restorer.restore and Engine.restore take PIL images and uint8 arrays and hand back the same type."""
import numpy as np
import pytest
import torch
from PIL import Image

import pgdm
import pgdm.engine


@pytest.fixture(scope="module")
def default():
    return pgdm.load_model("default")


@pytest.mark.parametrize("runner", ["restorer", "engine"])
def test_pil_and_uint8_in_give_the_tensor_result(default, runner):
    r = pgdm.Restorer(default, steps=3) if runner == "restorer" else pgdm.engine.restorer(default, steps=3)
    op = pgdm.ops.SuperResolution(4)
    low = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    want = r.restore(torch.from_numpy(low).float()[None, None] / 127.5 - 1, op, seed=3)
    out = r.restore(Image.fromarray(low), op, seed=3)
    assert isinstance(out, Image.Image) and out.size == (32, 32) and out.mode == "L"
    assert np.array_equal(np.asarray(out), pgdm.io.to_uint8(want[0]))
    arr = r.restore(low, op, seed=3)
    assert arr.dtype == np.uint8 and arr.shape == (32, 32) and np.array_equal(arr, np.asarray(out))
    batch = r.restore(np.stack([low, low])[..., None], op, seed=3, num_samples=2, return_std=True)
    mean, std = batch
    assert mean.shape == (2, 32, 32, 1) and std.shape == (2, 32, 32, 1) and std.dtype == np.float32 and (std >= 0).all()
