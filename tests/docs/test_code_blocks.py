"""Every ```python and ```bash block of README.md and docs/*.md runs as written, and docs/cli.md shows every
example of ``pgdm ... --help``.

Python blocks run with this interpreter (the project's venv) as a script in a fresh working directory holding a
copy of the bundled demo images at their repository path (``pgdm/assets/demo/``), with ``-I`` so that folder
never shadows the installed package; bash blocks run there too, under ``bash -e -o pipefail``, with the
interpreter's bin folder first on PATH, and both with one OpenMP thread unless OMP_NUM_THREADS is set. A block
whose previous non-blank line is ``<!-- skip: REASON -->`` is reported as skipped with that reason;
``<!-- slow -->`` marks it ``slow``.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = ("python", "bash")
SKIP = re.compile(r"<!--\s*skip:\s*(?P<reason>\S.*?)\s*-->")
SLOW = re.compile(r"<!--\s*slow\s*-->")
HANG_GUARD_S = 1800  # a hung block fails after 30 min; no block comes near it


@dataclass(frozen=True)
class Block:
    path: Path
    index: int  # among the file's python/bash blocks
    lang: str
    line: int  # of the opening fence, 1-based
    code: str
    directive: str  # the previous non-blank line

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}[{self.index}]"


def code_blocks(path: Path) -> list[Block]:
    """The fenced python/bash blocks of a Markdown file, in order."""
    lines, blocks, i = path.read_text().splitlines(), [], 0
    while i < len(lines):
        opening = re.match(r"^(`{3,})(\w*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        start, fence, lang = i, opening[1], opening[2]
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != fence:
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        before = [line.strip() for line in lines[:start] if line.strip()]
        if lang in RUNNABLE:
            n = sum(b.lang in RUNNABLE for b in blocks)
            blocks.append(Block(path, n, lang, start + 1, "\n".join(body) + "\n", before[-1] if before else ""))
    return blocks


ALL_BLOCKS = [b for path in DOC_FILES for b in code_blocks(path)]


def _param(block: Block):
    marks = []
    if skip := SKIP.search(block.directive):
        marks.append(pytest.mark.skip(reason=f"{block.name} (line {block.line}): {skip['reason']}"))
    if SLOW.search(block.directive):
        marks.append(pytest.mark.slow)
    return pytest.param(block, id=block.name, marks=marks)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh folder laid out like a checkout for the docs' paths: pgdm/assets/demo/*.png."""
    shutil.copytree(ROOT / "pgdm" / "assets" / "demo", tmp_path / "pgdm" / "assets" / "demo")
    return tmp_path


@pytest.mark.parametrize("block", [_param(b) for b in ALL_BLOCKS])
def test_code_block_runs(block: Block, workdir: Path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONSAFEPATH="1")
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny blocks: one thread, no OpenMP barrier stalls on a shared machine
    if block.lang == "python":
        (workdir / "block.py").write_text(block.code)
        command = [sys.executable, "-I", "block.py"]  # -I: neither the cwd nor the script folder on sys.path
    else:
        command = ["bash", "-e", "-o", "pipefail", "-c", block.code]
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, (
        f"{block.name}, the {block.lang} block at line {block.line}, exited with {done.returncode}\n"
        f"--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-3000:]}"
    )


def test_docs_have_runnable_blocks_and_directives_are_well_formed():
    """Catches a renamed docs folder (nothing collected) and a bare ``<!-- skip -->`` without its reason."""
    assert len(ALL_BLOCKS) >= 10
    for block in ALL_BLOCKS:
        if block.directive.startswith("<!--") and "skip" in block.directive:
            assert SKIP.search(block.directive), f"{block.name}: write the reason, <!-- skip: REASON -->"


def help_examples() -> dict[str, list[str]]:
    """Each ``pgdm`` (sub)command's example lines from its --help epilog, comments removed."""
    from pgdm.entrypoints.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    parsers = {"pgdm": parser, **{f"pgdm {n}": p for n, p in subparsers.choices.items()}}
    examples = {}
    for name, p in parsers.items():
        epilog = p.epilog or ""
        _, found, tail = epilog.partition("example")
        assert found, f"{name} --help has no examples"
        lines = [line.split("  #")[0].strip() for line in tail.splitlines()[1:]]
        examples[name] = [line for line in lines if line]
    return examples


def test_every_help_example_is_in_cli_docs():
    cli_doc = (ROOT / "docs" / "cli.md").read_text()
    missing = [f"{name}: {line}" for name, lines in help_examples().items() for line in lines if line not in cli_doc]
    assert not missing, "examples of --help missing from docs/cli.md:\n" + "\n".join(missing)
