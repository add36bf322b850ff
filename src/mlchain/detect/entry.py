"""Finding the entry (pure): which script or notebook of a repository trains the model.

A file *trains* when the code it runs calls ``fit`` (or ``evaluate``, ``partial_fit``,
``train_on_batch``, ``fit_generator``): directly at top level (a notebook's cells, a
script's body, ``if __name__ == "__main__":`` included), or through functions it calls,
its own or imported from the repository's modules (followed to any depth). A function
that is only defined trains nothing until something calls it, so a library module is not
an entry; tests and ``setup.py`` never are.

Among the files that train (the *candidates*), the choice, in order:

1. the candidates whose code decides a supported framework, when there are any (a Keras
   script beside PyTorch notebooks trains the script); else all of them (the framework
   decision then names the unsupported one);
2. ``train.py`` at the root, the default name, when it is one of them;
3. the only one left; or the only script among notebooks (notebooks beside a script
   are usually its exploration);
4. otherwise the choice is ambiguous: an error lists the candidates and the ``entry:``
   line to add to mlchain.yaml.

The framework is then decided from the entry and the repository modules it imports
(:func:`entry_reasons`), the whole repository being the fallback.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mlchain.contract import CONFIG_FILE, DEFAULT_ENTRY, FRAMEWORKS
from mlchain.detect.decision import leading_framework
from mlchain.detect.evidence import Reason
from mlchain.detect.parsing import ParsedSource
from mlchain.errors import ContractError

TRAINING_METHODS = frozenset({"fit", "fit_generator", "train_on_batch", "partial_fit", "evaluate"})
_NOT_ENTRIES = frozenset({"setup.py", "conftest.py", "noxfile.py", "fabfile.py"})
_TEST_FOLDERS = frozenset({"test", "tests", "testing"})


def is_test_or_tooling(path: str) -> bool:
    """Tests, ``setup.py`` and the like: never an entry."""
    parts = path.split("/")
    name = parts[-1]
    return (name in _NOT_ENTRIES or name.startswith("test_") or name.endswith("_test.py")
            or any(p in _TEST_FOLDERS for p in parts[:-1]))


def module_names(path: str) -> list[str]:
    """The dotted names a ``.py`` file may be imported by: ``src/pkg/model.py`` ->
    ``src.pkg.model``, ``pkg.model``, ``model`` (a ``src/`` layout, or a folder on the path)."""
    if not path.endswith(".py"):
        return []
    parts = path[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return [".".join(parts[i:]) for i in range(len(parts)) if parts[i:]]


@dataclass
class _Function:
    """A top-level function: does its body train, and what does it call."""

    fits: list[tuple[str, str]] = field(default_factory=list)  # (call text, where)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (dotted name called, where)


@dataclass
class _File:
    path: str
    aliases: dict[str, str] = field(default_factory=dict)  # local name -> dotted target (module[.attr])
    imported: list[str] = field(default_factory=list)  # dotted modules imported (anywhere)
    functions: dict[str, _Function] = field(default_factory=dict)
    top: _Function = field(default_factory=_Function)  # what runs when the file runs
    main_guard: bool = False


def _dotted(expr: ast.expr) -> str | None:
    parts = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if not isinstance(expr, ast.Name):
        return None
    parts.append(expr.id)
    return ".".join(reversed(parts))


def _package_of(path: str) -> list[str]:
    return path.split("/")[:-1]


def _collect(body: Iterable[ast.AST], into: _Function, path: str, cell: int | None) -> None:
    prefix = f"{path}[cell {cell}]" if cell else path
    for stmt in body:
        for node in ast.walk(stmt):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in TRAINING_METHODS:
                shown = _dotted(func) or f"<...>.{func.attr}"
                into.fits.append((f"{shown}()", f"{prefix}:{node.lineno}"))
            name = _dotted(func)
            if name is not None:
                into.calls.append((name, f"{prefix}:{node.lineno}"))


def _is_main_guard(stmt: ast.stmt) -> bool:
    if not isinstance(stmt, ast.If) or not isinstance(stmt.test, ast.Compare):
        return False
    sides = [stmt.test.left, *stmt.test.comparators]
    names = {s.id for s in sides if isinstance(s, ast.Name)}
    consts = {s.value for s in sides if isinstance(s, ast.Constant)}
    return "__name__" in names and "__main__" in consts


def _read(source: ParsedSource) -> _File:
    info = _File(source.path)
    package = _package_of(source.path)
    for unit in source.units:
        top_level: list[ast.stmt] = []
        for node in ast.walk(unit.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    info.imported.append(alias.name)
                    if alias.asname:
                        info.aliases[alias.asname] = alias.name
                    else:
                        root = alias.name.partition(".")[0]
                        info.aliases.setdefault(root, root)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                    module = ".".join([*base, *(node.module.split(".") if node.module else [])])
                else:
                    module = node.module or ""
                info.imported.append(module)
                for alias in node.names:
                    if alias.name != "*":
                        info.aliases[alias.asname or alias.name] = f"{module}.{alias.name}".lstrip(".")
                        info.imported.append(f"{module}.{alias.name}".lstrip("."))
        for stmt in unit.tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                function = info.functions.setdefault(stmt.name, _Function())
                _collect(stmt.body, function, source.path, unit.cell)
            elif not isinstance(stmt, ast.ClassDef):
                top_level.append(stmt)
                info.main_guard = info.main_guard or _is_main_guard(stmt)
        _collect(top_level, info.top, source.path, unit.cell)
    return info


@dataclass(frozen=True)
class Candidate:
    """A file that trains, and why (the calls that reach ``fit``/``evaluate``)."""

    path: str
    why: tuple[str, ...]
    main_guard: bool = False

    @property
    def notebook(self) -> bool:
        return self.path.endswith(".ipynb")

    def describe(self) -> str:
        shown = "; ".join(self.why[:3]) + ("; ..." if len(self.why) > 3 else "")
        return f"{self.path} ({shown})"


class _Repo:
    """The repository's files read for entry finding, and the module index."""

    def __init__(self, sources: Sequence[ParsedSource]) -> None:
        self.files = {s.path: _read(s) for s in sources}
        self.modules: dict[str, list[str]] = {}
        for path in sorted(self.files, key=lambda p: (p.count("/"), p)):
            for name in module_names(path):
                self.modules.setdefault(name, []).append(path)
        self._trains: dict[tuple[str, str], list[str]] = {}

    def module_file(self, dotted: str) -> str | None:
        """The repository file a dotted module name imports (the shallowest match), else None."""
        found = self.modules.get(dotted)
        return found[0] if found else None

    def resolve(self, file: _File, called: str) -> tuple[str, str] | None:
        """(file, function) that a call in ``file`` names: its own function, or a function of a
        repository module it imported; None for anything else (a library's)."""
        head, _, rest = called.partition(".")
        if not rest and head in file.functions and head not in file.aliases:
            return file.path, head
        target = file.aliases.get(head)
        if target is None:
            return None
        dotted = f"{target}.{rest}" if rest else target
        module, _, function = dotted.rpartition(".")
        path = self.module_file(module) if module else None
        if path is not None and function in self.files[path].functions:
            return path, function
        return None

    def trains(self, path: str, function: str, seen: frozenset[tuple[str, str]] = frozenset()) -> list[str]:
        """Why calling ``function`` of ``path`` trains (empty: it does not)."""
        key = (path, function)
        if key in self._trains:
            return self._trains[key]
        if key in seen:
            return []
        self._trains[key] = why = self._why(self.files[path], self.files[path].functions[function],
                                            seen | {key})
        return why

    def _why(self, file: _File, body: _Function, seen: frozenset[tuple[str, str]]) -> list[str]:
        why = [f"calls {text} at {where}" for text, where in body.fits]
        for called, where_called in body.calls:
            target = self.resolve(file, called)
            if target is None or target in seen:
                continue
            inner = self.trains(*target, seen=seen)
            if inner:
                of = "" if target[0] == file.path else f" of {target[0]}"
                why.append(f"calls {called}(){of} at {where_called}, which {inner[0]}")
        return why

    def candidates(self) -> list[Candidate]:
        out = []
        for path, file in sorted(self.files.items()):
            if is_test_or_tooling(path):
                continue
            why = self._why(file, file.top, frozenset())
            if why:
                out.append(Candidate(path, tuple(why), file.main_guard))
        return out

    def imported_modules(self, path: str) -> list[str]:
        """The repository files ``path`` imports, followed to any depth (itself first)."""
        order, todo = [path], [path]
        while todo:
            file = self.files.get(todo.pop())
            if file is None:
                continue
            for dotted in file.imported:
                found = self.module_file(dotted) or self.module_file(dotted.rpartition(".")[0])
                if found is not None and found not in order:
                    order.append(found)
                    todo.append(found)
        return order


@dataclass(frozen=True)
class EntryChoice:
    """The entry, why it was chosen, the other candidates and the files that decide the framework."""

    entry: str
    why: str
    candidates: tuple[Candidate, ...] = ()
    files: tuple[str, ...] = ()  # the entry and the repository modules it imports
    found: bool = True  # False: named in mlchain.yaml, or the default taken without evidence

    def to_dict(self) -> dict[str, object]:
        return {"entry": self.entry, "why": self.why, "files": list(self.files), "found": self.found,
                "candidates": [{"path": c.path, "why": list(c.why)} for c in self.candidates]}

    def explain(self) -> str:
        lines = [f"entry: {self.entry} ({self.why})"]
        others = [c for c in self.candidates if c.path != self.entry]
        if others:
            lines.append("other files that train: " + "; ".join(c.path for c in others[:8])
                         + (" ..." if len(others) > 8 else ""))
        if len(self.files) > 1:
            lines.append(f"framework read from {self.entry} and the modules it imports: {', '.join(self.files[1:])}")
        return "\n".join(lines)


def candidate_framework(files: Sequence[str], reasons_by_file: Mapping[str, Sequence[Reason]]) -> str | None:
    """The framework the evidence of these files ranks first, supported or not (None: no evidence)."""
    return leading_framework([r for path in files for r in reasons_by_file.get(path, ())])


def choose_entry(sources: Sequence[ParsedSource], reasons_by_file: Mapping[str, Sequence[Reason]],
                 existing: Iterable[str] = ()) -> EntryChoice | None:
    """The entry of a repository (module docstring); None when no file trains and there is no
    ``train.py`` either. Raises ContractError when the choice is ambiguous."""
    repo = _Repo(sources)
    candidates = repo.candidates()
    existing = set(existing) | set(repo.files)
    if not candidates:
        if DEFAULT_ENTRY in existing:
            return EntryChoice(DEFAULT_ENTRY, "no file calls fit() or evaluate(); train.py is the default entry",
                               (), tuple(repo.imported_modules(DEFAULT_ENTRY)), found=False)
        return None
    frameworks = {c.path: candidate_framework(repo.imported_modules(c.path), reasons_by_file) for c in candidates}
    supported = [c for c in candidates if frameworks[c.path] in FRAMEWORKS]
    pool = supported or candidates
    dropped = len(candidates) - len(pool)
    chosen: Candidate | None = None
    how = ""
    default = [c for c in pool if c.path == DEFAULT_ENTRY]
    scripts = [c for c in pool if not c.notebook]
    if default:
        chosen, how = default[0], "train.py, the default name"
    elif len(pool) == 1:
        chosen, how = pool[0], "the only file that trains"
    elif len(scripts) == 1:
        chosen, how = scripts[0], f"the only script that trains, beside {len(pool) - 1} notebook(s)"
    if chosen is None:
        raise ambiguous(pool)
    if frameworks[chosen.path] in FRAMEWORKS:
        how += f" with {frameworks[chosen.path]}"
    why = f"{how}: {'; '.join(chosen.why[:2])}"
    if dropped:
        skipped = sorted({str(frameworks[c.path] or "no framework") for c in candidates if c not in pool})
        why += f"; {dropped} other file(s) train with {', '.join(skipped)}, not supported"
    return EntryChoice(chosen.path, why, tuple(candidates), tuple(repo.imported_modules(chosen.path)))


def ambiguous(pool: Sequence[Candidate]) -> ContractError:
    listed = "\n".join(f"  {c.describe()}" for c in pool[:12])
    return ContractError(f"{len(pool)} files train a model; which one is the entry?\n{listed}",
                         hint=f"name it in {CONFIG_FILE}: `entry: {pool[0].path}` (or another of those above)")


def named_entry(entry: str, sources: Sequence[ParsedSource]) -> EntryChoice:
    """The entry mlchain.yaml names, with the repository modules it imports."""
    repo = _Repo(sources)
    files = tuple(repo.imported_modules(entry)) if entry in repo.files else (entry,)
    return EntryChoice(entry, f"entry: in {CONFIG_FILE}", (), files, found=False)


def no_entry(files_scanned: int, found: Sequence[Reason]) -> ContractError:
    """No file trains and there is no train.py: what was read and found, and how to name the entry."""
    seen = "; ".join(f"{r.evidence} at {r.where} ({r.framework})" for r in found[:4])
    return ContractError(
        f"no file trains a model: read {files_scanned} Python file(s) and notebook(s), and none calls"
        f" {', '.join(sorted(TRAINING_METHODS))} (at top level, under `if __name__ == \"__main__\":`, or in"
        f" a function that code calls)" + (f"; found {seen}" if seen else ""),
        hint=f"add the training script (train.py by default), or name it with `entry: path/to/script.py`"
             f" in {CONFIG_FILE}")
