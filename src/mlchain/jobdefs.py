"""jobs/ loaded through Jenkins Job Builder's own parser: the one loader that the local engine
(``engine/jjb.py``, which runs the definitions) and the Jenkins renderer (``jenkins/render.py``,
which turns them into config.xml) share, so both read the same expanded jobs.

JJB expands defaults, templates and projects; keys JJB itself does not know (it would keep
them as template variables and drop them silently) are refused here with a guess at the
intended key.
"""

from __future__ import annotations

import difflib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlchain.errors import ConfigError

# Settings for JJB itself. Passed as a file so that a developer's
# ~/.config/jenkins_jobs/jenkins_jobs.ini cannot change what we load, and
# plugin versions are never queried: the result is the same offline and online.
_JJB_INI = """\
[job_builder]
keep_descriptions=False
allow_duplicates=False

[jenkins]
query_plugins_info=False
"""


def default_jobs_dir() -> Path:
    """The chain's jobs/: the checkout's, or the copy an installed mlchain carries."""
    from mlchain.resources import shipped

    return shipped("jobs")


@dataclass(frozen=True)
class Loaded:
    """jobs/ as JJB loaded it: its config and roots, ready to expand or render."""

    folder: Path
    config: Any
    roots: Any

    def expand(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The expanded jobs and views, as plain dicts."""
        from jenkins_jobs.errors import JenkinsJobsException

        try:
            return ([plain(job.data) for job in self.roots.generate_jobs()],
                    [plain(view.data) for view in self.roots.generate_views()])
        except (JenkinsJobsException, *FORMAT_ERRORS) as exc:
            raise cannot_load(self.folder, exc) from exc


# What JJB's expansion of `{...}` raises for a brace it cannot read as a parameter: `{40}` (an
# index), a lone `{` or `}`.
FORMAT_ERRORS: tuple[type[Exception], ...] = (IndexError, ValueError)


def plain(value: Any) -> Any:
    """JJB's dicts carry source positions in subclasses; keep plain values only."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return str(value)


def load(jobs_dir: Path | None = None) -> Loaded:
    """Load jobs/ with JJB; errors say which folder and what to fix."""
    import yaml
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
    except (JenkinsJobsException, yaml.YAMLError) as exc:
        raise cannot_load(folder, exc) from exc
    _check_known_keys(roots, folder)
    return Loaded(folder, config, roots)


def cannot_load(folder: Path, exc: Exception) -> ConfigError:
    if isinstance(exc, FORMAT_ERRORS):
        return ConfigError(f"Jenkins Job Builder cannot expand a {{...}} in {folder}: {type(exc).__name__}: {exc}",
                           hint="JJB reads {name} as a parameter: write a literal brace doubled, {{ and }}"
                                " (a regular expression's {40} as {{40}})")
    return ConfigError(f"Jenkins Job Builder cannot load {folder}: {exc}",
                       hint="fix the YAML it names; `jenkins-jobs test DIR` shows the same error")


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
