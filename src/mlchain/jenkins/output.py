"""`mlchain jenkins render`: jobs/ written out in a format, config.xml files (JJB's layout)
or a Job DSL seed script, or listed when no output folder is given."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from mlchain.errors import ConfigError
from mlchain.jenkins.dsl import seed_script
from mlchain.jenkins.render import Definitions, load


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
