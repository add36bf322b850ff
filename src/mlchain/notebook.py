"""Running a notebook as the training entry, inside the training process.

The code cells run in order in one namespace, as a kernel would run them top to bottom,
but in this process: the metric and model hooks (:mod:`mlchain.capture`) see them as they
see a script, and the images need no kernel (ipykernel, nbclient). IPython magics and shell
lines become ``pass`` (the classifier reads notebooks the same way); a ``%%bash`` cell is
skipped. Each cell's printed output is kept, and the executed notebook (outputs filled in,
an error where a cell raised) is written as an artifact of the trial.

Each cell is compiled under the name ``<notebook>[cell N]`` (its source registered with
linecache), so a traceback, and the provenance of a metric, say ``train.ipynb[cell 4]:7``.
"""

from __future__ import annotations

import io
import json
import linecache
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from mlchain.detect.parsing import neutralise_magics


@dataclass(frozen=True)
class Cell:
    index: int  # 1-based among all cells, as the classifier numbers them
    name: str  # the file name its code is compiled under
    code: str  # magics neutralised


def cell_name(notebook: str, index: int) -> str:
    return f"{notebook}[cell {index}]"


def load(data: str | bytes) -> dict[str, Any]:
    nb = json.loads(data)
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise ValueError("not a notebook (nbformat 4): no 'cells' list")  # noqa: TRY004 - bad input
    return nb


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def code_cells(nb: dict[str, Any], notebook: str) -> list[Cell]:
    """The cells to run (pure): code cells with Python in them, magics neutralised."""
    cells = []
    for index, cell in enumerate(nb["cells"], start=1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        code = neutralise_magics(_source(cell))
        if code is not None and code.strip():
            cells.append(Cell(index, cell_name(notebook, index), code))
    return cells


class _Tee(io.TextIOBase):
    """What a cell prints: to the log (the real stream) and into the cell's outputs."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.kept = io.StringIO()

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.kept.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


@contextmanager
def _teed() -> Iterator[tuple[_Tee, _Tee]]:
    out, err = _Tee(sys.stdout), _Tee(sys.stderr)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        yield out, err
    finally:
        sys.stdout, sys.stderr = saved


def display(*objects: Any, **_options: Any) -> None:
    """IPython's ``display``, which notebooks call without importing it: each object's repr, printed."""
    for obj in objects:
        print(repr(obj))


def run(path: Path, notebook: str, namespace: dict[str, Any], executed: Path) -> None:
    """Run the notebook's code cells in ``namespace``; write the executed notebook to ``executed``
    whatever happens (a cell that raises stops the run, and the error is re-raised)."""
    nb = load(path.read_bytes())
    cells = code_cells(nb, notebook)
    namespace.setdefault("display", display)
    outputs: dict[int, list[dict[str, Any]]] = {}
    try:
        for count, cell in enumerate(cells, start=1):
            linecache.cache[cell.name] = (len(cell.code), None, cell.code.splitlines(True), cell.name)
            print(f"mlchain-train: {cell.name}", flush=True)
            with _teed() as (out, err):
                try:
                    exec(compile(cell.code, cell.name, "exec"), namespace)  # noqa: S102 - the entry's own code
                except BaseException as exc:
                    outputs[cell.index] = _streams(out, err) + [_error(exc)]
                    raise
            outputs[cell.index] = _streams(out, err)
            nb["cells"][cell.index - 1]["execution_count"] = count
    finally:
        _write_executed(nb, outputs, executed)


def _streams(out: _Tee, err: _Tee) -> list[dict[str, Any]]:
    return [{"output_type": "stream", "name": name, "text": tee.kept.getvalue()}
            for name, tee in (("stdout", out), ("stderr", err)) if tee.kept.getvalue()]


def _error(exc: BaseException) -> dict[str, Any]:
    return {"output_type": "error", "ename": type(exc).__name__, "evalue": str(exc),
            "traceback": traceback.format_exception(exc)}


def _write_executed(nb: dict[str, Any], outputs: dict[int, list[dict[str, Any]]], dest: Path) -> None:
    for index, cell_outputs in outputs.items():
        nb["cells"][index - 1]["outputs"] = cell_outputs
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(nb, indent=1))
