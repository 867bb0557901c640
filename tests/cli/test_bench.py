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
