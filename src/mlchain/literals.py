"""Hyperparameters written as literals in training code: found, and rewritten on a copy.

Pure: sources in (relative path -> text), findings or new sources out. The finder reads the
keyword arguments people tune (``epochs=``, ``learning_rate=``, ``n_estimators=``...), the
arguments of Keras layers (``Dense(64)``, ``Conv2D(32, 3)``, ``Dropout(0.2)``) and optimizers
(``Adam(1e-3)``), and the module-level constants that flow into them (``EPOCHS = 1`` used as
``epochs=EPOCHS``). Each gets a stable name (``epochs``, ``dense_1.units``, ``conv2d_2.filters``)
so a later trial can set it again. Where the model is a ``Sequential([...])`` list, a
``model.add(...)`` stack or a functional chain (``x = Conv2D(...)(x)``), the number of its
convolution blocks and of its hidden dense blocks is a hyperparameter too (``conv_blocks``,
``dense_blocks``): the rewriter repeats the last block or drops blocks from the end.

The rewriter is lossless (libcst): comments and layout survive; only the literals and the
blocks it was asked to change differ, so the diff a user reads is the change to apply.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

Number = int | float

# Keyword arguments that are hyperparameters wherever they appear, and the kind they are
# searched as (``lr=`` is the older spelling of ``learning_rate=``).
KEYWORDS: dict[str, str] = {
    "epochs": "epochs", "batch_size": "batch_size", "learning_rate": "learning_rate", "lr": "learning_rate",
    "n_estimators": "n_estimators", "max_depth": "max_depth", "C": "C", "alpha": "alpha", "max_iter": "max_iter",
}
# Keras layers: (argument, its position, its kind) per class.
LAYER_ARGS: dict[str, tuple[tuple[str, int, str], ...]] = {
    "Dense": (("units", 0, "units"),),
    "Conv1D": (("filters", 0, "filters"), ("kernel_size", 1, "kernel_size")),
    "Conv2D": (("filters", 0, "filters"), ("kernel_size", 1, "kernel_size")),
    "Conv3D": (("filters", 0, "filters"), ("kernel_size", 1, "kernel_size")),
    "Dropout": (("rate", 0, "rate"),),
}
# The training loop's keywords (fit, a function's defaults); the others are an estimator's.
LOOP_KEYWORDS = frozenset({"epochs", "batch_size"})
OPTIMIZERS = frozenset({"Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Adadelta", "Adamax", "Nadam", "Ftrl"})
INT_KINDS = frozenset({"epochs", "batch_size", "n_estimators", "max_depth", "max_iter", "units", "filters",
                       "kernel_size", "conv_blocks", "dense_blocks"})
OUTPUT_ACTIVATIONS = frozenset({"softmax", "sigmoid"})
# Layer classes by their role in a block.
CONV = frozenset({"Conv1D", "Conv2D", "Conv3D", "SeparableConv2D", "DepthwiseConv2D"})
POOL = frozenset({"MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
                  "AveragePooling3D", "MaxPool2D", "AvgPool2D"})
FOLLOWERS = frozenset({"Dropout", "BatchNormalization", "Activation", "ReLU", "LeakyReLU", "SpatialDropout1D",
                       "SpatialDropout2D", "LayerNormalization", "GaussianNoise"})
# Arguments only the first layer of a model may carry (a repeated block drops them).
INPUT_ARGS = frozenset({"input_shape", "input_dim", "batch_input_shape"})


@dataclass(frozen=True)
class Literal:
    """One hyperparameter written as a literal, where it is written."""

    name: str            # stable: epochs, dense_1.units, conv2d_2.kernel_size, conv_blocks
    kind: str            # what it is searched as: epochs, units, filters, rate, learning_rate, conv_blocks...
    file: str            # relative to the repository
    line: int
    value: Number
    layer: str | None = None      # Dense, Conv2D... for a layer's argument
    constant: str | None = None   # the module constant it is written in (EPOCHS = 1)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "file": self.file, "line": self.line, "value": self.value,
                "layer": self.layer, "constant": self.constant}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Literal:
        return cls(name=str(d["name"]), kind=str(d["kind"]), file=str(d["file"]), line=int(d["line"]),
                   value=d["value"], layer=d.get("layer"), constant=d.get("constant"))


@dataclass(frozen=True)
class Found:
    """What the finder read in a repository's training code."""

    literals: tuple[Literal, ...] = ()
    uses_sdk_params: bool = False   # the code reads sdk.params(): the precise way wins

    def params(self) -> dict[str, Number]:
        return {lit.name: lit.value for lit in self.literals}

    def kinds(self) -> dict[str, str]:
        return {lit.name: lit.kind for lit in self.literals}

    def to_dict(self) -> dict[str, Any]:
        return {"literals": [lit.to_dict() for lit in self.literals], "uses_sdk_params": self.uses_sdk_params}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Found:
        return cls(literals=tuple(Literal.from_dict(x) for x in d.get("literals") or []),
                   uses_sdk_params=bool(d.get("uses_sdk_params")))


# --- reading the code ------------------------------------------------------------------

def callee(node: cst.BaseExpression) -> str | None:
    """The called name's last part: ``keras.layers.Dense`` -> Dense."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return node.attr.value
    return None


def number_of(node: cst.BaseExpression) -> Number | None:
    """A plain non-negative number literal (``3``, ``1e-3``), or a tuple of equal ints
    (``(3, 3)``, a square kernel), as a number; None for anything else."""
    if isinstance(node, cst.Integer):
        value = node.evaluated_value
        return value if isinstance(value, int) else None
    if isinstance(node, cst.Float):
        return float(node.evaluated_value)
    if isinstance(node, cst.Tuple) and node.elements:
        values = [number_of(e.value) for e in node.elements]
        if all(isinstance(v, int) for v in values) and len(set(values)) == 1:
            return values[0]
    return None


def _argument(call: cst.Call, keyword: str, position: int | None) -> cst.Arg | None:
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == keyword:
            return arg
    positional = [a for a in call.args if a.keyword is None and not a.star]
    if position is not None and position < len(positional):
        return positional[position]
    return None


def _string_keyword(call: cst.Call, keyword: str) -> str | None:
    arg = _argument(call, keyword, None)
    if arg is not None and isinstance(arg.value, cst.SimpleString):
        value = arg.value.evaluated_value
        return value if isinstance(value, str) else None
    return None


@dataclass
class _Site:
    """Where a literal is written in the tree being read (the node to replace)."""

    literal: Literal
    node: cst.BaseExpression


@dataclass
class _Stack:
    """A run of blocks in one container: a list's elements or a body's statements."""

    name: str
    container: cst.CSTNode
    blocks: list[list[int]]         # indices into the container's items
    lead_calls: list[cst.Call]      # the first layer of each block
    chain_var: str | None = None    # a functional chain's variable (x = Layer(...)(x))


@dataclass
class _Analysis:
    sites: list[_Site] = field(default_factory=list)
    stacks: list[_Stack] = field(default_factory=list)
    uses_sdk_params: bool = False


@dataclass
class _Naming:
    """Counters shared across the files of one repository, so names are unique and stable."""

    layers: Counter[str] = field(default_factory=Counter)
    keywords: Counter[str] = field(default_factory=Counter)
    stacks: Counter[str] = field(default_factory=Counter)
    claimed: set[str] = field(default_factory=set)

    def layer(self, cls: str) -> str:
        self.layers[cls] += 1
        return f"{cls.lower()}_{self.layers[cls]}"

    def keyword(self, kind: str) -> str:
        self.keywords[kind] += 1
        n = self.keywords[kind]
        return kind if n == 1 else f"{kind}_{n}"

    def stack(self, kind: str) -> str:
        self.stacks[kind] += 1
        n = self.stacks[kind]
        return kind if n == 1 else f"{kind}_{n}"


def _module_constants(module: cst.Module) -> dict[str, cst.BaseExpression]:
    """Top-level ``NAME = <number>`` (the last assignment wins, as at run time)."""
    constants: dict[str, cst.BaseExpression] = {}
    for stmt in module.body:
        if not isinstance(stmt, cst.SimpleStatementLine) or len(stmt.body) != 1:
            continue
        small = stmt.body[0]
        if isinstance(small, cst.Assign) and len(small.targets) == 1 and isinstance(small.targets[0].target, cst.Name):
            name, value = small.targets[0].target.value, small.value
        elif isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name) and small.value is not None:
            name, value = small.target.value, small.value
        else:
            continue
        if number_of(value) is not None:
            constants[name] = value
        else:
            constants.pop(name, None)
    return constants


class _Reader(cst.CSTVisitor):
    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, file: str, module: cst.Module, naming: _Naming, analysis: _Analysis) -> None:
        super().__init__()
        self.file = file
        self.naming = naming
        self.analysis = analysis
        self.constants = _module_constants(module)
        self.claimed_constants: dict[str, str] = {}
        self.output_dense: set[int] = set()   # id() of Dense calls found to be a model's output

    def _line(self, node: cst.CSTNode) -> int:
        return int(self.get_metadata(PositionProvider, node).start.line)

    def _site(self, name: str, kind: str, value_node: cst.BaseExpression, layer: str | None) -> None:
        constant = None
        node = value_node
        if isinstance(value_node, cst.Name) and value_node.value in self.constants:
            constant = value_node.value
            if constant in self.claimed_constants:
                return  # one constant, one hyperparameter: named after its first use
            node = self.constants[constant]
        value = number_of(node)
        if value is None or isinstance(value, bool):
            return
        if kind == "kernel_size" and isinstance(node, cst.Tuple) and len(node.elements) not in (1, 2, 3):
            return
        if constant is not None:
            self.claimed_constants[constant] = name
        self.analysis.sites.append(_Site(Literal(name=name, kind=kind, file=self.file, line=self._line(node),
                                                 value=value, layer=layer, constant=constant), node))

    def visit_Call(self, node: cst.Call) -> None:
        cls = callee(node.func)
        if cls is None:
            return
        if cls == "params" and isinstance(node.func, cst.Attribute) and callee(node.func.value) == "sdk":
            self.analysis.uses_sdk_params = True
        if cls in LAYER_ARGS:
            layer_name = self.naming.layer(cls)
            is_output = cls == "Dense" and (_string_keyword(node, "activation") in OUTPUT_ACTIVATIONS
                                            or id(node) in self.output_dense)
            for arg_name, position, kind in LAYER_ARGS[cls]:
                arg = _argument(node, arg_name, position)
                if arg is not None and not (is_output and kind == "units"):
                    self._site(f"{layer_name}.{arg_name}", kind, arg.value, cls)
            return
        if cls in OPTIMIZERS:
            arg = _argument(node, "learning_rate", 0) or _argument(node, "lr", None)
            if arg is not None:
                self._site(self.naming.keyword("learning_rate"), "learning_rate", arg.value, None)
            return
        for arg in node.args:
            if arg.keyword is not None:
                self._keyword(arg.keyword.value, arg.value, constructor=cls[:1].isupper())

    def visit_Param(self, node: cst.Param) -> None:
        """``def train(epochs=10, batch_size=32)``: a default is written where it is defined."""
        if node.default is not None:
            self._keyword(node.name.value, node.default, constructor=False)

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if (node.module is not None and _dotted(node.module) == "mlchain.sdk"
                and not isinstance(node.names, cst.ImportStar)
                and any(_dotted(a.name) == "params" for a in node.names)):
            self.analysis.uses_sdk_params = True

    def _keyword(self, keyword: str, value: cst.BaseExpression, *, constructor: bool) -> None:
        """A hyperparameter's keyword: the training loop's anywhere (``fit(epochs=3)``), an
        estimator's only where a class is built (``plt.plot(alpha=0.5)`` is no hyperparameter)."""
        kind = KEYWORDS.get(keyword)
        if kind is None or (kind not in LOOP_KEYWORDS and not constructor):
            return
        before = len(self.analysis.sites)
        self._site(self.naming.keyword(kind), kind, value, None)
        if len(self.analysis.sites) == before:
            self.naming.keywords[kind] -= 1  # nothing found there: the name stays free

    # stacks: found before the calls inside them are read (visit order is top-down)
    def visit_List(self, node: cst.List) -> None:
        self._stack_of([e.value for e in node.elements], node, chain=False)

    def visit_Module(self, node: cst.Module) -> None:
        self._stacks_in_body(node.body, node)

    def visit_IndentedBlock(self, node: cst.IndentedBlock) -> None:
        self._stacks_in_body(node.body, node)

    def _stacks_in_body(self, body: Iterable[cst.BaseStatement], container: cst.CSTNode) -> None:
        statements = list(body)
        items: list[cst.Call | None] = [_added_layer(s) for s in statements]
        if any(items):
            self._stack_of(items, container, chain=False)
        chain = [_chained_layer(s) for s in statements]
        if any(chain):
            self._stack_of([c[0] if c else None for c in chain], container, chain=True,
                           wiring=[c[1:] if c else None for c in chain])

    def _stack_of(self, items: list[Any], container: cst.CSTNode, *, chain: bool,
                  wiring: list[tuple[str, str | None] | None] | None = None) -> None:
        calls = [item if isinstance(item, cst.Call) else None for item in items]
        roles = [_role(c) for c in calls]
        if "conv" not in roles and "dense" not in roles:
            return
        dense_at = [i for i, r in enumerate(roles) if r == "dense"]
        if dense_at:
            last = calls[dense_at[-1]]
            assert last is not None
            self.output_dense.add(id(last))
            roles[dense_at[-1]] = "output"
        for kind, lead, followers in (("conv_blocks", "conv", {"pool", "follower"}),
                                      ("dense_blocks", "dense", {"follower"})):
            blocks = _blocks(roles, lead, followers)
            if not blocks:
                continue
            if chain and not _rewirable(blocks, wiring or []):
                continue
            lead_calls = [calls[b[0]] for b in blocks]
            first_wiring = (wiring or [])[blocks[0][0]] if chain else None
            self.analysis.stacks.append(_Stack(self.naming.stack(kind), container, blocks,
                                               [c for c in lead_calls if c is not None],
                                               first_wiring[0] if first_wiring else None))
            first = lead_calls[0]
            assert first is not None
            name = self.analysis.stacks[-1].name
            self.analysis.sites.append(_Site(Literal(name=name, kind=kind, file=self.file, line=self._line(first),
                                                     value=len(blocks), layer=callee(first.func)), first))


def _role(call: cst.Call | None) -> str | None:
    if call is None:
        return None
    cls = callee(call.func)
    if cls in CONV:
        return "conv"
    if cls in POOL:
        return "pool"
    if cls in FOLLOWERS:
        return "follower"
    if cls == "Dense":
        return "dense"
    return "other"


def _blocks(roles: list[str | None], lead: str, followers: set[str]) -> list[list[int]]:
    """The first contiguous run of blocks: each a ``lead`` item and the followers after it."""
    i = 0
    while i < len(roles) and roles[i] != lead:
        i += 1
    blocks: list[list[int]] = []
    while i < len(roles) and roles[i] == lead:
        block = [i]
        i += 1
        while i < len(roles) and roles[i] in followers:
            block.append(i)
            i += 1
        blocks.append(block)
    return blocks


def _added_layer(stmt: cst.BaseStatement) -> cst.Call | None:
    """The layer of ``model.add(Layer(...))``."""
    if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1 and isinstance(stmt.body[0], cst.Expr):
        call = stmt.body[0].value
        if (isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute) and call.func.attr.value == "add"
                and len(call.args) == 1 and isinstance(call.args[0].value, cst.Call)):
            return call.args[0].value
    return None


def _chained_layer(stmt: cst.BaseStatement) -> tuple[cst.Call, str, str | None] | None:
    """``x = Layer(...)(y)``: the layer, the name assigned and the name consumed."""
    if not (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1
            and isinstance(stmt.body[0], cst.Assign)):
        return None
    assign = stmt.body[0]
    if len(assign.targets) != 1 or not isinstance(assign.targets[0].target, cst.Name):
        return None
    outer = assign.value
    if not (isinstance(outer, cst.Call) and isinstance(outer.func, cst.Call)):
        return None
    consumed = outer.args[0].value if len(outer.args) == 1 else None
    return outer.func, assign.targets[0].target.value, consumed.value if isinstance(consumed, cst.Name) else None


def _rewirable(blocks: list[list[int]], wiring: list[tuple[str, str | None] | None]) -> bool:
    """A functional chain's blocks can be repeated or dropped when every block after the first
    reads and writes one variable (``x = Layer(...)(x)``) and the first block writes it too."""
    var = None
    for b, block in enumerate(blocks):
        for k, index in enumerate(block):
            wired = wiring[index]
            if wired is None:
                return False
            target, consumed = wired
            var = var or target
            if target != var or ((b, k) != (0, 0) and consumed != var):
                return False
    return var is not None


def _parse(file: str, text: str) -> MetadataWrapper | None:
    try:
        return MetadataWrapper(cst.parse_module(text))
    except (cst.ParserSyntaxError, RecursionError, ValueError):
        return None  # not Python this parser reads: nothing found there


def _analyze(sources: Mapping[str, str]) -> dict[str, tuple[MetadataWrapper, _Analysis]]:
    naming = _Naming()
    out: dict[str, tuple[MetadataWrapper, _Analysis]] = {}
    for file, text in sources.items():
        wrapper = _parse(file, text)
        if wrapper is None:
            continue
        analysis = _Analysis()
        wrapper.visit(_Reader(file, wrapper.module, naming, analysis))
        out[file] = (wrapper, analysis)
    return out


def find(sources: Mapping[str, str]) -> Found:
    """The hyperparameter literals of ``sources`` (the entry first, then the repository modules
    it imports, in that order: the order names are counted in)."""
    literals: list[Literal] = []
    uses_params = False
    for _wrapper, analysis in _analyze(sources).values():
        literals += sorted((s.literal for s in analysis.sites), key=lambda lit: lit.line)
        uses_params = uses_params or analysis.uses_sdk_params
    return Found(tuple(literals), uses_params)


def imported_modules(text: str) -> list[str]:
    """Dotted names of the modules ``text`` imports (``import a.b``, ``from a.b import c`` gives
    a.b and a.b.c, since c may be a module); relative imports keep their leading dots."""
    wrapper = _parse("", text)
    if wrapper is None:
        return []
    names: list[str] = []

    class Imports(cst.CSTVisitor):
        def visit_Import(self, node: cst.Import) -> None:
            names.extend(_dotted(a.name) for a in node.names)

        def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
            base = "." * len(node.relative) + (_dotted(node.module) if node.module else "")
            names.append(base)
            if not isinstance(node.names, cst.ImportStar):
                sep = "" if base.endswith(".") or not base else "."
                names.extend(f"{base}{sep}{_dotted(a.name)}" for a in node.names)

    wrapper.module.visit(Imports())
    return [n for n in dict.fromkeys(names) if n.strip(".")]


def _dotted(node: cst.BaseExpression) -> str:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{_dotted(node.value)}.{node.attr.value}"
    return ""


# --- rewriting a copy ------------------------------------------------------------------

def format_value(kind: str, value: Any, old: cst.BaseExpression) -> cst.BaseExpression:
    number: Number = round(float(value)) if kind in INT_KINDS else float(value)
    code = repr(number)
    if isinstance(old, cst.Tuple):
        return old.with_changes(elements=[e.with_changes(value=cst.Integer(code)) for e in old.elements])
    return cst.Integer(code) if isinstance(number, int) else cst.Float(code)


class _Writer(cst.CSTTransformer):
    def __init__(self, analysis: _Analysis, values: Mapping[str, Any]) -> None:
        super().__init__()
        self.replace = {id(s.node): s for s in analysis.sites
                        if s.literal.name in values and s.literal.kind not in ("conv_blocks", "dense_blocks")}
        self.values = values
        self.stacks: dict[int, list[_Stack]] = {}
        for stack in analysis.stacks:
            if stack.name in values and int(values[stack.name]) != len(stack.blocks):
                self.stacks.setdefault(id(stack.container), []).append(stack)

    def on_leave(self, original_node: cst.CSTNode, updated_node: cst.CSTNode) -> Any:
        site = self.replace.get(id(original_node))
        if site is not None and isinstance(original_node, cst.BaseExpression):
            return format_value(site.literal.kind, self.values[site.literal.name], original_node)
        stacks = self.stacks.get(id(original_node))
        if stacks:
            if isinstance(updated_node, cst.List):
                return updated_node.with_changes(elements=_comma_separated(
                    self._restack(list(updated_node.elements), stacks)))
            if isinstance(updated_node, (cst.Module, cst.IndentedBlock)):
                return updated_node.with_changes(body=self._restack(list(updated_node.body), stacks))
        return super().on_leave(original_node, updated_node)

    def _restack(self, items: list[Any], stacks: list[_Stack]) -> list[Any]:
        # The later stack first: its indices are past the earlier one's, so they stay valid.
        for stack in sorted(stacks, key=lambda s: s.blocks[0][0], reverse=True):
            wanted = max(1, int(self.values[stack.name]))
            start, end = stack.blocks[0][0], stack.blocks[-1][-1] + 1
            blocks = [[items[i] for i in block] for block in stack.blocks]
            if wanted < len(blocks):
                blocks = blocks[:wanted]
            else:
                blocks += [[_without_input_args(item, stack.chain_var) for item in blocks[-1]]
                           for _ in range(wanted - len(blocks))]
            items = items[:start] + [item for block in blocks for item in block] + items[end:]
        return items


def _comma_separated(elements: list[cst.BaseElement]) -> list[cst.BaseElement]:
    """Every element but the last keeps (or gets) a comma; the last keeps what it had."""
    out = []
    for i, element in enumerate(elements):
        if i < len(elements) - 1 and not isinstance(element.comma, cst.Comma):
            element = element.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
        out.append(element)
    return out


def _without_input_args(item: cst.CSTNode, chain_var: str | None) -> cst.CSTNode:
    """A repeated block's copy: no input shape (only a model's first layer takes one), no
    comments above a copied statement, and in a functional chain it reads the chain's variable
    (the first block may read the model's input)."""
    class Strip(cst.CSTTransformer):
        def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.Call:
            kept = [a for a in updated_node.args if not (a.keyword is not None and a.keyword.value in INPUT_ARGS)]
            if len(kept) == len(updated_node.args):
                return updated_node
            if kept:
                kept[-1] = kept[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
            return updated_node.with_changes(args=kept)

    copied = item.visit(Strip())
    if isinstance(copied, (cst.SimpleStatementLine, cst.BaseCompoundStatement)):
        copied = copied.with_changes(leading_lines=[])
    if chain_var is not None and isinstance(copied, cst.SimpleStatementLine):
        assign = copied.body[0]
        if isinstance(assign, cst.Assign) and isinstance(assign.value, cst.Call) and len(assign.value.args) == 1:
            arg = assign.value.args[0].with_changes(value=cst.Name(chain_var))
            copied = copied.with_changes(body=[assign.with_changes(value=assign.value.with_changes(args=[arg]))])
    assert isinstance(copied, cst.CSTNode)
    return copied


def rewrite(sources: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, str]:
    """The files of ``sources`` whose literals (by name) or block counts change with ``values``,
    rewritten; files with nothing to change are left out."""
    changed: dict[str, str] = {}
    for file, (wrapper, analysis) in _analyze(sources).items():
        names = {s.literal.name: s.literal.value for s in analysis.sites}
        wanted = {k: v for k, v in values.items() if k in names and v != names[k]}
        if not wanted:
            continue
        new = wrapper.module.visit(_Writer(analysis, wanted)).code
        if new != sources[file]:
            changed[file] = new
    return changed


def unified_diff(sources: Mapping[str, str], rewritten: Mapping[str, str]) -> str:
    """``git diff``-style text of the rewritten files against the pushed ones."""
    parts: list[str] = []
    for file in sorted(rewritten):
        parts.extend(difflib.unified_diff(sources[file].splitlines(keepends=True),
                                          rewritten[file].splitlines(keepends=True),
                                          fromfile=f"a/{file}", tofile=f"b/{file}"))
    return "".join(p if p.endswith("\n") else p + "\n" for p in parts)


def fmt_number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3g}"
    return str(int(value)) if isinstance(value, int) or value.is_integer() else str(value)


def changes(found: Found, values: Mapping[str, Any]) -> list[str]:
    """The changes in short form, one per literal: ``Dense(8) -> Dense(64) at train.py:14``,
    ``epochs 1 -> 12 at train.py:5``."""
    lines = []
    for lit in found.literals:
        if lit.name not in values or values[lit.name] == lit.value:
            continue
        old, new = fmt_number(lit.value), fmt_number(values[lit.name])
        where = f"{lit.file}:{lit.line}"
        if lit.kind in ("conv_blocks", "dense_blocks"):
            text = f"{lit.kind.replace('_', ' ')} {old} -> {new}"
        elif lit.layer is not None and lit.kind in ("units", "filters", "rate"):
            text = f"{lit.layer}({old}) -> {lit.layer}({new})"
        elif lit.layer is not None:
            text = f"{lit.layer} {lit.name.split('.')[-1]} {old} -> {new}"
        else:
            text = f"{lit.constant or lit.name} {old} -> {new}"
        lines.append(f"{text} at {where}")
    return lines
