"""Benchmark cells: method specs, a resumable store of finished cells, and the tables and plots written from it.

A cell is one combination of the grid (method × steps × task × σ_y for ``quality``); its result is a flat dict.
Finished cells are appended to ``cells.jsonl`` in the output folder as they finish, so a rerun after an
interruption skips them. Every run rewrites ``results.csv``, ``results.json``, ``results.md`` and the plots
from all finished cells. A cell a method cannot run is stored with ``status`` "unsupported" and its reason.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from pgdm.methods import get_method

__all__ = ["MethodSpec", "parse_methods", "parse_list", "CellStore", "write_tables", "plot_lines"]


@dataclass(frozen=True)
class MethodSpec:
    """A method with options and an optional start, written ``name[:option=value…][@start_step]``, e.g.
    ``pigdm:weight=2`` or ``cpigdm:w=8@400`` (start from h†(y) noised to timestep 400; default: pure noise)."""

    label: str
    name: str
    options: tuple[tuple[str, float | None], ...]
    start_step: int | None = None

    @classmethod
    def parse(cls, text: str) -> "MethodSpec":
        head, at, start = text.strip().partition("@")
        if at and not start.strip().isdigit():
            raise ValueError(f"start step in {text!r} must be a timestep (an integer ≥ 0) after '@'")
        name, *pairs = head.split(":")
        method = get_method(name)
        options: dict[str, float | None] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise ValueError(f"method option {pair!r} in {text!r} must be NAME=VALUE")
            try:
                options[key] = None if value.lower() == "none" else float(value)
            except ValueError:
                raise ValueError(f"method option {key} in {text!r} must be a number or none, got {value!r}") from None
        method.options(options)  # unknown names: one-line error
        return cls(text.strip(), method.name, tuple(sorted(options.items())), int(start) if at else None)


def parse_methods(text: str) -> list[MethodSpec]:
    """A comma-separated list of :class:`MethodSpec` strings."""
    return [MethodSpec.parse(t) for t in text.split(",") if t.strip()]


def parse_list(text: str, kind: type, what: str) -> list:
    """A comma-separated list of ``kind`` values; one-line ValueError naming ``what``."""
    try:
        values = [kind(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{what} must be a comma-separated list of {kind.__name__} values, got {text!r}") from None
    if not values:
        raise ValueError(f"{what} must not be empty")
    return values


class CellStore:
    """Finished cells of one benchmark in ``folder/cells.jsonl``, keyed by their grid coordinates."""

    def __init__(self, folder: Path, key_fields: Sequence[str]) -> None:
        self.folder, self.key_fields = Path(folder), tuple(key_fields)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "cells.jsonl"
        self.rows: dict[tuple, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.rows[self.key(row)] = row

    def key(self, cell: dict) -> tuple:
        return tuple(str(cell[k]) for k in self.key_fields)

    def done(self, cell: dict) -> bool:
        return self.key(cell) in self.rows

    def add(self, row: dict) -> None:
        self.rows[self.key(row)] = row
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def write_tables(folder: Path, rows: Iterable[dict], columns: Sequence[str], title: str, notes: Sequence[str] = ()) -> None:
    """results.csv, results.json and results.md (a Markdown table with ``notes`` below it) from ``rows``."""
    rows = list(rows)
    with (folder / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (folder / "results.json").write_text(json.dumps({"title": title, "notes": list(notes), "cells": rows}, indent=1))

    def fmt(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))

    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    lines += [""] + [f"- {n}" for n in notes]
    (folder / "results.md").write_text("\n".join(lines) + "\n")


def plot_lines(path: Path, rows: Sequence[dict], x: str, y: str, panel: str, line: str, rows_by: str | None = None, *, xlog: bool = True) -> None:
    """A PNG grid of panels (one per value of ``panel``, one panel row per value of ``rows_by``), one line per value
    of ``line``: ``y`` against ``x`` over the rows with ``status == "ok"``."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("status") == "ok" and r.get(y) is not None]
    if not ok:
        return
    panels = sorted({r[panel] for r in rows}, key=str)
    row_values = sorted({r[rows_by] for r in rows}, key=str) if rows_by else [None]
    names = sorted({r[line] for r in ok}, key=str)
    colour = {name: f"C{i % 10}" for i, name in enumerate(names)}  # one colour per line in every panel
    fig, axes = plt.subplots(len(row_values), len(panels), figsize=(3.6 * len(panels), 3.0 * len(row_values)), squeeze=False)
    for i, rv in enumerate(row_values):
        for j, pv in enumerate(panels):
            ax = axes[i][j]
            ax.set_title(f"{pv}" + (f", {rows_by}={rv}" if rows_by else ""), fontsize=9)
            cells = [r for r in ok if r[panel] == pv and (rows_by is None or r[rows_by] == rv)]
            if not cells:
                ax.text(0.5, 0.5, "no supported cells", ha="center", va="center", transform=ax.transAxes, fontsize=8)
                ax.set_axis_off()
                continue
            for name in sorted({r[line] for r in cells}, key=str):
                pts = sorted((r[x], r[y]) for r in cells if r[line] == name)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=colour[name], label=str(name))
            ax.set_xlabel(x)
            ax.set_ylabel(y)
            if xlog:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            xs = sorted({r[x] for r in cells})
            if all(isinstance(v, int) for v in xs):  # step counts: a labelled tick at each
                ax.set_xticks(xs, [str(v) for v in xs])
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
