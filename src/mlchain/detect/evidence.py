"""Evidence from the AST (pure): imports, calls resolved through the file's imports and
aliases (``tf.keras.layers.Conv2D`` with ``import tensorflow as tf``; ``Conv2D`` after
``from tensorflow.keras.layers import *``), classes derived from framework bases, and
``fit``/``compile`` on objects a framework built; requirements as weaker evidence.
Comments, strings and docstrings never count (they are not in the tree).
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterable
from operator import attrgetter
from typing import Any, NamedTuple, cast

from mlchain.detect.parsing import ParsedSource
from mlchain.detect.requirements import Requirement
from mlchain.detect.rules import (
    IMPORT,
    IMPORTS,
    KERAS2,
    KERAS2_API,
    KERAS2_METHODS,
    KERAS2_OPTIMIZER_KEYWORDS,
    MODEL_BUILDING,
    MODEL_METHODS,
    PIN_BELOW_KERAS3,
    REQUIREMENT,
    REQUIREMENTS,
    canonical,
    dataset_of,
    keras2_only,
    lookup_call,
    pinned_below_keras3,
)

_BUILTINS = frozenset(dir(builtins))


class Reason(NamedTuple):
    """One piece of evidence: where, what, for which framework, of which kind and weight.
    (A named tuple: a large repository has tens of thousands.)"""

    framework: str
    kind: str
    evidence: str
    file: str
    line: int
    weight: float
    symbol: str = ""  # the resolved name (``keras.layers.Conv2D``), module or distribution
    cell: int | None = None  # notebooks: 1-based index among all cells

    @property
    def where(self) -> str:
        return f"{self.file}[cell {self.cell}]:{self.line}" if self.cell else f"{self.file}:{self.line}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "framework": self.framework, "kind": self.kind, "evidence": self.evidence,
            "file": self.file, "line": self.line, "weight": self.weight, "symbol": self.symbol,
        }
        if self.cell is not None:
            out["cell"] = self.cell
        return out


class DatasetCall(NamedTuple):
    """A call that downloads a dataset at run time (``keras.datasets.mnist.load_data()``)."""

    library: str  # "keras" | "sklearn"
    name: str  # keras: the dataset (mnist); sklearn: the fetcher (fetch_openml)
    file: str
    line: int
    call: str  # as written
    kwargs: tuple[tuple[str, Any], ...] = ()  # the call's literal keyword arguments

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


_KERAS_ROOTS = frozenset({"keras", "tensorflow", "tf_keras"})


# Source order in one file: the cell is None in every reason of a .py file, set in every one of a notebook's.
_IN_FILE = attrgetter("cell", "line")


def _import_text(node: ast.Import | ast.ImportFrom, alias: ast.alias | None = None) -> str:
    if isinstance(node, ast.Import):
        assert alias is not None
        return f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
    names = [a.name + (f" as {a.asname}" if a.asname else "") for a in node.names]
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"from {'.' * node.level}{node.module or ''} import {shown}"


_NOT_CHILDREN = frozenset({
    "ctx", "id", "attr", "name", "names", "module", "level", "kind", "type_comment", "arg", "asname",
    "op", "ops", "is_async", "conversion", "n", "s",
})
_LEAVES = frozenset({ast.Name, ast.Constant})
# Node kinds the walk collects -> a code; then, per kind met, (code or 0, fields holding children).
_CALL, _ASSIGN, _IMPORT, _CLASS, _FUNCTION = 1, 2, 3, 4, 5
_COLLECTED: dict[type, int] = {
    ast.Call: _CALL, ast.Assign: _ASSIGN, ast.Import: _IMPORT, ast.ImportFrom: _IMPORT,
    ast.ClassDef: _CLASS, ast.FunctionDef: _FUNCTION, ast.AsyncFunctionDef: _FUNCTION,
}
_PLANS: dict[type, tuple[int, tuple[str, ...]]] = {}


def _plan(kind: type) -> tuple[int, tuple[str, ...]]:
    plan = _PLANS[kind] = (_COLLECTED.get(kind, 0),
                           tuple(f for f in getattr(kind, "_fields", ()) if f not in _NOT_CHILDREN))
    return plan


class _FileEvidence:
    """Evidence in one source: names resolved through the file's imports (module-wide)."""

    def __init__(self, source: ParsedSource) -> None:
        self.source = source
        self.aliases: dict[str, str] = {}  # local name -> qualified name ("" = local module)
        self.stars: list[str] = []  # modules star-imported, in source order
        self.bound: set[str] = set()  # names defined here (shadow star imports)
        self.objects: dict[tuple[int, str], str] = {}  # (scope, variable) -> what built it
        self.reasons: list[Reason] = []
        self.datasets: list[DatasetCall] = []
        self.imports_keras = False

    def add(self, u: int, node: ast.stmt | ast.expr, framework: str, kind: str, weight: float,
            evidence: str, symbol: str) -> None:
        unit = self.source.units[u]
        self.reasons.append(Reason(framework, kind, evidence, self.source.path,
                                   node.lineno, weight, symbol, unit.cell))

    def resolve(self, expr: ast.expr) -> tuple[str, str] | None:
        """(source spelling, qualified name) of a dotted name rooted in an import, else None."""
        attrs: list[str] = []
        while isinstance(expr, ast.Attribute):
            attrs.append(expr.attr)
            expr = expr.value
        if not isinstance(expr, ast.Name):
            return None
        name = expr.id
        base = self.aliases.get(name)
        if base is None:
            if not self.stars or name in self.bound or name in _BUILTINS:
                return None
            for module in reversed(self.stars):
                candidate = f"{module}.{name}"
                if lookup_call(candidate) is not None:
                    base = candidate
                    break
            else:
                return None
        if not base:
            return None
        attrs.reverse()
        tail = ".".join(attrs)
        return (f"{name}.{tail}" if tail else name), (f"{base}.{tail}" if tail else base)

    def run(self) -> list[Reason]:
        # (unit, scope, node); scope 0 is the module (shared by a notebook's cells), each
        # function body gets its own, so that ``clf`` in one test is not ``clf`` in another.
        imports: list[tuple[int, ast.Import | ast.ImportFrom]] = []
        calls: list[tuple[int, int, ast.Call]] = []
        classes: list[tuple[int, ast.ClassDef]] = []
        assigns: list[tuple[int, int, ast.Assign]] = []
        bound = self.bound
        scopes = 0
        plans = _PLANS.get
        for u, unit in enumerate(self.source.units):
            todo: list[tuple[ast.AST, int]] = [(unit.tree, 0)]
            while todo:
                root, scope = todo.pop()
                # Not ast.walk: this walk never descends into names, constants, contexts,
                # operators or import aliases, which hold no evidence, and one dict lookup per
                # node says what to do with it.
                stack: list[ast.AST] = [root]
                pop, push = stack.pop, stack.append
                while stack:
                    node = pop()
                    kind = type(node)
                    collected, fields = plans(kind) or _plan(kind)
                    if collected:
                        if collected == _CALL:
                            calls.append((u, scope, cast(ast.Call, node)))
                        elif collected == _ASSIGN:
                            assigns.append((u, scope, cast(ast.Assign, node)))
                        elif collected == _IMPORT:
                            imports.append((u, cast("ast.Import | ast.ImportFrom", node)))
                            continue
                        elif collected == _CLASS:
                            classes.append((u, cast(ast.ClassDef, node)))
                            bound.add(cast(ast.ClassDef, node).name)
                        elif node is not root:  # a function: its body is a scope of its own
                            bound.add(cast(ast.FunctionDef, node).name)
                            scopes += 1
                            todo.append((node, scopes))
                            continue
                    for name in fields:
                        value = getattr(node, name, None)
                        if type(value) is list:
                            for child in value:
                                if type(child) not in _LEAVES:
                                    push(child)
                        elif value is not None and type(value) not in _LEAVES:
                            push(value)
        imports.sort(key=lambda item: (item[0], item[1].lineno))
        for u, imp in imports:
            self._import(u, imp)
        assigns.sort(key=lambda item: (item[0], item[2].lineno))
        for u, scope, assign in assigns:
            self._assign(scope, assign)
        for u, cls in classes:
            for base in cls.bases:
                resolved = self.resolve(base)
                hit = lookup_call(resolved[1]) if resolved else None
                if resolved and hit:
                    self.add(u, cls, hit[0], hit[1], hit[2], f"class {cls.name}({resolved[0]})",
                             canonical(resolved[1]))
        for u, scope, call in calls:
            self._call(u, scope, call)
        self.reasons.sort(key=_IN_FILE)  # source order, whatever the order of the walk
        return self.reasons

    def _keras2(self, u: int, node: ast.stmt | ast.expr, name: str, evidence: str) -> bool:
        """A Keras 2 marker when ``name`` is an API Keras 3 removed."""
        said = keras2_only(name)
        if said is not None:
            self.add(u, node, KERAS2, KERAS2_API, 0.0, f"{evidence}: {said}", canonical(name))
        return said is not None

    def _import(self, u: int, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    self.aliases[alias.asname] = alias.name
                else:
                    root = alias.name.partition(".")[0]
                    self.aliases[root] = root
                self._import_reason(u, node, alias.name, alias)
                self.imports_keras |= alias.name.partition(".")[0] in _KERAS_ROOTS
                self._keras2(u, node, alias.name, _import_text(node, alias))
            return
        if node.level:  # relative: a module of this repository, never a framework
            for alias in node.names:
                if alias.name != "*":
                    self.aliases[alias.asname or alias.name] = ""
            return
        module = node.module or ""
        for alias in node.names:
            if alias.name == "*":
                self.stars.append(module)
            else:
                self.aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
        self._import_reason(u, node, module)
        self.imports_keras |= module.partition(".")[0] in _KERAS_ROOTS
        if not self._keras2(u, node, module, _import_text(node)):
            for alias in node.names:  # from keras.utils import np_utils
                if alias.name != "*" and self._keras2(u, node, f"{module}.{alias.name}", _import_text(node)):
                    break

    def _import_reason(self, u: int, node: ast.Import | ast.ImportFrom | ast.Call, module: str,
                       alias: ast.alias | None = None) -> None:
        hit = IMPORTS.get(module.partition(".")[0])
        if hit is not None:
            text = f"dynamic import of {module!r}" if isinstance(node, ast.Call) else _import_text(node, alias)
            self.add(u, node, hit[0], IMPORT, hit[1], text, module)

    def _dynamic_import(self, call: ast.Call) -> str | None:
        """The module of ``importlib.import_module("x")`` / ``__import__("x")``, else None."""
        if not call.args or not isinstance(call.args[0], ast.Constant):
            return None
        module = call.args[0].value
        if not isinstance(module, str):
            return None
        func = call.func
        if isinstance(func, ast.Name) and func.id == "__import__" and func.id not in self.bound:
            return module
        resolved = self.resolve(func)
        return module if resolved and resolved[1] == "importlib.import_module" else None

    def _assign(self, scope: int, node: ast.Assign) -> None:
        value = node.value
        module = self._dynamic_import(value) if isinstance(value, ast.Call) else None
        resolved = self.resolve(value.func) if isinstance(value, ast.Call) else None
        hit = lookup_call(resolved[1]) if resolved else None
        for target in node.targets:
            if not isinstance(target, ast.Name):
                continue
            self.bound.add(target.id)
            if module is not None:
                self.aliases[target.id] = module
            elif resolved and hit and hit[1] == MODEL_BUILDING:
                self.objects[scope, target.id] = resolved[1]
            else:
                self.objects[scope, target.id] = ""  # something else, in this scope

    def _built_by(self, scope: int, name: str) -> str:
        """What built the object ``name`` refers to in ``scope`` ("" when not a framework's)."""
        built_by = self.objects.get((scope, name))
        if built_by is None and scope:
            built_by = self.objects.get((0, name))  # a module-level object used in a function
        return built_by or ""

    def _call(self, u: int, scope: int, call: ast.Call) -> None:
        func = call.func
        resolved = self.resolve(func)
        if resolved is not None:
            hit = lookup_call(resolved[1])
            if hit is not None:
                spelled, qualified = resolved
                text = spelled + "()" if spelled == qualified else f"{spelled}() = {qualified}"
                self.add(u, call, hit[0], hit[1], hit[2], text, canonical(qualified))
                self._keras2_call(u, call, spelled, qualified)
                self._dataset(call, spelled, qualified)
                return
        module = self._dynamic_import(call)
        if module is not None:
            self._import_reason(u, call, module)
            return
        if isinstance(func, ast.Attribute) and func.attr in KERAS2_METHODS and self.imports_keras:
            self.add(u, call, KERAS2, KERAS2_API, 0.0,
                     f".{func.attr}(): Keras 3 removed it (use fit/evaluate/predict)", f"keras.Model.{func.attr}")
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            weight = MODEL_METHODS.get(func.attr)
            built_by = self._built_by(scope, func.value.id) if weight is not None else ""
            hit = lookup_call(built_by) if built_by else None
            if weight is not None and hit is not None:
                self.add(u, call, hit[0], MODEL_BUILDING, weight,
                         f"{func.value.id}.{func.attr}() on {canonical(built_by)}",
                         f"{canonical(built_by)}.{func.attr}")


    def _keras2_call(self, u: int, call: ast.Call, spelled: str, qualified: str) -> None:
        name = canonical(qualified)
        if self._keras2(u, call, qualified, f"{spelled}()"):
            return
        if name.startswith("keras.optimizers."):
            for keyword in call.keywords:
                if keyword.arg in KERAS2_OPTIMIZER_KEYWORDS:
                    self.add(u, call, KERAS2, KERAS2_API, 0.0,
                             (f"{spelled}({keyword.arg}=...): Keras 3 refuses {keyword.arg}= (the keras2 image takes it as "
                              "Keras 2 did; learning_rate= works in both)"),
                             name)
                    return

    def _dataset(self, call: ast.Call, spelled: str, qualified: str) -> None:
        found = dataset_of(qualified)
        if found is None:
            return
        kwargs = []
        for keyword in call.keywords:
            if keyword.arg is not None and isinstance(keyword.value, ast.Constant):
                kwargs.append((keyword.arg, keyword.value.value))
        self.datasets.append(DatasetCall(found[0], found[1], self.source.path, call.lineno, f"{spelled}()",
                                         tuple(kwargs)))


def datasets_in(source: ParsedSource) -> list[DatasetCall]:
    """The calls in one parsed source that download a dataset at run time (pure)."""
    walker = _FileEvidence(source)
    walker.run()
    return sorted(walker.datasets, key=attrgetter("line"))


def evidence_in(source: ParsedSource) -> list[Reason]:
    """Every piece of evidence in one parsed source (pure)."""
    return _FileEvidence(source).run()


def requirement_reasons(requirements: Iterable[Requirement]) -> list[Reason]:
    """The requirements that name a known framework, as (weak) evidence (pure)."""
    out = []
    for req in requirements:
        hit = REQUIREMENTS.get(req.name)
        if hit is not None:
            out.append(Reason(hit[0], REQUIREMENT, req.spec or req.name, req.file, req.line, hit[1],
                              req.name))
            if pinned_below_keras3(req.name, req.spec):
                out.append(Reason(KERAS2, KERAS2_API, f"{req.spec}: {PIN_BELOW_KERAS3}",
                                  req.file, req.line, 0.0, req.name))
    return out
