"""Parsing (pure: text in, trees out): a Python file is parsed whole, a notebook cell by
cell (IPython magics neutralised first). What does not parse comes back as a
:class:`SkippedFile` naming the file, the cell and the line."""

from __future__ import annotations

import ast
import json
import re
import warnings
from dataclasses import dataclass
from typing import Any

_CELL_MAGICS_WITH_PYTHON = frozenset({"time", "timeit", "capture", "prun", "memit"})
# `!ls`, `%pip install x`, `?obj`, `files = !ls`, `obj?` / `obj??`
_MAGIC_LINE = re.compile(r"\s*(?:[!%?]|[\w.\[\], ]+=\s*[!%]|[\w.]+\?\??\s*$)")
_PARSE_ERRORS = (SyntaxError, ValueError, RecursionError, MemoryError)


@dataclass(frozen=True)
class SkippedFile:
    """A file (or notebook cell) that could not be parsed; it contributed nothing."""

    file: str
    error: str
    line: int | None = None
    cell: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "cell": self.cell, "error": self.error}

    def __str__(self) -> str:
        where = self.file + (f"[cell {self.cell}]" if self.cell else "")
        where += f":{self.line}" if self.line else ""
        return f"{where}: {self.error}"


@dataclass(frozen=True)
class ParsedUnit:
    """A parsed piece of a source: a whole file, or a notebook's code cell (``cell`` 1-based)."""

    tree: ast.Module
    cell: int | None = None


@dataclass(frozen=True)
class ParsedSource:
    """A parsed Python file or notebook: its units in source order."""

    path: str
    units: tuple[ParsedUnit, ...]


def _syntax_skip(path: str, exc: BaseException, cell: int | None = None) -> SkippedFile:
    if isinstance(exc, SyntaxError):
        return SkippedFile(path, f"{type(exc).__name__}: {exc.msg}", exc.lineno, cell)
    return SkippedFile(path, f"{type(exc).__name__}: {exc}", None, cell)


def parse_python(path: str, source: str | bytes) -> tuple[ParsedSource | None, tuple[SkippedFile, ...]]:
    """Parse one Python file whole; a file that does not parse comes back as a SkippedFile
    with the line of its error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a SyntaxWarning in someone's code is not ours to print
        try:
            tree = ast.parse(source, filename=path)
        except _PARSE_ERRORS as exc:
            return None, (_syntax_skip(path, exc),)
    return ParsedSource(path, (ParsedUnit(tree),)), ()


def neutralise_magics(code: str) -> str | None:
    """IPython magics and shell lines become ``pass`` (same indentation); None for a non-Python cell."""
    lines = code.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        magic = lines[0].lstrip()[2:].split(maxsplit=1)
        if not magic or magic[0] not in _CELL_MAGICS_WITH_PYTHON:
            return None  # %%bash, %%writefile, %%html ...: not Python
        lines[0] = "pass"
    for i, line in enumerate(lines):
        if _MAGIC_LINE.match(line):
            indent = line[: len(line) - len(line.lstrip())]
            lines[i] = indent + "pass"
    return "\n".join(lines)


def _cell_source(cell: dict[str, Any], key: str) -> str:
    src = cell.get(key, "")
    return "".join(src) if isinstance(src, list) else str(src)


def parse_notebook(path: str, data: str | bytes) -> tuple[ParsedSource | None, tuple[SkippedFile, ...]]:
    """Parse a notebook's code cells; markdown and raw cells are ignored, bad cells skipped."""
    try:
        nb = json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        line = exc.lineno if isinstance(exc, json.JSONDecodeError) else None
        return None, (SkippedFile(path, f"not valid notebook JSON: {exc}", line),)
    if not isinstance(nb, dict):
        return None, (SkippedFile(path, "not a notebook: the JSON is not an object"),)
    meta = nb.get("metadata")
    kernel = meta.get("kernelspec") if isinstance(meta, dict) else None
    lang = kernel.get("language") if isinstance(kernel, dict) else None
    if isinstance(lang, str) and lang.lower() != "python":
        return None, ()
    cells: Any = nb.get("cells")
    key = "source"
    if cells is None and isinstance(nb.get("worksheets"), list):  # nbformat 3
        cells = [c for ws in nb["worksheets"] if isinstance(ws, dict) for c in ws.get("cells", [])]
        key = "input"
    if not isinstance(cells, list):
        return None, (SkippedFile(path, "not a notebook: no 'cells' list"),)
    units: list[ParsedUnit] = []
    skipped: list[SkippedFile] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index, cell in enumerate(cells, start=1):
            if not isinstance(cell, dict) or cell.get("cell_type") != "code":
                continue
            code = neutralise_magics(_cell_source(cell, key))
            if code is None or not code.strip():
                continue
            try:
                units.append(ParsedUnit(ast.parse(code, filename=f"{path}[cell {index}]"), index))
            except _PARSE_ERRORS as exc:
                skipped.append(_syntax_skip(path, exc, index))
    return ParsedSource(path, tuple(units)), tuple(skipped)


def parse_file(path: str, data: bytes) -> tuple[ParsedSource | None, tuple[SkippedFile, ...]]:
    """Dispatch on the suffix: ``.ipynb`` is a notebook, anything else Python."""
    return parse_notebook(path, data) if path.endswith(".ipynb") else parse_python(path, data)
