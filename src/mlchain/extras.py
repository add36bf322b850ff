"""Which optional extra provides which import: `pip install mlchain` alone is the in-container
side (the sdk, mlchain-train); the chain, the service and Jenkins need the `server` extra, Keras
training outside a container the `keras` extra. A command that reaches a missing module says
which extra to install instead of ending in a traceback."""

from __future__ import annotations

from mlchain.errors import MissingExtra

# Top-level module -> the extra that installs it (pyproject.toml's optional-dependencies).
EXTRA_OF_MODULE = {
    "mlflow": "server", "optuna": "server", "jenkins_jobs": "server", "jenkins": "server",
    "docker": "server", "jinja2": "server", "matplotlib": "server", "rich": "server",
    "fastapi": "server", "uvicorn": "server", "sklearn": "server", "joblib": "server",
    "sqlalchemy": "server", "requests": "server", "markupsafe": "server", "starlette": "server", "packaging": "server",
    "tensorflow": "keras", "keras": "keras", "river": "serving", "prometheus_client": "serving",
}


def missing_extra(exc: ModuleNotFoundError, command: str) -> MissingExtra | None:
    """The error to show for ``exc`` raised by ``command``, when an extra provides the module."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    if extra is None:
        return None
    return MissingExtra(f"`mlchain {command}` needs {top}, which is not installed",
                        hint=f"install the {extra!r} extra: pip install 'mlchain[{extra}]'")
