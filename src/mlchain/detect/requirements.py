"""Requirement files (pure: text in, requirements out): requirements*.txt, pyproject.toml,
Pipfile, environment.yml and setup.py's literal ``install_requires``. A parser raises
ValueError (TOMLDecodeError is one) for a file it cannot read; the scan reports it."""

from __future__ import annotations

import ast
import re
import tomllib
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Requirement:
    """One dependency named in a requirement file (``name`` PEP 503 normalised)."""

    name: str
    file: str
    line: int
    spec: str = ""


_DIST_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalise_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _line_of(text: str, needle: str) -> int:
    index = text.find(needle)
    return text.count("\n", 0, index) + 1 if index >= 0 else 0


def _from_specs(specs: Iterable[Any], file: str, text: str) -> list[Requirement]:
    out = []
    for spec in specs:
        if not isinstance(spec, str):
            continue
        spec = spec.split("::")[-1]  # conda channel::name
        match = _DIST_NAME.match(spec)
        if match:
            out.append(Requirement(normalise_dist(match.group(1)), file, _line_of(text, spec), spec.strip()))
    return out


def parse_requirements_txt(file: str, text: str) -> list[Requirement]:
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.split(r"(?:^|\s)#", raw, maxsplit=1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = _DIST_NAME.match(line)
        if match:
            out.append(Requirement(normalise_dist(match.group(1)), file, number, line))
    return out


# yaml is imported by the parser that needs it: most repositories have no environment.yml.

def parse_pyproject(file: str, text: str) -> list[Requirement]:
    data = tomllib.loads(text)
    project = data.get("project") or {}
    specs: list[Any] = list(project.get("dependencies") or [])
    for group in (project.get("optional-dependencies") or {}).values():
        specs.extend(group or [])
    for group in (data.get("dependency-groups") or {}).values():
        specs.extend(group or [])
    poetry = (data.get("tool") or {}).get("poetry") or {}
    specs.extend(name for name in (poetry.get("dependencies") or {}) if name != "python")
    return _from_specs(specs, file, text)


def parse_pipfile(file: str, text: str) -> list[Requirement]:
    data = tomllib.loads(text)
    names = [*(data.get("packages") or {}), *(data.get("dev-packages") or {})]
    return _from_specs(names, file, text)


def parse_environment_yml(file: str, text: str) -> list[Requirement]:
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from exc
    specs: list[Any] = []
    for dep in (data.get("dependencies") or []) if isinstance(data, dict) else []:
        if isinstance(dep, dict):
            specs.extend(dep.get("pip") or [])
        else:
            specs.append(dep)
    return [replace(r, name="torch") if r.name == "pytorch" else r for r in _from_specs(specs, file, text)]


def parse_setup_py(file: str, text: str) -> list[Requirement]:
    """``install_requires=[...]`` of a ``setup(...)`` call, when it is a literal list."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(text, filename=file)
    except (SyntaxError, ValueError, RecursionError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires" \
                and isinstance(node.value, ast.List | ast.Tuple):
            specs = [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
            out.extend(_from_specs(specs, file, text))
    return out


RequirementParser = Callable[[str, str], list[Requirement]]


def requirement_parser(name: str, parent: str) -> RequirementParser | None:
    """The parser for a requirement file's name (and its folder's name), or None."""
    if name == "pyproject.toml":
        return parse_pyproject
    if name == "Pipfile":
        return parse_pipfile
    if name == "setup.py":
        return parse_setup_py
    if name.endswith((".yml", ".yaml")) and name.startswith("environment"):
        return parse_environment_yml
    if name.endswith(".txt") and (name.startswith("requirements") or parent == "requirements"):
        return parse_requirements_txt
    return None
