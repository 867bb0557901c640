"""Running ``pgdm`` in-process (``run``) or as a process (``spawn``) for the command-line tests."""
import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tiny_model import SIZE  # noqa: F401  (the CLI tests take the model size from here)

from pgdm.entrypoints.cli import main

PGDM = str(Path(sys.executable).parent / "pgdm")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run(*args, code: int | None = 0) -> Result:
    """``pgdm ARGS`` through ``pgdm.entrypoints.cli.main`` with captured output; asserts the exit status ``code`` (None: any)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:  # argparse: --help (0) and usage errors (2)
            rc = e.code if isinstance(e.code, int) else 2
    result = Result(rc, out.getvalue(), err.getvalue())
    if code is not None and rc != code:
        raise AssertionError(f"pgdm {' '.join(map(str, args))} exited {rc}, expected {code}:\n{result.stderr[-3000:]}")
    return result


def spawn(*args, path: str = "", env: dict | None = None, **popen) -> subprocess.Popen:
    """``pgdm ARGS`` as a separate process in a bare environment (PATH = ``path``: empty unless a compiler is needed)."""
    env = {"OMP_NUM_THREADS": "1", "PATH": path, "HOME": os.environ.get("HOME", "/tmp"), **(env or {})}
    env |= {k: os.environ[k] for k in ("PGDM_AUTOTUNE_BUDGET_S", "PGDM_CACHE_DIR") if k in os.environ and k not in env}  # the suite's
    return subprocess.Popen([PGDM, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **popen)
