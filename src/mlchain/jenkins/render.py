"""Render jobs/ with Jenkins Job Builder: one config.xml per job and view, or a Job DSL seed.

JJB is the reference renderer, so this module only drives its Python API the
way ``jenkins-jobs test`` does (load, expand, amend, generate) and keeps both
the XML and the expanded dicts: the XML goes to a controller, the dicts feed
the Job DSL seed (``dsl.py``), so jobs/ stays the single source of truth.
"""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlchain import jobdefs

# JJB appends this to every description it renders; it is how JJB (and we)
# tell a job it manages from one somebody made by hand.
MANAGED_MARKER = "<!-- Managed by Jenkins Job Builder -->"

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


# --- rendering with JJB ----------------------------------------------------------------

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
    items = [Item(kind, str(x.name), x.output().decode("utf-8"), jobdefs.plain(d)) for d, x in zip(data, xml, strict=True)]
    return tuple(sorted(items, key=lambda i: i.name))


def load(jobs_dir: Path | None = None) -> Definitions:
    """Load, expand and render jobs/ with JJB; errors say which file and what to fix."""
    from jenkins_jobs.errors import JenkinsJobsException

    loaded = jobdefs.load(jobs_dir)
    try:
        job_data, xml_jobs, view_data, xml_views = _generate(loaded.config, loaded.roots)
    except (JenkinsJobsException, yaml.YAMLError, *jobdefs.FORMAT_ERRORS) as exc:
        raise jobdefs.cannot_load(loaded.folder, exc) from exc
    return Definitions(loaded.folder, _items("job", job_data, xml_jobs), _items("view", view_data, xml_views))


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
