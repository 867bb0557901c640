"""``pgdm.entrypoints.ray.Restore``: in a Ray Data ``map_batches`` on a local Ray it writes the pixels ``pgdm
restore`` writes; bad columns are one-line errors (called directly, without Ray).

The Ray test needs ``pip install 'pgdm[ray]'`` (not in the dev extra: Ray is large and a local cluster takes a
while to start, so CI leaves it out; benchmarks/RESULTS.md records its runs).
"""
import numpy as np
import pytest
from cli_helpers import SIZE, run
from PIL import Image

from pgdm.entrypoints.ray import Restore

IMAGES = 6


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.ray
def test_map_batches_matches_the_single_process_command(ray, model, clean, tmp_path):
    folder = tmp_path / "clean"
    folder.mkdir()
    for i in range(IMAGES):
        Image.open(clean / f"img{i % 3}.png").save(folder / f"img{i}.png")
    run("degrade", "sr2", folder, "-o", tmp_path / "deg", "--gray")
    run("restore", "sr2", tmp_path / "deg", "-o", tmp_path / "cli", "--model", model, "--steps", 3, "--sigma-y", 0.02, "--quiet")
    rows = [
        {"image": np.asarray(Image.open(tmp_path / "deg" / f"img{i}.png")), "seed": i, "sigma_y": 0.02, "name": f"img{i}"}
        for i in range(IMAGES)
    ]
    ds = ray.data.from_items(rows).map_batches(
        Restore, fn_constructor_kwargs={"task": "sr2", "model": str(model), "steps": 3, "device": "cpu"},
        batch_size=4, num_cpus=1, concurrency=2, batch_format="numpy",
    )  # fmt: skip
    out = {row["name"]: row["restored"] for row in ds.take_all()}
    assert sorted(out) == [f"img{i}" for i in range(IMAGES)]
    for name, restored in out.items():
        assert restored.shape == (SIZE, SIZE) and restored.dtype == np.uint8
        assert np.array_equal(restored, np.asarray(Image.open(tmp_path / "cli" / f"{name}.png"))), name


def test_bad_columns_are_one_line_errors(model):
    restore = Restore("sr2", model=str(model), steps=2, device="cpu")
    image = np.zeros((1, SIZE // 2, SIZE // 2), np.uint8)
    with pytest.raises(ValueError, match="column 'seed' is missing"):
        restore({"image": image})
    with pytest.raises(ValueError, match=r"uint8 \(B, h, w\[, C\]\)"):
        restore({"image": np.zeros((1, SIZE, SIZE), np.float32), "seed": np.zeros(1, np.int64)})
    wide = restore({"image": np.zeros((2, 5, 7), np.uint8), "seed": np.zeros(2, np.int64)})["restored"]
    assert wide.shape == (2, 10, 14)  # a batch of another size restores at its own size
    inpaint = Restore("inpaint-center", model=str(model), steps=2, device="cpu")
    with pytest.raises(ValueError, match="needs a 'mask' column"):
        inpaint({"image": np.zeros((1, SIZE, SIZE), np.uint8), "seed": np.zeros(1, np.int64)})
    with pytest.raises(ValueError, match="JPEG measurement is its coefficients"):
        Restore("jpeg10", model=str(model), device="cpu")
