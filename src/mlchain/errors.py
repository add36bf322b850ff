"""One hierarchy of errors; each carries the exit code the CLI ends with.

The CLI prints an error once, at the top; code below it raises and never prints.
Exit codes are distinct per kind so that scripts (and Jenkins) can tell them apart.
Nothing here knows the CLI's library: cli.py maps these errors to its exceptions.
"""

from __future__ import annotations

# `mlchain run` when the budget was spent without reaching the gate: not an error of any
# kind below (the chain worked), yet a script or a CI step must be able to tell.
EXIT_GATE_NOT_REACHED = 15


class MlchainError(Exception):
    """Base class: a message that says what was wrong and how to fix it."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.reason = message  # what was wrong, without the hint
        self.hint = hint
        self.message = message if hint is None else f"{message}\n  fix: {hint}"  # as the user reads it
        super().__init__(self.message)

    def format_message(self) -> str:
        """What was wrong and, on its own line, how to fix it."""
        return self.message

    def __str__(self) -> str:
        return self.message


class ConfigError(MlchainError):
    """Settings or mlchain.yaml are invalid."""

    exit_code = 3


class ClassifyError(MlchainError):
    """The classifier found no supported framework."""

    exit_code = 4


class ContractError(MlchainError):
    """The training repository broke the training contract."""

    exit_code = 5


class TrainingFailed(MlchainError):
    """Training ran and failed (the training code raised, or was killed)."""

    exit_code = 6


class RunnerUnavailable(MlchainError):
    """The requested runner (e.g. Docker) cannot be reached."""

    exit_code = 7


class EngineError(MlchainError):
    """A job definition uses something the local engine does not support, or the chain broke."""

    exit_code = 8


class NotFound(MlchainError):
    """A run, trial or job that was named does not exist."""

    exit_code = 9


class DeliveryError(MlchainError):
    """An email could not be delivered (it is kept in the outbox)."""

    exit_code = 10


class JenkinsError(MlchainError):
    """The Jenkins controller refused or failed a request."""

    exit_code = 11


class ImageBuildError(MlchainError):
    """A framework image failed to build."""

    exit_code = 12


class GitError(MlchainError):
    """The repository could not be cloned or checked out."""

    exit_code = 13


class WebhookError(MlchainError):
    """The webhook service was misconfigured."""

    exit_code = 14


class MissingExtra(MlchainError):
    """A command needs an optional dependency that is not installed (say which extra)."""

    exit_code = 16


class StateError(MlchainError):
    """The run state (MLCHAIN_HOME/state.db) cannot be opened or is not a database."""

    exit_code = 17


class DatasetError(MlchainError):
    """A dataset the training code downloads is not in the dataset cache and cannot be fetched."""

    exit_code = 18


def home_not_writable(home: object, exc: OSError) -> ConfigError:
    """The error for an MLCHAIN_HOME (or a folder in it) that cannot be created or written."""
    return ConfigError(f"MLCHAIN_HOME {home} cannot be written: {exc.strerror or exc} ({exc.filename or home})",
                       hint="pass --home (or set MLCHAIN_HOME to) a folder this user can create and write")


def invalid_yaml(source: str, exc: Exception) -> ConfigError:
    """The error for a configuration file that is not YAML at all."""
    return ConfigError(f"{source} is not valid YAML: {exc}", hint="fix the YAML syntax (indentation, colons, quotes)")


def not_a_mapping(source: str, kind: str) -> ConfigError:
    """The error for a configuration file whose YAML is not a mapping of keys (``kind``: what it is)."""
    return ConfigError(f"{source} must be a mapping of keys, got {kind}")
