"""Render jobs/ with Jenkins Job Builder: one config.xml per job and view, or a Job DSL seed.

JJB is the reference renderer, so this module only drives its Python API the
way ``jenkins-jobs test`` does (load, expand, amend, generate) and keeps both
the XML and the expanded dicts: the XML goes to a controller, the dicts feed
the Job DSL seed (``dsl.py``), so jobs/ stays the single source of truth.
"""

from __future__ import annotations

import copy
import difflib
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlchain.errors import ConfigError

# JJB appends this to every description it renders; it is how JJB (and we)
# tell a job it manages from one somebody made by hand.
MANAGED_MARKER = "<!-- Managed by Jenkins Job Builder -->"

# Settings for JJB itself. Passed as a file so that a developer's
# ~/.config/jenkins_jobs/jenkins_jobs.ini cannot change what we render, and
# plugin versions are never queried: the XML is the same offline and online.
_JJB_INI = """\
[job_builder]
keep_descriptions=False
allow_duplicates=False

[jenkins]
query_plugins_info=False
"""

_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")


@dataclass(frozen=True)
class Item:
    """One rendered job or view."""

    kind: str  # "job" or "view"
    name: str
    xml: str  # as `jenkins-jobs test` writes it
    data: dict[str, Any]  # JJB's expanded definition (plain dicts, lists and scalars)


@dataclass(frozen=True)
class Definitions:
    """Everything jobs/ defines, rendered."""

    jobs_dir: Path
    jobs: tuple[Item, ...]
    views: tuple[Item, ...]

    @property
    def items(self) -> tuple[Item, ...]:
        return self.jobs + self.views


# --- where jobs/ is ------------------------------------------------------------------

def _checkout_jobs_dir() -> Path:
    # src/mlchain/jenkins/render.py -> the repository root is three folders up.
    return Path(__file__).resolve().parents[3] / "jobs"


def default_jobs_dir() -> Path:
    """The repository's jobs/: next to the source checkout, else in the current folder."""
    candidates = [_checkout_jobs_dir(), Path.cwd() / "jobs"]
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("*.y*ml")):
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"no jobs/ folder with JJB YAML found (looked in {looked})",
                      hint="pass --jobs-dir PATH, the jobs/ folder of an mlchain checkout")


# --- loading with JJB ------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """JJB's dicts carry source positions in subclasses; keep plain values only."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return str(value)


def _jjb_config() -> Any:
    from jenkins_jobs.config import JJBConfig

    with tempfile.TemporaryDirectory(prefix="mlchain-jjb-") as tmp:
        ini = Path(tmp) / "jenkins_jobs.ini"
        ini.write_text(_JJB_INI)
        config = JJBConfig(str(ini))  # reads and closes the file here
    config.validate()
    return config


def _unknown_keys(item: Any, yaml_text: str) -> list[str]:
    """Keys JJB would silently treat as template variables and drop.

    JJB turns any key it does not know into a parameter for ``{name}``
    expansion; unless the YAML uses it as such, it is a typo (e.g.
    ``show-pipeline-parameters`` for ``show-parameters``) that changes nothing.
    """
    return sorted(key for key in getattr(item, "params", {})
                  if not re.search(r"\{" + re.escape(key) + r"[}|]", yaml_text))


def _check_known_keys(roots: Any, jobs_dir: Path) -> None:
    from jenkins_jobs.defaults import job_contents_keys, view_contents_keys

    yaml_text = "\n".join(p.read_text() for p in sorted(jobs_dir.glob("*.y*ml")))
    known = {"job": (roots.jobs, job_contents_keys), "view": (roots.views, view_contents_keys)}
    for kind, (container, keys) in known.items():
        for item in container.values():
            unknown = _unknown_keys(item, yaml_text)
            if unknown:
                close = {k: difflib.get_close_matches(k, sorted(keys), n=2, cutoff=0.5) for k in unknown}
                guesses = "; ".join(f"{k}: did you mean {' or '.join(v)}?" if v else f"{k}: no close match"
                                    for k, v in close.items())
                raise ConfigError(
                    f"{kind} {item.name!r} in {jobs_dir} uses keys Jenkins Job Builder does not know "
                    f"and would drop silently: {', '.join(unknown)}",
                    hint=guesses)


def _generate(config: Any, roots: Any) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    from jenkins_jobs.registry import ModuleRegistry
    from jenkins_jobs.xml_config import XmlJobGenerator, XmlViewGenerator

    registry = ModuleRegistry(config, [])
    registry.set_macros(roots.macros)
    jobs = roots.generate_jobs()
    views = roots.generate_views()
    registry.amend_job_dicts(jobs)
    # Copy before generating: XML modules may consume the dicts they read.
    job_data = [copy.deepcopy(job.data) for job in jobs]
    view_data = [copy.deepcopy(view.data) for view in views]
    xml_jobs = XmlJobGenerator(registry).generateXML(jobs)
    xml_views = XmlViewGenerator(registry).generateXML(views)
    return job_data, xml_jobs, view_data, xml_views


def _items(kind: str, data: list[Any], xml: list[Any]) -> tuple[Item, ...]:
    items = [Item(kind, str(x.name), x.output().decode("utf-8"), _plain(d)) for d, x in zip(data, xml, strict=True)]
    return tuple(sorted(items, key=lambda i: i.name))


def load(jobs_dir: Path | None = None, *, xml: bool = True) -> Definitions:
    """Load, expand and render jobs/ with JJB; errors say which file and what to fix.

    ``xml=False`` expands without rendering (the local engine needs the definitions only,
    and JJB's XML modules are slow to load)."""
    from jenkins_jobs.errors import JenkinsJobsException
    from jenkins_jobs.loader import load_files
    from jenkins_jobs.roots import Roots

    folder = (jobs_dir or default_jobs_dir()).resolve()
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder", hint="pass --jobs-dir PATH, a folder of JJB YAML files")
    try:
        config = _jjb_config()
        roots = Roots(config)
        load_files(config, roots, [folder])
        _check_known_keys(roots, folder)
        if not xml:
            jobs = tuple(Item("job", str(j.name), "", _plain(j.data)) for j in roots.generate_jobs())
            views = tuple(Item("view", str(v.name), "", _plain(v.data)) for v in roots.generate_views())
            return Definitions(folder, jobs, views)
        job_data, xml_jobs, view_data, xml_views = _generate(config, roots)
    except (JenkinsJobsException, yaml.YAMLError) as exc:
        raise ConfigError(f"Jenkins Job Builder cannot render {folder}: {exc}",
                          hint="fix the YAML it names; `jenkins-jobs test DIR` shows the same error") from exc
    return Definitions(folder, _items("job", job_data, xml_jobs), _items("view", view_data, xml_views))


# --- comparing XML ----------------------------------------------------------------------

def _strip(element: ET.Element) -> None:
    # Jenkins adds plugin="name@version" when it saves an item itself; it
    # names the plugin that wrote the element and changes nothing it does.
    element.attrib.pop("plugin", None)
    if element.text is not None and not element.text.strip() and len(element):
        element.text = None
    if element.tail is not None and not element.tail.strip():
        element.tail = None
    for child in element:
        _strip(child)


def normalise_xml(text: str | bytes) -> str:
    """A canonical form of a config.xml, equal for configs Jenkins treats the same.

    Ignores the XML declaration (Jenkins writes version 1.1, which Python's
    parser refuses), indentation between elements and ``plugin`` attributes.
    """
    source = text.decode("utf-8") if isinstance(text, bytes) else text
    root = ET.fromstring(_XML_DECLARATION.sub("", source, count=1))
    _strip(root)
    return ET.canonicalize(ET.tostring(root, encoding="unicode"))


def is_managed(xml: str) -> bool:
    """Whether a config.xml carries JJB's marker (the rule JJB's own --delete-old uses)."""
    try:
        root = ET.fromstring(_XML_DECLARATION.sub("", xml, count=1))
    except ET.ParseError:
        return False
    description = root.find("description")
    return description is not None and (description.text or "").rstrip().endswith(MANAGED_MARKER)


# --- the render command -----------------------------------------------------------------

def _xml_listing(defs: Definitions) -> Iterator[str]:
    for item in defs.items:
        yield f"{item.kind:<4}  {item.name}"
    yield (f"{len(defs.jobs)} jobs and {len(defs.views)} view(s) rendered from {defs.jobs_dir}; "
           "pass -o DIR to write their config.xml")


def _write_xml(defs: Definitions, output: Path) -> Iterator[str]:
    # The layout of `jenkins-jobs test --config-xml -o DIR`: DIR/<name>/config.xml.
    for item in defs.items:
        path = output / item.name / "config.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(item.xml, encoding="utf-8")
        yield f"wrote {path}"


def _render_xml(defs: Definitions, output: Path | None) -> Iterator[str]:
    return _xml_listing(defs) if output is None else _write_xml(defs, output)


def _render_job_dsl(defs: Definitions, output: Path | None) -> Iterator[str]:
    from mlchain.jenkins.dsl import seed_script

    script = seed_script(defs)
    if output is None:
        yield script.rstrip("\n")
        return
    path = output if output.suffix == ".groovy" else output / "seed.groovy"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script, encoding="utf-8")
    yield f"wrote {path}"


FORMATS: dict[str, Callable[[Definitions, Path | None], Iterator[str]]] = {
    "xml": _render_xml,
    "job-dsl": _render_job_dsl,
}


def render(output: Path | None, fmt: str = "xml", jobs_dir: Path | None = None) -> Iterator[str]:
    """Render jobs/ as config.xml files (JJB) or a Job DSL seed script; yield what to print."""
    try:
        renderer = FORMATS[fmt]
    except KeyError:
        raise ConfigError(f"unknown format {fmt!r}", hint=f"use one of: {', '.join(FORMATS)}") from None
    yield from renderer(load(jobs_dir), output)
