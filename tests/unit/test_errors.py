"""The error hierarchy knows nothing of click; the CLI maps it, prints it once, exits with its code."""

from __future__ import annotations

import ast
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import mlchain.errors
from mlchain import cli as cli_module
from mlchain.errors import ConfigError, MlchainError, NotFound


def test_errors_module_imports_no_click() -> None:
    tree = ast.parse(Path(mlchain.errors.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert "click" not in imported
    assert not issubclass(MlchainError, click.ClickException)


def test_message_with_hint_and_attributes() -> None:
    err = ConfigError("budget.max_trials must be at least 1", hint="set budget.max_trials: 5")
    assert str(err) == "budget.max_trials must be at least 1\n  fix: set budget.max_trials: 5"
    assert err.format_message() == str(err) == err.message
    assert (err.reason, err.hint, err.exit_code) == ("budget.max_trials must be at least 1",
                                                      "set budget.max_trials: 5", 3)
    assert str(NotFound("no run r-1")) == "no run r-1"


@pytest.fixture
def failing_command():
    @cli_module.cli.command(name="explode-for-test")
    def explode() -> None:
        raise ConfigError("the thing is wrong", hint="set it right")

    yield "explode-for-test"
    cli_module.cli.commands.pop("explode-for-test")


def test_main_prints_error_once_with_its_exit_code(failing_command: str, capsys) -> None:
    assert cli_module.main([failing_command]) == 3
    captured = capsys.readouterr()
    assert captured.err == "Error: the thing is wrong\n  fix: set it right\n"
    assert "Traceback" not in captured.err + captured.out


def test_click_runner_sees_the_error_exit_code(failing_command: str) -> None:
    result = CliRunner().invoke(cli_module.cli, [failing_command])
    assert result.exit_code == 3
    assert "Error: the thing is wrong\n  fix: set it right" in result.output


def test_usage_error_keeps_click_exit_code(capsys) -> None:
    assert cli_module.main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_a_real_command_error_through_main_and_click_runner(tmp_path, capsys) -> None:
    home = tmp_path / "home"
    assert cli_module.main(["--home", str(home), "resume", "no-such-run"]) == 9
    err = capsys.readouterr().err
    assert err.count("no run 'no-such-run'") == 1 and "\n  fix: check the id" in err
    result = CliRunner().invoke(cli_module.cli, ["--home", str(home), "resume", "no-such-run"])
    assert result.exit_code == 9 and "no run 'no-such-run'" in result.output
    assert isinstance(result.exception, SystemExit)  # click's own ending, not an escaped exception
