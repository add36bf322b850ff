"""Settings, resolved once: defaults < file < environment < flags.

The file is TOML: ``$MLCHAIN_CONFIG`` or ``$MLCHAIN_HOME/config.toml``. Every
field can be set from the environment as ``MLCHAIN_<FIELD>`` (upper case); a
few well-known variables are honoured too (``MLFLOW_TRACKING_URI``). Secrets
are ``SecretStr``: they never print, and they only come from the file or the
environment, never from a flag on the command line.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError

from mlchain.errors import ConfigError, home_not_writable
from mlchain.gitrefs import DEFAULT_CLONE_SCHEMES, CloneScheme
from mlchain.repo_config import Minutes, Patience, Threshold, TrialCount
from mlchain.searchplan import PrunerName, SamplerName

RunnerName = Literal["auto", "docker", "process"]
RetrainVia = Literal["queue", "jenkins", "off"]

# Variables with a meaning outside mlchain that map onto a setting.
WELL_KNOWN_ENV = {
    "MLFLOW_TRACKING_URI": "tracking_uri",
    "MLFLOW_REGISTRY_URI": "registry_uri",
    "PIP_CERT": "build_ca_bundle",  # the CA pip trusts on this host is the one image builds need
}
SECRET_FIELDS = ("smtp_password", "webhook_secret", "jenkins_token")
SECRET_ENV = tuple(f"MLCHAIN_{field.upper()}" for field in SECRET_FIELDS)
# Secrets taken out of this process's environment by the first load_settings (read once).
_taken_secrets: dict[str, str] = {}


def take_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """The secret variables of this process's environment, removed from it (and from what
    other processes can read of it) the first time; the same values on every later call.
    Training starts only after settings are loaded, so it never finds them there."""
    from mlchain.procs import hide_environment

    found = {name: env[name] for name in SECRET_ENV if name in env}
    for name, value in found.items():  # a variable set again (even to nothing) wins over what was taken
        if value:
            _taken_secrets[name] = value
        else:
            _taken_secrets.pop(name, None)
    if found:
        hide_environment(found)
    return dict(_taken_secrets)


def secret_env() -> dict[str, str]:
    """The secrets taken from the environment, for a child that is mlchain itself (it takes
    them again at once); never for training or any other program."""
    return dict(_taken_secrets)


_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmg]?)\s*$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
MIN_DOCKER_MEMORY = 6 * 1024**2  # Docker refuses less


def memory_bytes(value: str) -> int:
    """'4g' / '512m' / '64m' / bytes -> bytes; ValueError for anything else."""
    match = _MEMORY.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a size: write a number with b, k, m or g (4g, 512m)")
    return int(float(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()])


TRAIN_LOG_MAX_BYTES = 64 * 1024 * 1024  # the default of Settings.train_log_max_bytes


def _docker_memory(value: str) -> str:
    if memory_bytes(value) < MIN_DOCKER_MEMORY:
        raise ValueError(f"{value!r} is below Docker's minimum of 6m")
    return value


Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path = Path(".mlchain")
    # Tracking: SQLite + local artifacts under home unless pointed elsewhere.
    tracking_uri: str | None = None
    registry_uri: str | None = None
    optuna_storage: str | None = None
    # Training
    runner: RunnerName = "auto"
    threshold: Threshold | None = None  # overrides mlchain.yaml's threshold when set
    max_trials: TrialCount | None = None
    max_minutes: Minutes | None = None
    patience: Patience | None = None
    train_timeout_s: Seconds = 3600.0
    search_seed: int = 0  # mixed into the search's sampler seed (benchmarks vary it)
    sampler: SamplerName | None = None  # overrides mlchain.yaml's search.sampler when set
    pruner: PrunerName | None = None    # overrides mlchain.yaml's search.pruner when set
    # Docker sandbox
    base_image: str = "python:3.11-slim"
    image_prefix: str = "mlchain"
    docker_memory: Annotated[str, AfterValidator(_docker_memory)] = "4g"
    docker_cpus: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 2.0
    docker_pids_limit: Annotated[int, Field(ge=1)] = 256
    docker_network: str = "none"
    # A trial's train.log (and the engine's own log of its container) stops growing here; the
    # last lines are kept past it. Training output is the repository's: it must not fill the disk.
    train_log_max_bytes: Annotated[int, Field(ge=64 * 1024)] = TRAIN_LOG_MAX_BYTES
    build_ca_bundle: Path | None = None
    # Monitor
    max_restarts: Annotated[int, Field(ge=0)] = 3
    hung_after_s: Seconds = 300.0
    backoff_base_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    backoff_max_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 60.0
    monitor_interval_s: Seconds = 3.0
    # Email
    smtp_host: str | None = None
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 25
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: Seconds = 10.0
    mail_from: str = "mlchain@localhost"
    default_recipients: list[str] = Field(default_factory=list)
    # Webhook
    webhook_secret: SecretStr | None = None
    webhook_branches: list[str] = Field(default_factory=list)
    webhook_max_body: Annotated[int, Field(ge=1)] = 25 * 1024 * 1024
    webhook_tags: list[str] = Field(default_factory=list)  # tag globs to build (empty: tag pushes ignored)
    # Which clone URLs a push may name (file:// is for `mlchain run PATH` only, never a push)
    clone_schemes: list[CloneScheme] = Field(default_factory=lambda: list(DEFAULT_CLONE_SCHEMES))
    # Jenkins
    jenkins_url: str | None = None
    jenkins_user: str | None = None
    jenkins_token: SecretStr | None = None
    # Links in emails and summaries
    mlflow_ui_url: str | None = None
    # Model serving (mlchain model serve)
    serve_poll_s: Seconds = 5.0  # how often the registry is asked where the alias points
    serve_max_batch_rows: Annotated[int, Field(ge=1)] = 256
    serve_max_wait_ms: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 2.0
    serve_max_body: Annotated[int, Field(ge=1)] = 32 * 1024 * 1024
    # Serving: feedback store, drift, retraining on drift
    serving_db_url: str | None = None  # any SQLAlchemy URL; default SQLite serving.db under home
    feedback_max_rows: Annotated[int, Field(ge=1)] = 1_000_000
    feedback_max_days: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 90.0
    drift_delta: Annotated[float, Field(gt=0, lt=1)] = 0.002  # ADWIN's confidence parameter
    drift_summary_above: Annotated[int, Field(ge=1)] = 32  # more input columns: watch summary statistics
    retrain_via: RetrainVia = "queue"  # the webhook queue (`mlchain serve` runs it), Jenkins' job1, or off
    retrain_cooldown_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 6 * 3600.0
    retrain_max_per_day: Annotated[int, Field(ge=0)] = 2
    retrain_min_feedback: Annotated[int, Field(ge=0)] = 500  # labeled rows after the drift before asking

    # Derived locations ---------------------------------------------------
    @property
    def home_abs(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def state_db(self) -> Path:
        return self.home_abs / "state.db"

    @property
    def runs_dir(self) -> Path:
        return self.home_abs / "runs"

    @property
    def outbox_dir(self) -> Path:
        return self.home_abs / "outbox"

    @property
    def artifact_root(self) -> Path:
        return self.home_abs / "mlartifacts"

    @property
    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.home_abs / 'mlflow.db'}"

    @property
    def datasets_dir(self) -> Path:
        return self.home_abs / "datasets"

    @property
    def resolved_serving_db_url(self) -> str:
        return self.serving_db_url or f"sqlite:///{self.home_abs / 'serving.db'}"

    @property
    def resolved_optuna_storage(self) -> str:
        return self.optuna_storage or f"sqlite:///{self.home_abs / 'optuna.db'}"

    def ensure_dirs(self) -> None:
        for d in (self.home_abs, self.runs_dir, self.outbox_dir, self.artifact_root):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise home_not_writable(self.home_abs, exc) from None


def _coerce_env(name: str, raw: str) -> Any:
    """Environment values are strings; lists are comma separated."""
    field = Settings.model_fields[name]
    if "list" in str(field.annotation):
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for var, field in WELL_KNOWN_ENV.items():
        if env.get(var):
            values[field] = env[var]
    for field in Settings.model_fields:
        var = f"MLCHAIN_{field.upper()}"
        if env.get(var) not in (None, ""):
            values[field] = _coerce_env(field, env[var])
    return values


def _config_file(env: Mapping[str, str], home: Path) -> Path | None:
    explicit = env.get("MLCHAIN_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"MLCHAIN_CONFIG names {path}, which does not exist",
                              hint="point MLCHAIN_CONFIG at a TOML file or unset it")
        return path
    candidate = home / "config.toml"
    return candidate if candidate.is_file() else None


def load_settings(flags: Mapping[str, Any] | None = None,
                  env: Mapping[str, str] | None = None) -> Settings:
    """Resolve settings once: defaults < file < environment < flags (None flags are ignored)."""
    if env is None or env is os.environ:
        env = {**os.environ, **take_secrets(os.environ)}
    flag_values = {k: v for k, v in (flags or {}).items() if v is not None}
    env_values = _from_env(env)
    home = Path(flag_values.get("home") or env_values.get("home") or Settings.model_fields["home"].default)
    file_values: dict[str, Any] = {}
    path = _config_file(env, home.expanduser())
    if path is not None:
        try:
            file_values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    merged = {**file_values, **env_values, **flag_values}
    try:
        return Settings(**merged)
    except ValidationError as exc:
        problems = [f"  {_setting_name(e['loc'], flag_values)}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"the settings have {len(problems)} problem(s):\n" + "\n".join(problems),
                          hint="check the flags, the MLCHAIN_* variables and the config file") from exc


def _setting_name(loc: tuple[Any, ...], flags: Mapping[str, Any]) -> str:
    """Where a bad value came from, as the user typed it: --max-trials, MLCHAIN_MAX_TRIALS, or the key."""
    field = str(loc[0]) if loc else "(settings)"
    if field in flags:
        return f"--{field.replace('_', '-')} ({field})"
    return f"{field} (MLCHAIN_{field.upper()} or the config file)"
