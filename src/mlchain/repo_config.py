"""``mlchain.yaml``, a repository's optional configuration: validated here, every problem
listed at once, each with its key.

The models build their validators when first used (``defer_build``), not when this module
is imported: a command that never validates a file does not pay for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlchain.contract import CONFIG_FILE, Framework
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


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    max_trials: int = Field(default=6, ge=1, le=1000)
    max_minutes: float = Field(default=60.0, gt=0)
    patience: int = Field(default=3, ge=1)


class Notify(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    recipients: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _emails(self) -> Notify:
        bad = [r for r in self.recipients if "@" not in r]
        if bad:
            raise ValueError(f"not email addresses: {', '.join(bad)}")
        return self


class RepoConfig(BaseModel):
    """A repository's ``mlchain.yaml``."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    entry: str = "train.py"
    framework: Framework | None = None
    metric: str = "accuracy"
    direction: Literal["maximize", "minimize"] = "maximize"
    threshold: float = 0.80
    budget: Budget = Field(default_factory=Budget)
    params: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, ParamSpec] = Field(default_factory=dict)
    notify: Notify = Field(default_factory=Notify)
    data: str | None = None  # folder (relative) whose contents are hashed into the run's tags

    @model_validator(mode="after")
    def _entry_relative(self) -> RepoConfig:
        if Path(self.entry).is_absolute() or ".." in Path(self.entry).parts:
            raise ValueError("entry must be a path inside the repository")
        return self


def parse_repo_config(text: str, source: str = CONFIG_FILE) -> RepoConfig:
    """Validate ``mlchain.yaml`` text; raise ConfigError listing every problem with its key."""
    try:
        raw = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise invalid_yaml(source, exc) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise not_a_mapping(source, type(raw).__name__)
    try:
        return RepoConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  {key}: {err['msg']}")
        raise ConfigError(f"{source} has {len(lines)} problem(s):\n" + "\n".join(lines),
                          hint="see README.md, section 'The training contract'") from exc


def load_repo_config(repo: Path) -> RepoConfig:
    path = repo / CONFIG_FILE
    if not path.is_file():
        return RepoConfig()
    return parse_repo_config(path.read_text(encoding="utf-8"), source=str(path))
