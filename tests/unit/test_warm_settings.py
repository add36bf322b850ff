"""The warm server's client resolves its three settings without pydantic: the same answers
as mlchain.config.load_settings, and which command lines go to the server at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlchain.config import load_settings
from mlchain.warm import client_settings

CASES = [
    ({}, "", None),
    ({"MLCHAIN_WARM_SERVER": "0"}, "", None),
    ({"MLCHAIN_WARM_SERVER": "false"}, "warm_server = true\n", None),
    ({"MLCHAIN_WARM_SERVER": "1"}, "warm_server = false\n", None),
    ({}, "warm_server = false\nwarm_server_idle_s = 30\n", None),
    ({"MLCHAIN_WARM_SERVER_IDLE_S": "45.5"}, "warm_server_idle_s = 30\n", None),
    ({}, "", "flag-home"),
    ({"MLCHAIN_WARM_SERVER": "off"}, "", "flag-home"),
]


@pytest.mark.parametrize(("env", "config", "home_flag"), CASES)
def test_client_settings_agree_with_load_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  env: dict[str, str], config: str, home_flag: str | None) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"MLCHAIN_HOME": str(tmp_path / "env-home"), **env}
    home = tmp_path / (home_flag or "env-home")
    home.mkdir()
    if config:
        (home / "config.toml").write_text(config)
    argv = (["--home", str(home)] if home_flag else []) + ["run", "repo"]

    resolved = client_settings(argv, env)
    settings = load_settings({"home": home if home_flag else None}, env=env)

    assert resolved == (settings.home_abs, settings.warm_server, settings.warm_server_idle_s)


@pytest.mark.parametrize("argv", [
    ["classify", "."], ["serve"], ["--help"], ["run", "--help"], ["--version"], [], ["jenkins", "render"],
])
def test_only_commands_that_load_mlflow_go_to_the_server(argv: list[str]) -> None:
    assert client_settings(argv, {}) is None


@pytest.mark.parametrize("argv", [["run", "x"], ["--home=h", "job", "gate"], ["resume", "r"], ["train", "."]])
def test_commands_that_load_mlflow_go_to_the_server(argv: list[str]) -> None:
    assert client_settings(argv, {}) is not None
