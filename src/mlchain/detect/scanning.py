"""Scanning (the I/O edge of the classifier): walk a repository, read its Python files,
notebooks and requirement files, read ``framework:`` from its mlchain.yaml, and hand what
it found to the decision.

Every ``.py`` and ``.ipynb`` file is read. One whose bytes name no framework module at
all is not parsed: it cannot import one, so it holds no evidence. Every other file is
parsed whole, so a syntax error in it is reported wherever it is. Each tree is reduced to
its evidence as soon as it is parsed, so a large repository never holds all its trees.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mlchain.contract import CONFIG_FILE, FRAMEWORKS
from mlchain.detect.decision import Classification, leading_framework, weigh
from mlchain.detect.entry import EntryChoice, choose_entry, named_entry, no_entry
from mlchain.detect.evidence import Reason, evidence_in, requirement_reasons
from mlchain.detect.parsing import ParsedSource, SkippedFile, parse_file
from mlchain.detect.requirements import Requirement, RequirementParser, requirement_parser
from mlchain.detect.rules import REQUIREMENT, mentions_framework
from mlchain.errors import ConfigError, invalid_yaml, not_a_mapping

SKIP_DIRS = frozenset({
    ".git", ".hg", ".svn", ".venv", "venv", "__pycache__", "node_modules", "site-packages",
    "build", "dist", ".tox", ".nox", ".eggs", ".mypy_cache", ".pytest_cache", ".ruff_cache",
    ".ipynb_checkpoints",
})
MAX_FILE_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class RepoScan:
    """What :func:`scan_repo` read: parsed sources, requirements and what it skipped."""

    sources: tuple[ParsedSource, ...]
    requirements: tuple[Requirement, ...]
    skipped: tuple[SkippedFile, ...]
    files_scanned: int  # Python files and notebooks found and read
    files_parsed: int  # of those, parsed (the others mention no framework module at all)


@dataclass
class _Walk:
    code: list[tuple[str, str]] = field(default_factory=list)  # (relative, absolute)
    requirement_files: list[tuple[str, str, RequirementParser]] = field(default_factory=list)


def _walk(root: str) -> _Walk:
    found = _Walk()
    stack = [(root, "")]
    while stack:
        folder, rel = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        if rel and any(e.name == "pyvenv.cfg" for e in entries):
            continue  # a virtualenv, whatever its name
        parent = rel.rstrip("/").rpartition("/")[2]
        for entry in entries:
            name = entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if name not in SKIP_DIRS and not name.startswith(".") and not name.endswith(".egg-info"):
                        stack.append((entry.path, f"{rel}{name}/"))
                    continue
                if not entry.is_file():
                    continue
            except OSError:
                continue
            if name.endswith((".py", ".ipynb")):
                found.code.append((rel + name, entry.path))
            parser = requirement_parser(name, parent)
            if parser is not None:
                found.requirement_files.append((rel + name, entry.path, parser))
    found.code.sort()
    found.requirement_files.sort(key=lambda item: item[0])
    return found


def _read_code(rel: str, absolute: str) -> tuple[bytes | None, SkippedFile | None]:
    try:
        with open(absolute, "rb") as file:
            if os.fstat(file.fileno()).st_size > MAX_FILE_BYTES:
                return None, SkippedFile(rel, f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
            return file.read(), None
    except OSError as exc:
        return None, SkippedFile(rel, f"unreadable: {exc.strerror or exc}")


class RepoScanner:
    """Walk a repository once and stream its parsed sources (:meth:`sources`);
    ``skipped``, ``requirements`` and the counts are complete once the stream has ended."""

    def __init__(self, path: Path | str) -> None:
        self.root = os.fspath(path)
        self.skipped: list[SkippedFile] = []
        self.requirements: list[Requirement] = []
        self.files_scanned = 0
        self.files_parsed = 0

    def sources(self) -> Iterator[ParsedSource]:
        """Parsed sources one by one, in path order (trees can be freed as they are used)."""
        walked = _walk(self.root)
        self.files_scanned = len(walked.code)
        self._read_requirements(walked.requirement_files)
        for rel, absolute in walked.code:
            data, problem = _read_code(rel, absolute)
            if problem is not None:
                self.skipped.append(problem)
            if data is None or not mentions_framework(data):
                continue  # nothing in it can import a framework: no evidence to find
            self.files_parsed += 1
            source, bad = parse_file(rel, data)
            self.skipped.extend(bad)
            if source is not None:
                yield source

    def evidence(self) -> list[Reason]:
        """The evidence of every source, in path order, each tree dropped once it is reduced."""
        return [reason for source in self.sources() for reason in evidence_in(source)]

    def _read_requirements(self, files: list[tuple[str, str, RequirementParser]]) -> None:
        for rel, absolute, parser in files:
            try:
                text = Path(absolute).read_bytes().decode("utf-8", "replace")
                self.requirements.extend(parser(rel, text))
            except (OSError, ValueError, AttributeError, TypeError) as exc:  # TOMLDecodeError is a ValueError
                # A broken requirement file is weak evidence lost, not a reason to fail.
                self.skipped.append(SkippedFile(rel, f"unreadable requirement file: {exc}"))


def scan_repo(path: Path | str) -> RepoScan:
    """Walk ``path`` (skipping .git, virtualenvs, build output ...), read and parse what matters."""
    scanner = RepoScanner(path)
    sources = tuple(scanner.sources())
    return RepoScan(sources, tuple(scanner.requirements), tuple(scanner.skipped),
                    scanner.files_scanned, scanner.files_parsed)


def read_override(repo: Path) -> tuple[str | None, int]:
    """``framework:`` in the repository's mlchain.yaml and its line: (None, 0) when unset.

    Only the key the classifier uses is read. The whole file is validated where all of it
    is used (job1, ``mlchain train``), before they classify."""
    import yaml

    path = repo / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, 0
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", hint=f"make {CONFIG_FILE} a readable UTF-8 file") from exc
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise invalid_yaml(str(path), exc) from exc
    if node is None:
        return None, 0
    if not isinstance(node, yaml.MappingNode):
        raise not_a_mapping(str(path), node.tag.rpartition(":")[2])
    for key, value in node.value:
        if getattr(key, "value", None) != "framework":
            continue
        if isinstance(value, yaml.ScalarNode) and value.tag.endswith(":null"):
            return None, 0
        if not isinstance(value, yaml.ScalarNode) or not value.tag.endswith(":str"):
            raise ConfigError(f"framework: in {path} must be one of {', '.join(FRAMEWORKS)}",
                              hint=f"set framework: to one of {', '.join(FRAMEWORKS)}, or remove it")
        return str(value.value), int(key.start_mark.line) + 1
    return None, 0


def classify_repo(path: Path | str) -> Classification:
    """Scan ``path`` and decide; ``framework:`` in its mlchain.yaml overrides the code.

    The same decision as :func:`decide` over :func:`scan_repo`'s result. Raises ConfigError
    when mlchain.yaml is not YAML or its ``framework:`` is not supported, ClassifyError when
    no supported framework is found (the message names what was found and how to fix it).
    """
    repo = Path(path)
    override, override_line = read_override(repo)
    scanner = RepoScanner(repo)
    reasons = scanner.evidence()
    reasons.extend(requirement_reasons(scanner.requirements))
    return weigh(reasons, override, override_line=override_line, skipped=scanner.skipped,
                 files_scanned=scanner.files_scanned, files_parsed=scanner.files_parsed)


def classify_entry(path: Path | str, entry: str | None) -> tuple[EntryChoice, Classification]:
    """The entry (``entry`` when mlchain.yaml names one, else found: :mod:`mlchain.detect.entry`)
    and the framework decided from it and the repository modules it imports; the whole
    repository decides when those hold no framework evidence. ``framework:`` in mlchain.yaml
    overrides the code, as in :func:`classify_repo`.

    Every Python file and notebook is parsed here (an entry without framework imports may
    call a module that has them). Raises ClassifyError as classify_repo does, ContractError
    when no file trains (naming what was found) or when several do and none is preferred."""
    repo = Path(path)
    override, override_line = read_override(repo)
    scanner = RepoScanner(repo)
    walked = _walk(scanner.root)
    scanner._read_requirements(walked.requirement_files)
    sources: list[ParsedSource] = []
    by_file: dict[str, list[Reason]] = {}
    parsed = 0
    for rel, absolute in walked.code:
        data, problem = _read_code(rel, absolute)
        if problem is not None:
            scanner.skipped.append(problem)
        if data is None:
            continue
        source, bad = parse_file(rel, data)
        scanner.skipped.extend(bad)
        if source is None:
            continue
        sources.append(source)
        if mentions_framework(data):
            parsed += 1
            by_file[rel] = evidence_in(source)
    scanned = len(walked.code)
    everything = [r for reasons in by_file.values() for r in reasons]
    everything += requirement_reasons(scanner.requirements)

    def whole_repo() -> Classification:
        return weigh(everything, override, override_line=override_line, skipped=scanner.skipped,
                     files_scanned=scanned, files_parsed=parsed)

    if entry is None:
        choice = choose_entry(sources, by_file, existing=[rel for rel, _ in walked.code])
        if choice is None:
            found = whole_repo()  # an unsupported framework, or none: its error says what was found
            raise no_entry(scanned, [r for r in found.reasons if r.kind != REQUIREMENT])
    else:
        choice = named_entry(entry, sources)
    mine = [r for file in choice.files for r in by_file.get(file, ())]
    if override is None and leading_framework(mine) is None:
        return choice, whole_repo()
    return choice, weigh(mine, override, override_line=override_line, skipped=scanner.skipped,
                         files_scanned=scanned, files_parsed=parsed)
