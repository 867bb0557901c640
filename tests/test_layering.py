"""The import layering of docs/architecture.md, read from the source: kernels < algorithm < engine/export <
entry points, imports only downward; and the fast start it buys (``pgdm --help`` loads no heavy stack)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import pgdm

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"pgdm": ROOT / "pgdm", "pgdm.kernels": ROOT / "kernels", "pgdm.engine": ROOT / "engine", "pgdm.export": ROOT / "export"}
LAYERS = ("kernels", "algorithm", "fast path", "entry points")


def layer(module: str) -> int:
    """The layer of a ``pgdm`` module name (an index into LAYERS)."""
    if module.startswith("pgdm.kernels"):
        return 0
    if module.startswith(("pgdm.engine", "pgdm.export")):
        return 2
    if module.startswith("pgdm.entrypoints") or module == "pgdm.__main__":
        return 3
    return 1


def modules() -> dict[str, Path]:
    """Every module of the distribution by its import name."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if package == "pgdm" and parts[0] in ("kernels", "engine", "export"):
                continue
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def imported(name: str, path: Path) -> set[str]:
    """The ``pgdm`` modules ``path`` imports (at module level or inside functions; TYPE_CHECKING blocks too)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "pgdm"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "pgdm":
                out.add(target)
                out |= {f"{target}.{a.name}" for a in node.names}  # `from pgdm import engine` names a module
    known = modules()
    return {m for m in out if m in known}


def test_every_import_goes_down_the_layers():
    wrong = []
    for name, path in sorted(modules().items()):
        for target in sorted(imported(name, path)):
            if layer(target) > layer(name) and target != "pgdm":
                wrong.append(f"{path.relative_to(ROOT)}: {name} ({LAYERS[layer(name)]}) imports {target} ({LAYERS[layer(target)]})")
    assert not wrong, "imports against the layering (docs/architecture.md):\n" + "\n".join(wrong)


def test_the_layering_test_sees_imports():
    """The reader resolves relative and function-level imports (else the test above could pass on nothing)."""
    found = imported("pgdm.entrypoints.cli", PACKAGES["pgdm"] / "entrypoints" / "cli.py")
    assert {"pgdm.entrypoints.restore_job", "pgdm.operators", "pgdm.export"} <= found
    assert "pgdm.kernels.jpeg_codec" in imported("pgdm.operators.jpeg", PACKAGES["pgdm"] / "operators" / "jpeg.py")
    assert "pgdm.kernels.jpeg_codec_triton" in imported("pgdm.kernels.jpeg_codec", PACKAGES["pgdm.kernels"] / "jpeg_codec.py")
    assert layer("pgdm.engine.runner") > layer("pgdm.sampler") > layer("pgdm.kernels.spectral_filter")


HEAVY = ("triton", "torch._inductor", "fastapi", "uvicorn", "pgdm.engine.runner", "pgdm.export.onnx", "matplotlib", "onnxruntime")


@pytest.mark.parametrize("code", ["import pgdm", "from pgdm.entrypoints.cli import build_parser; build_parser().format_help()"])
def test_import_and_help_load_no_heavy_stack(code):
    script = f"import sys; {code}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"{code!r} loaded {done.stdout.strip()}"


def test_version_and_lazy_subpackages(capsys):
    from pgdm.entrypoints.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"pgdm {pgdm.__version__}"
    assert pgdm.engine.Engine.__module__ == "pgdm.engine.runner"  # loaded on first use
    with pytest.raises(AttributeError, match="no attribute 'engin'"):
        pgdm.engin  # noqa: B018
