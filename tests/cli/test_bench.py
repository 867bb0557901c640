"""``pgdm bench``: tables, plots, resuming, unsupported cells and bad arguments (tiny grids)."""
import csv
import json

from pgdm.entrypoints.cli import main


def _rows(folder):
    with (folder / "results.csv").open() as f:
        return list(csv.DictReader(f))


def test_bench_posterior_writes_tables_and_plot_and_resumes(tmp_path, capsys):
    args = ["bench", "posterior", "--methods", "pigdm,ddrm", "--steps", "3", "--tasks", "inpaint", "--n", "16", "-o", str(tmp_path), "--quiet"]
    assert main(args) == 0
    rows = _rows(tmp_path)
    assert [(r["method"], r["status"]) for r in rows] == [("pigdm", "ok"), ("ddrm", "ok")]
    assert float(rows[1]["residual"]) < 1e-6  # DDRM ends on h(x) = y
    assert (tmp_path / "sliced_w2_vs_steps.png").stat().st_size > 0 and (tmp_path / "results.md").read_text().startswith("# pgdm bench posterior")
    assert main(args) == 0 and "0 cell(s) run, 2 already done" in capsys.readouterr().out
    assert main([*args[:3], "pigdm,ddrm,ddnm", *args[4:]]) == 0 and "1 cell(s) run, 2 already done" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "results.json").read_text())["cells"]) == 3


def test_bench_quality_marks_unsupported_cells(tmp_path):
    args = ["bench", "quality", "--methods", "ddnm,dps", "--steps", "2", "--tasks", "sr4,jpeg10", "--sigma-y", "0", "--n", "2",
            "--batch-size", "2", "-o", str(tmp_path), "--quiet"]  # fmt: skip
    assert main(args) == 0
    rows = {(r["method"], r["task"]): r for r in _rows(tmp_path)}
    assert rows[("dps", "jpeg10")]["status"] == "unsupported" and "method='pigdm'" in rows[("dps", "jpeg10")]["reason"]
    for key in [("ddnm", "sr4"), ("ddnm", "jpeg10"), ("dps", "sr4")]:
        assert rows[key]["status"] == "ok" and float(rows[key]["psnr"]) > 5 and rows[key]["nfe"] == "2"
    assert float(rows[("ddnm", "sr4")]["consistency"]) < float(rows[("dps", "sr4")]["consistency"])  # DDNM projects onto h(x) = y
    assert (tmp_path / "psnr_vs_nfe.png").exists() and (tmp_path / "ssim_vs_seconds.png").exists()
    assert "LPIPS" in (tmp_path / "results.md").read_text()


def test_bench_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert main(["bench", "posterior", "--methods", "pigdm,magic", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pgdm bench: error: unknown method 'magic'") and err.count("\n") == 1
    assert main(["bench", "posterior", "--methods", "pigdm:nope=1", "-o", str(tmp_path)]) == 2
    assert "has no option(s) nope" in capsys.readouterr().err
    assert main(["bench", "quality", "--steps", "ten", "-o", str(tmp_path)]) == 2
    assert "--steps must be a comma-separated list of int" in capsys.readouterr().err
    assert main(["bench", "posterior", "--methods", "cpigdm@late", "-o", str(tmp_path)]) == 2
    assert "must be a timestep" in capsys.readouterr().err


def test_a_method_spec_can_start_from_the_noised_pseudoinverse(tmp_path):
    from pgdm.entrypoints.bench.cells import MethodSpec

    spec = MethodSpec.parse("cpigdm:w=8@400")
    assert (spec.name, dict(spec.options), spec.start_step, spec.label) == ("cpigdm", {"w": 8.0}, 400, "cpigdm:w=8@400")
    assert MethodSpec.parse("pigdm").start_step is None
    args = ["bench", "posterior", "--methods", "pigdm,pigdm@400", "--steps", "3", "--tasks", "sr4", "--n", "16", "-o", str(tmp_path), "--quiet"]
    assert main(args) == 0
    rows = {r["method"]: r for r in _rows(tmp_path)}
    assert rows["pigdm"]["status"] == rows["pigdm@400"]["status"] == "ok"
    assert rows["pigdm"]["sliced_w2"] != rows["pigdm@400"]["sliced_w2"]  # a different start, a different sample


def test_bench_tune_reports_the_best_value_of_a_direct_restore(tmp_path, capsys):

    import pgdm
    from pgdm.entrypoints.bench.tune import tune_images
    from pgdm.metrics import psnr
    from tiny_model import save_tiny_model, write_test_images

    (tmp_path / "imgs").mkdir()
    model, data = save_tiny_model(tmp_path), write_test_images(tmp_path / "imgs", 3)
    args = ["bench", "tune", "--method", "dps", "--option", "scale", "--values", "0.05,2", "--tasks", "sr4", "--steps", "3",
            "--n", "2", "--data", str(data), "--model", str(model), "-o", str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 0
    result = json.loads((tmp_path / "out" / "tune.json").read_text())
    (row,) = result["rows"]
    assert row["default"] == 15.0 and set(row["scores"]) == {"0.05", "2.0"}  # the 3-step default: the value tuned at 20 steps
    # the scores are those of a plain Restorer run on the same images and measurements
    den = pgdm.load_model(str(model))
    images = tune_images(str(data), 2, 1, 16)
    op = pgdm.ops.parse("sr4", (1, 16, 16))
    for value, score in row["scores"].items():
        x = pgdm.Restorer(den, steps=3, method="dps", options={"scale": float(value)}).restore(op(images), op, seed=0)
        assert abs(float(psnr(x, images).mean()) - score) < 1e-4
    assert str(row["best"]) == max(row["scores"], key=row["scores"].get) and row["psnr_best"] == max(row["scores"].values())
    assert "| sr4 | 0 |" in (tmp_path / "out" / "tune.md").read_text()
    assert main([*args[:5], "nope", *args[6:]]) == 2 and "has no option(s) nope" in capsys.readouterr().err


def test_bench_quality_reports_ca_fid_kid_and_marks_the_frontier(tmp_path):
    args = ["bench", "quality", "--methods", "ddnm,pigdm", "--steps", "1,2", "--tasks", "inpaint-center", "--sigma-y", "0", "--n", "4",
            "--batch-size", "4", "-o", str(tmp_path), "--quiet"]  # fmt: skip
    assert main(args) == 0
    rows = _rows(tmp_path)
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    for r in rows:
        assert 0 <= float(r["ca"]) <= 1 and float(r["fid"]) > 0 and float(r["kid_std"]) >= 0 and r["kid"] != ""
    for metric, higher in (("psnr", True), ("fid", False)):  # the frontier, checked pair by pair
        for r in rows:
            dominated = any(float(o["seconds_per_image"]) <= float(r["seconds_per_image"])
                            and (float(o[metric]) >= float(r[metric]) if higher else float(o[metric]) <= float(r[metric]))
                            and (o["seconds_per_image"], o[metric]) != (r["seconds_per_image"], r[metric]) for o in rows)  # fmt: skip
            assert (metric in r["frontier"].split(",")) == (not dominated)
    assert any("fid" in r["frontier"] for r in rows)
    from pgdm.classifier import classifier_info

    text = (tmp_path / "results.md").read_text()
    assert "| frontier |" in text and f"Fashion-MNIST classifier (test accuracy {classifier_info()['test_accuracy']:.4f})" in text
    assert (tmp_path / "fid_vs_seconds.png").stat().st_size > 0 and (tmp_path / "ca_vs_nfe.png").exists()


def test_mark_frontier_keeps_the_best_cell_at_each_time_budget():
    from pgdm.entrypoints.bench.quality import mark_frontier

    cell = lambda m, s, fid, task="sr4": dict(method=m, task=task, sigma_y=0.0, status="ok", seconds_per_image=s, fid=fid, psnr=20.0)  # noqa: E731
    rows = [cell("fast", 1.0, 9.0), cell("slow-better", 4.0, 3.0), cell("slow-worse", 5.0, 8.0), cell("tie", 4.0, 3.5),
            cell("other-task", 9.0, 99.0, task="jpeg10"), dict(method="x", task="sr4", sigma_y=0.0, status="unsupported")]  # fmt: skip
    mark_frontier(rows)
    assert ["fid" in r["frontier"] for r in rows] == [True, True, False, False, True, False]
    assert rows[0]["frontier"] == "psnr,fid"  # equal PSNR everywhere: only the fastest is on its frontier


def test_inception_fid_is_left_out_with_a_one_line_note_and_uses_the_given_weights(tmp_path, monkeypatch):
    import pytest
    import torch

    from pgdm import metrics
    from pgdm.entrypoints.bench.quality import distribution_scorer

    rgb = torch.rand(6, 3, 32, 32) * 2 - 1
    scorer, note = distribution_scorer(str(tmp_path), rgb, None)
    assert scorer is None and note.startswith("Inception FID/KID left out: pass the local FID Inception weights") and "\n" not in note
    scorer, note = distribution_scorer(str(tmp_path), rgb, str(tmp_path / "nope.pth"))
    assert scorer is None and f"weights file {tmp_path / 'nope.pth'} not found" in note
    seen = []

    class FakeInception(torch.nn.Module):  # records how it was built and what it is fed; features: per-channel means
        def __init__(self, **kwargs):
            super().__init__()
            seen.append(kwargs)

        def forward(self, x):
            assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32)
            return x.double().mean(dim=(2, 3))  # (B, 3)

    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"weights")
    monkeypatch.setattr(metrics, "inception_unavailable", lambda w: None)
    monkeypatch.setattr("torchmetrics.image.fid.NoTrainInceptionV3", FakeInception)
    scorer, note = distribution_scorer(str(tmp_path), rgb, str(weights))
    assert seen == [dict(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(weights))]
    assert str(weights) in note and "100 subsets of 3" in note
    feats = lambda x: ((x + 1) / 2 * 255).round().clamp(0, 255).mean(dim=(2, 3)).double()  # noqa: E731  what FakeInception sees
    out = scorer(rgb * 0.5)
    assert out["fid"] == pytest.approx(metrics.frechet_distance(feats(rgb), feats(rgb * 0.5)), abs=1e-9)
    assert out["kid"] is not None and "ca" not in out
