"""``mlchain.yaml``, a repository's optional configuration: validated here, every problem
listed at once, each with its key.

The file comes from a push: it is bounded before YAML sees it (its size, then the number of
nodes its aliases expand to), and the paths it names must stay inside the repository. The
value rules here (budget, threshold) are also the rules of the operator's flags and settings
(mlchain.config uses the same types), so both get the same messages.

The models build their validators when first used (``defer_build``), not when this module
is imported: a command that never validates a file does not pay for it."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mlchain import gate, searchplan
from mlchain.contract import CONFIG_FILE, DEFAULT_METRIC, Framework
from mlchain.errors import ConfigError, invalid_yaml, not_a_mapping


class ParamSpec(BaseModel):
    """One dimension of the search space (mirrors Optuna's distributions)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty 'choices' list")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"{self.type} needs 'low' and 'high'")
            if self.low > self.high:
                raise ValueError(f"low ({self.low}) is greater than high ({self.high})")
            if self.log and self.low <= 0:
                raise ValueError("log scale needs low > 0")
        return self


MAX_FILE_BYTES = 256 * 1024      # a real mlchain.yaml is a few hundred bytes
MAX_NODES = 100_000              # scalars, lists and mappings after alias expansion
MAX_DEPTH = 100                  # nesting of lists and mappings

# The budget and gate values, as mlchain.yaml and the operator's settings both take them.
TrialCount = Annotated[int, Field(ge=1, le=1000)]
Minutes = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Patience = Annotated[int, Field(ge=1)]
Threshold = Annotated[float, Field(allow_inf_nan=False)]

# Metrics that are fractions (a threshold outside 0..1 can never pass, or always passes).
FRACTION_METRIC = re.compile(r"(?:^|_)(?:acc|accuracy|precision|recall|f1|auc|roc_auc|pr_auc|jaccard|iou|dice)"
                             r"(?:$|_)", re.IGNORECASE)


def threshold_problem(threshold: float, metric: str) -> str | None:
    """Why ``threshold`` cannot gate ``metric``, or None."""
    if not math.isfinite(threshold):
        return f"{threshold} is not a finite number"
    if FRACTION_METRIC.search(metric) and not 0.0 <= threshold <= 1.0:
        return (f"{threshold:g} is outside 0..1, the range of {metric}: it would never pass (above 1)"
                " or always pass (below 0)")
    return None


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    max_trials: TrialCount = gate.DEFAULT_MAX_TRIALS
    max_minutes: Minutes = gate.DEFAULT_MAX_MINUTES
    patience: Patience = gate.DEFAULT_PATIENCE


class Notify(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    recipients: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _emails(self) -> Notify:
        bad = [r for r in self.recipients if "@" not in r]
        if bad:
            raise ValueError(f"not email addresses: {', '.join(bad)}")
        return self


class SearchStrategy(BaseModel):
    """How the search samples and prunes: ``search: {sampler: tpe|random, pruner: halving|hyperband|none}``
    in mlchain.yaml (beside the space's params), or the --sampler/--pruner flags. No pruner
    named: successive halving for TPE, none for plain random search."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    sampler: searchplan.SamplerName = searchplan.DEFAULT_SAMPLER
    pruner: searchplan.PrunerName | None = None

    def resolved(self) -> searchplan.Strategy:
        return searchplan.strategy(self.sampler, self.pruner)


STRATEGY_KEYS = {"sampler": searchplan.SAMPLERS, "pruner": searchplan.PRUNERS}


def _split_strategy(raw: Any) -> Any:
    """``search:`` holds the space's params and, as plain words, the strategy: move the words to
    ``strategy`` (a param named sampler or pruner is a mapping, and stays a param)."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("search"), Mapping):
        return raw
    search = dict(raw["search"])
    words = {k: search.pop(k) for k in STRATEGY_KEYS if k in search and not isinstance(search[k], Mapping)}
    if not words:
        return raw
    for key, value in words.items():
        if value not in STRATEGY_KEYS[key]:
            raise ValueError(f"search.{key} must be one of {', '.join(STRATEGY_KEYS[key])}, got {value!r}")
    strategy = dict(raw.get("strategy") or {}) if isinstance(raw.get("strategy"), Mapping) else {}
    return {**raw, "search": search, "strategy": {**strategy, **words}}


class RepoConfig(BaseModel):
    """A repository's ``mlchain.yaml``."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    entry: str | None = None  # None: job2 finds the file that trains (mlchain.detect.entry)
    framework: Framework | None = None
    metric: str = DEFAULT_METRIC
    direction: gate.Direction = gate.DEFAULT_DIRECTION
    threshold: Threshold = gate.DEFAULT_THRESHOLD
    budget: Budget = Field(default_factory=Budget)
    params: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, ParamSpec] = Field(default_factory=dict)
    strategy: SearchStrategy = Field(default_factory=SearchStrategy)  # search: {sampler, pruner}
    notify: Notify = Field(default_factory=Notify)
    data: str | None = None  # folder (relative) whose contents are hashed into the run's tags
    # A trusted repository may fetch its own data: its training container gets a network.
    network: bool = False

    @model_validator(mode="before")
    @classmethod
    def _strategy_from_search(cls, raw: Any) -> Any:
        return _split_strategy(raw)

    @field_validator("entry")
    @classmethod
    def _entry_relative(cls, entry: str | None) -> str | None:
        if entry is not None and not is_relative_inside(entry):
            raise ValueError("entry must be a path inside the repository")
        return entry

    @field_validator("data")
    @classmethod
    def _data_relative(cls, data: str | None) -> str | None:
        if data is not None and not is_relative_inside(data):
            raise ValueError(f"data: must be a folder inside the repository (a relative path without '..'),"
                             f" got {data!r}")
        return data

    @field_validator("threshold")
    @classmethod
    def _threshold_fits_metric(cls, threshold: float, info: ValidationInfo) -> float:
        problem = threshold_problem(threshold, info.data.get("metric", DEFAULT_METRIC))
        if problem is not None:
            raise ValueError(problem)
        return threshold


def is_relative_inside(path: str) -> bool:
    """A relative path that does not climb out (what it resolves to is checked on disk)."""
    return bool(path) and not Path(path).is_absolute() and ".." not in Path(path).parts and "\x00" not in path


def _problems(exc: ValidationError) -> list[str]:
    return [f"  {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()]


def _validated(raw: Mapping[str, Any], source: str) -> RepoConfig:
    try:
        return RepoConfig.model_validate(raw)
    except ValidationError as exc:
        lines = _problems(exc)
        raise ConfigError(f"{source} has {len(lines)} problem(s):\n" + "\n".join(lines),
                          hint="see README.md, section 'The training contract'") from exc


def with_overrides(cfg: RepoConfig, update: Mapping[str, Any], source: str) -> RepoConfig:
    """``cfg`` with the operator's overrides applied and validated again (a threshold from a
    flag must fit the repository's metric as one in the file must)."""
    return _validated({**cfg.model_dump(), **update}, source)


def _expanded_size(root: yaml.Node) -> int:
    """Nodes the document holds once its aliases are expanded (a billion-laughs file: ~10^9),
    computed without expanding: each node's size is counted once and reused. Raises
    ValueError past MAX_NODES or MAX_DEPTH, and on an alias cycle."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # Iterative post-order walk: a deep document must not exhaust Python's stack here.
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            children = _children(node)
            total = 1 + sum(sizes[id(c)] for c in children)
            if total > MAX_NODES:
                raise ValueError(f"it expands to more than {MAX_NODES:,} values (aliases repeating aliases?)")
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise ValueError("an alias refers to a node that contains it")
        if depth > MAX_DEPTH:
            raise ValueError(f"it nests deeper than {MAX_DEPTH} levels")
        on_path.add(key)
        stack.append((node, depth, True))
        for child in _children(node):  # a child on the path is caught when it is popped, above
            if id(child) not in sizes:
                stack.append((child, depth + 1, False))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_bounded(text: str) -> Any:
    """YAML text to Python values, refusing documents that expand past the bounds."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_repo_config(text: str, source: str = CONFIG_FILE) -> RepoConfig:
    """Validate ``mlchain.yaml`` text; raise ConfigError listing every problem with its key."""
    if len(text) > MAX_FILE_BYTES:
        raise too_large(source, len(text.encode("utf-8", "surrogatepass")))
    try:
        raw = _load_bounded(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise invalid_yaml(source, exc) from exc
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{source} is refused: {exc or 'it nests too deeply'}",
                          hint=f"keep mlchain.yaml plain: under {MAX_NODES:,} values, {MAX_DEPTH} levels deep")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise not_a_mapping(source, type(raw).__name__)
    return _validated(raw, source)


def too_large(source: str, size: int) -> ConfigError:
    return ConfigError(f"{source} is {size:,} bytes; mlchain reads at most {MAX_FILE_BYTES:,}",
                       hint="mlchain.yaml holds settings, not data: move data into the data: folder")


def inside(repo: Path, relative: str, what: str) -> Path:
    """``repo/relative`` with symlinks resolved, when that stays inside ``repo``; else ConfigError."""
    root = repo.resolve()
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise ConfigError(f"{what} {relative!r} resolves to {target}, outside the repository",
                          hint=f"point {what} at a folder inside the repository (no symlink out of it)")
    return target


def data_dir(repo: Path, cfg: RepoConfig) -> Path | None:
    """The folder ``data:`` names, inside ``repo`` and existing; None when ``data:`` is unset."""
    if cfg.data is None:
        return None
    target = inside(repo, cfg.data, "data:")
    if not target.is_dir():
        raise ConfigError(f"data: {cfg.data!r} is not a folder in the repository",
                          hint="commit the folder (with its files) or remove data: from mlchain.yaml")
    return target


def load_repo_config(repo: Path) -> RepoConfig:
    """Read and validate ``repo``'s mlchain.yaml (defaults when there is none); the folder
    ``data:`` names is checked too, so a bad path fails here, before any training."""
    path = repo / CONFIG_FILE
    if not path.is_file():
        return RepoConfig()
    inside(repo, CONFIG_FILE, CONFIG_FILE)
    with open(path, "rb") as fh:
        raw = fh.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise too_large(str(path), path.stat().st_size)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})",
                          hint="save mlchain.yaml as UTF-8") from None
    cfg = parse_repo_config(text, source=str(path))
    data_dir(repo, cfg)
    return cfg
