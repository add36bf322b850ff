"""Hostile training code against the docker sandbox: each attack fails inside the container.

Every script below tries one escape, writes what happened to its output folder
(the only place it can write), and raises when the attempt was blocked, so the
runner must report a failure (non-zero exit, the error in the last lines) and
return, never hang. The network test aims only at this machine (a listener of the
test's own on the Docker bridge): the sandbox has no interface to reach it, nor
anything else.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from docker_support import (
    docker_settings,
    make_spec,
    read_json,
    write_repo,
)

from mlchain.images import ImageRef
from mlchain.runners.base import ExitInfo
from mlchain.runners.docker import DockerRunner

pytestmark = pytest.mark.docker

SECRET_VAR = "MLCHAIN_SMTP_PASSWORD"
SECRET = "hunter2-not-a-real-password"

NETWORK = """
    import json, os, socket, sys
    out = os.environ["MLCHAIN_OUTPUT_DIR"]
    host, port = sys.argv_host, sys.argv_port  # replaced by the test
    result = {"interfaces": sorted(os.listdir("/sys/class/net")), "attempts": {}}
    for name, target in (("host", (host, port)),):
        try:
            with socket.create_connection(target, timeout=3):
                result["attempts"][name] = "connected"
        except OSError as exc:
            result["attempts"][name] = f"{type(exc).__name__}: {exc}"
    try:
        socket.getaddrinfo("pypi.org", 443)
        result["attempts"]["dns"] = "resolved"
    except OSError as exc:
        result["attempts"]["dns"] = f"{type(exc).__name__}: {exc}"
    json.dump(result, open(os.path.join(out, "attack.json"), "w"))
    blocked = all(v not in ("connected", "resolved") for v in result["attempts"].values())
    if blocked:
        raise ConnectionError(f"network blocked: {result['attempts']}")
    print("ESCAPED: network reachable")
"""

WRITE_REPO = """
    import json, os
    out = os.environ["MLCHAIN_OUTPUT_DIR"]
    targets = {"repo": os.path.join(os.environ["MLCHAIN_REPO_DIR"], "pwned.txt"),
               "data": os.path.join(os.environ["MLCHAIN_DATA_DIR"], "pwned.txt"),
               "root": "/pwned.txt", "usr": "/opt/venv/pwned.txt"}
    result = {}
    for name, path in targets.items():
        try:
            with open(path, "w") as f:
                f.write("pwned")
            result[name] = "written"
        except OSError as exc:
            result[name] = f"{type(exc).__name__}: {exc}"
    json.dump(result, open(os.path.join(out, "attack.json"), "w"))
    if "written" not in result.values():
        raise PermissionError(f"every write was refused: {result}")
    print("ESCAPED: wrote", result)
"""

READ_SECRETS = """
    import json, os
    out = os.environ["MLCHAIN_OUTPUT_DIR"]
    seen = dict(os.environ)
    for pid in ("1", "self"):
        try:
            raw = open(f"/proc/{pid}/environ", "rb").read()
            seen.update(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\\0") if "=" in kv)
        except OSError:
            pass
    json.dump(seen, open(os.path.join(out, "attack.json"), "w"))
    found = [k for k, v in seen.items() if "hunter2" in v or "PASSWORD" in k or "TOKEN" in k]
    if not found:
        raise LookupError("no secret in the environment")
    print("ESCAPED: found", found)
"""

FORK_BOMB = """
    import json, os, time
    out = os.environ["MLCHAIN_OUTPUT_DIR"]
    children = 0
    try:
        while children < 100000:
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            children += 1
    except OSError as exc:
        json.dump({"children": children, "error": f"{type(exc).__name__}: {exc}"},
                  open(os.path.join(out, "attack.json"), "w"))
        raise
    print("ESCAPED: forked", children)
"""

PRIVILEGES = """
    import json, os
    out = os.environ["MLCHAIN_OUTPUT_DIR"]
    result = {"uid": os.getuid(), "euid": os.geteuid()}
    for name, attempt in (("setuid0", lambda: os.setuid(0)), ("chown_repo", lambda: os.chown(
            os.environ["MLCHAIN_REPO_DIR"], 0, 0)), ("mknod", lambda: os.mknod("/tmp/dev", 0o600 | 0o20000,
            os.makedev(1, 3)))):
        try:
            attempt()
            result[name] = "allowed"
        except OSError as exc:
            result[name] = f"{type(exc).__name__}: {exc}"
    json.dump(result, open(os.path.join(out, "attack.json"), "w"))
    if "allowed" not in result.values():
        raise PermissionError(f"no privilege: {result}")
    print("ESCAPED:", result)
"""


def attack(tmp_path: Path, run_id: str, image: ImageRef, script: str, **settings: Any) -> tuple[ExitInfo, Any]:
    repo = write_repo(tmp_path, script)
    spec = make_spec(tmp_path, run_id, repo, image.tag)
    handle = DockerRunner(docker_settings(tmp_path, **settings)).start(spec)
    info = handle.wait(timeout=120)
    assert handle.status() == "exited", "the attack did not end: the runner must not hang"
    text = "\n".join(info.last_lines)
    assert "ESCAPED" not in text, text
    assert info.exit_code not in (None, 0), text
    return info, read_json(spec.output_dir / "attack.json")


def host_address(client: Any) -> str:
    """An address of this machine a container would use to reach it: the bridge's gateway, else
    (no bridge interface) the machine's own address."""
    config = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    gateway = config.get("Gateway") or str(next(ipaddress.ip_network(config["Subnet"]).hosts()))
    listed = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True,
                            text=True, check=False).stdout
    candidates = [gateway, *(line.split()[3].split("/")[0] for line in listed.splitlines())]
    for address in candidates:
        with socket.socket() as probe:
            try:
                probe.bind((address, 0))
                return address
            except OSError:
                continue
    pytest.skip(f"none of {candidates} is an address of this machine")


def test_no_network_even_to_the_host(tmp_path: Path, run_id: str, sklearn_image: ImageRef,
                                     docker_client: Any) -> None:
    host = host_address(docker_client)
    connections: list[object] = []
    with socket.socket() as server:
        server.bind(("0.0.0.0", 0))  # every interface: whichever way a packet came, it would land
        server.listen()
        server.settimeout(0.2)
        port = server.getsockname()[1]
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    connections.append(server.accept())
                except OSError:
                    continue

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        script = NETWORK.replace("sys.argv_host, sys.argv_port", f"{host!r}, {port}")
        try:
            info, result = attack(tmp_path, run_id, sklearn_image, script)
        finally:
            stop.set()
            thread.join(2)
    assert result["interfaces"] == ["lo"]
    assert "Network is unreachable" in result["attempts"]["host"], result
    assert result["attempts"]["dns"] != "resolved"
    assert connections == []
    assert any("ConnectionError: network blocked" in line for line in info.last_lines)


def test_repository_data_and_image_are_read_only(tmp_path: Path, run_id: str, sklearn_image: ImageRef) -> None:
    info, result = attack(tmp_path, run_id, sklearn_image, WRITE_REPO)
    assert all("Read-only file system" in v or "Permission denied" in v for v in result.values()), result
    assert "Read-only file system" in result["repo"]
    assert not (tmp_path / "repo" / "pwned.txt").exists()
    assert not (tmp_path / "data" / "pwned.txt").exists()
    assert any("PermissionError: every write was refused" in line for line in info.last_lines)


def test_host_environment_and_secrets_stay_out(tmp_path: Path, run_id: str, sklearn_image: ImageRef,
                                               monkeypatch: pytest.MonkeyPatch, docker_client: Any) -> None:
    monkeypatch.setenv(SECRET_VAR, SECRET)
    monkeypatch.setenv("MLCHAIN_JENKINS_TOKEN", SECRET)
    info, seen = attack(tmp_path, run_id, sklearn_image, READ_SECRETS)
    assert SECRET not in str(seen)
    assert SECRET_VAR not in seen
    # Nothing of the host's environment got in: only the contract, the image's ENV and Docker's own.
    image_env = {e.split("=", 1)[0] for e in docker_client.images.get(sklearn_image.tag).attrs["Config"]["Env"]}
    contract = set(make_spec(tmp_path, run_id, tmp_path / "repo", None).contract_env())
    assert set(seen) - image_env - contract - {"HOME", "HOSTNAME"} == set(), seen
    assert any("LookupError: no secret" in line for line in info.last_lines)


def test_fork_bomb_is_capped_and_ends(tmp_path: Path, run_id: str, sklearn_image: ImageRef) -> None:
    info, result = attack(tmp_path, run_id, sklearn_image, FORK_BOMB, docker_pids_limit=64)
    assert result["children"] < 64, result
    assert "BlockingIOError" in result["error"] or "Resource temporarily unavailable" in result["error"]
    assert any("BlockingIOError" in line for line in info.last_lines)


def test_no_root_no_privileges(tmp_path: Path, run_id: str, sklearn_image: ImageRef) -> None:
    info, result = attack(tmp_path, run_id, sklearn_image, PRIVILEGES)
    assert result["uid"] == 10001 and result["euid"] == 10001
    assert all(result[k] != "allowed" for k in ("setuid0", "chown_repo", "mknod")), result
    assert any("PermissionError: no privilege" in line for line in info.last_lines)
