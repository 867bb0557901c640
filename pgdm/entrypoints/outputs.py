"""Output folders that never touch their inputs, and a metrics.json that many writers share safely.

:class:`OutputFolder` checks before any work that the folder can be written and that no output path is one
of the command's inputs (the same file by path, symlink or hard link). :class:`MetricsFile` merges each
writer's entries into ``metrics.json`` under an exclusive ``flock`` on the folder and replaces the file
atomically, so concurrent runs into one folder and a kill at any moment leave valid strict JSON that holds
every finished image once. The lock is the kernel's: it is released when a process dies, and leaves no file.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

from pgdm.io import remove_stale_temporaries, write_bytes_atomic, write_json_atomic

__all__ = ["OutputFolder", "MetricsFile", "output_names"]


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


class OutputFolder:
    """The folder a command writes into; refuses any output path that is one of ``inputs``.

    Creates the folder and checks it can be written (a probe file is created and removed), so a command
    fails before computing anything when it could not save the result; removes the temporary files of
    writers that were killed (:func:`pgdm.io.remove_stale_temporaries`).
    """

    def __init__(self, folder: str | Path, inputs: Iterable[str | Path]) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"output {self.folder} is a file, not a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / f".pgdm-write-probe-{os.getpid()}"  # one per process: torchrun ranks check the folder at once
            write_bytes_atomic(probe, lambda tmp: None)
            probe.unlink()
        except OSError as err:
            raise ValueError(f"cannot write into the output folder {self.folder}: {err.strerror or err}") from None
        remove_stale_temporaries(self.folder)  # what a killed run was writing
        self._inputs = {p.resolve(): p for p in map(Path, inputs)}
        self._input_ids = {i: p for p in map(Path, inputs) if (i := _identity(p)) is not None}

    def path(self, name: str) -> Path:
        """``folder/name``, refused (ValueError) when it is one of the inputs."""
        path = self.folder / name
        source = self._inputs.get(path.resolve()) or self._input_ids.get(_identity(path))
        if source is not None:
            raise ValueError(f"output {path} would overwrite the input {source}; write into another folder with -o")
        return path


def output_names(paths: Iterable[Path]) -> dict[Path, str]:
    """Each input's output stem; two inputs with one stem (``a.png`` + ``a.bmp``, ``x/b.png`` + ``y/b.png``) are refused."""
    names: dict[str, Path] = {}
    for p in paths:
        other = names.setdefault(p.stem, p)
        if other != p:
            raise ValueError(f"inputs {other} and {p} would both be written as {p.stem}.png; rename one or restore them separately")
    return {p: n for n, p in names.items()}


class MetricsFile:
    """``metrics.json``: a JSON object of per-image entries, updated by merging under the folder's lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with self._locked():
            self._read()  # a corrupt file is reported before any work

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _read(self) -> dict:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{self.path}: not valid JSON ({err}); move it away to start a new one") from None
        if not isinstance(data, dict):
            raise ValueError(f"{self.path}: expected a JSON object of per-image entries, got a {type(data).__name__}; move it away")
        return data

    def read(self) -> dict:
        """The entries now in the file."""
        with self._locked():
            return self._read()

    def update(self, entries: dict) -> None:
        """Merge ``entries`` (name → dict of finite numbers) into the file; entries of other writers are kept."""
        with self._locked():
            write_json_atomic(self._read() | entries, self.path)
