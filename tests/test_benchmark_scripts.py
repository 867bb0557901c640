"""Every benchmark script imports against today's package: they are run by hand, so nothing else would notice a
renamed function before someone needs the figure."""
import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.rglob("*.py") if p.parent.name != "peers")  # peers import the peers' packages


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_script_imports(path, monkeypatch):
    monkeypatch.syspath_prepend(str(path.parent))  # scripts import their sibling helpers (timing.py)
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)  # runs the imports and definitions; main() sits behind __name__ == "__main__"
    assert module.__doc__, f"{path.name} says what it measures in its docstring"


def test_bench_step_counts_a_step_on_the_meta_device(monkeypatch):
    """bench_step's FLOP count runs the engine's step on shapes only: it needs every coefficient the step reads."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("bench_bench_step", BENCHMARKS / "bench_step.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    forward, step = module.count_flops("default", 2, "sr4", 0.0)
    assert forward > 0 and 1.5 * forward <= step <= 3 * forward  # forward + input-only VJP (frozen weights: ≈ 1 forward) + h, h†
