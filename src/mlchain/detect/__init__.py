"""The classifier (job2): read a training repository's code and decide ``keras`` or ``sklearn``.

Evidence comes from the Python AST (never a text search); notebooks contribute their code
cells; requirement files are weaker evidence; ``framework:`` in ``mlchain.yaml``
overrides everything. The package, by concern, each module importing only those above it
in this list:

- :mod:`~mlchain.detect.rules`: the kinds of evidence and the tables (what a name means, its weight);
- :mod:`~mlchain.detect.parsing`: Python files and notebooks into trees (pure);
- :mod:`~mlchain.detect.requirements`: requirement files into requirements (pure);
- :mod:`~mlchain.detect.evidence`: trees and requirements into reasons (pure);
- :mod:`~mlchain.detect.decision`: reasons into a :class:`Classification` (pure);
- :mod:`~mlchain.detect.entry`: which file trains, the entry (pure);
- :mod:`~mlchain.detect.scanning`: walking and reading a repository, :func:`classify_repo`,
  :func:`classify_entry`.
"""

from mlchain.detect.decision import CLOSE_RATIO, Classification, decide, leading_framework, weigh
from mlchain.detect.entry import Candidate, EntryChoice, choose_entry, module_names, named_entry
from mlchain.detect.evidence import Reason, evidence_in, requirement_reasons
from mlchain.detect.parsing import (
    ParsedSource,
    ParsedUnit,
    SkippedFile,
    neutralise_magics,
    parse_file,
    parse_notebook,
    parse_python,
)
from mlchain.detect.requirements import (
    Requirement,
    normalise_dist,
    parse_environment_yml,
    parse_pipfile,
    parse_pyproject,
    parse_requirements_txt,
    parse_setup_py,
    requirement_parser,
)
from mlchain.detect.rules import (
    CALLS,
    IMPORT,
    IMPORTS,
    MODEL_BUILDING,
    MODEL_METHODS,
    OVERRIDE,
    REQUIREMENT,
    REQUIREMENTS,
    USAGE,
    WEAKER_EVIDENCE,
    canonical,
    lookup_call,
    mentions_framework,
)
from mlchain.detect.scanning import (
    MAX_FILE_BYTES,
    SKIP_DIRS,
    RepoScan,
    RepoScanner,
    classify_entry,
    classify_repo,
    read_override,
    scan_repo,
)

__all__ = [
    "CALLS", "CLOSE_RATIO", "IMPORT", "IMPORTS", "MAX_FILE_BYTES", "MODEL_BUILDING", "MODEL_METHODS",
    "OVERRIDE", "REQUIREMENT", "REQUIREMENTS", "SKIP_DIRS", "USAGE", "WEAKER_EVIDENCE", "Candidate",
    "Classification", "EntryChoice", "ParsedSource", "ParsedUnit", "Reason", "RepoScan", "RepoScanner",
    "Requirement", "SkippedFile", "canonical", "choose_entry", "classify_entry", "classify_repo", "decide",
    "evidence_in", "leading_framework", "lookup_call", "mentions_framework", "module_names", "named_entry",
    "neutralise_magics", "normalise_dist", "parse_environment_yml", "parse_file", "parse_notebook",
    "parse_pipfile", "parse_pyproject", "parse_python", "parse_requirements_txt", "parse_setup_py",
    "read_override", "requirement_parser", "requirement_reasons", "scan_repo", "weigh",
]
