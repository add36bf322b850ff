"""The Jenkins agent of jenkins/agent/, for real: the image is built here from the offline
Debian base, started with a key pair made by ssh-keygen, and driven over SSH the way the SSH
Build Agents plugin drives it (the user and key of the node's credentials in casc.yaml, the
launcher's SFTP copy into remoteFS, its javaPath). The chain's shell steps are read from
jobs/ with mlchain's own JJB loader and run one SSH command each, in the job's workspace
under remoteFS, with the environment casc.yaml gives the node (parsed here, not copied) plus
the variables Jenkins sets for a build. Triggers and property files between the builds are
Jenkins' semantics as the local engine implements them (mlchain.engine.local).

Networking: the agent shares the host's network, so every connection the test makes or
causes stays on loopback: the test's SSH to the agent's sshd (a free port, loopback only),
the agent's SMTP to the test's aiosmtpd, and the agent's Docker client to the endpoint
casc.yaml names. casc.yaml points the node at the compose stack's `docker` service
(tcp://docker:2376, TLS with client certificates); here that name is mapped to 127.0.0.1,
where a TLS front with certificates made by the test forwards to the host's real engine,
so the agent uses exactly its casc.yaml settings. The training containers the agent starts
are siblings on the host engine: MLCHAIN_HOME and the repository are mounted at the same
path inside and outside.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import secrets
import shlex
import shutil
import socket
import ssl
import subprocess
import threading
import tomllib
import uuid
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import ROOT, free_port, make_git_repo, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CASC = ROOT / "jenkins" / "casc.yaml"
CONTROLLER_DOCKERFILE = ROOT / "jenkins" / "Dockerfile"
AGENT_DOCKERFILE = "jenkins/agent/Dockerfile"
# What the agent's build copies from the checkout (its COPY lines); the CA is added apart.
AGENT_CONTEXT = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "src", "jobs", "dockerfiles",
                 "jenkins/agent")
CONTROLLER_URL = "http://jenkins.test:8080/"
MAX_BUILDS = 40  # six trials at most (mlchain.yaml's budget): 4 builds each, plus job1 and job5

# The Java an agent needs, by Jenkins LTS line (the first release of the line that requires it).
JAVA_FOR_LTS: tuple[tuple[tuple[int, int, int], int, str], ...] = (
    ((2, 361, 1), 11, "https://www.jenkins.io/doc/upgrade-guide/2.361/"),
    ((2, 479, 1), 17, "https://www.jenkins.io/blog/2024/06/11/require-java-17/"),
    ((2, 555, 1), 21, "https://www.jenkins.io/doc/upgrade-guide/2.555/ (controllers and agents)"),
)


# --- what casc.yaml and the controller image say ------------------------------------------

def pinned_lts() -> tuple[int, int, int] | None:
    """The LTS version of the controller's FROM line, None for a floating tag (lts, lts-jdk21)."""
    text = CONTROLLER_DOCKERFILE.read_text()
    match = re.search(r"^FROM\s+jenkins/jenkins:(\d+)\.(\d+)\.(\d+)", text, re.MULTILINE)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def java_needed(lts: tuple[int, int, int] | None) -> int:
    """A floating LTS tag is today's LTS: it needs what the newest line needs."""
    needed = JAVA_FOR_LTS[0][1]
    for first, java, _source in JAVA_FOR_LTS:
        if lts is None or lts >= first:
            needed = java
    return needed


CASC_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def resolve_casc(value: str, controller_env: Mapping[str, str]) -> str:
    """${VAR} and ${VAR:-default} as configuration-as-code resolves them from the controller's environment."""
    def repl(match: re.Match[str]) -> str:
        name, default = match.group("name"), match.group("default")
        if controller_env.get(name):
            return controller_env[name]
        if default is not None:
            return default
        raise AssertionError(f"casc.yaml reads ${{{name}}} from the controller's environment, which the test"
                             " does not give: add it to the test's controller environment")

    return CASC_VAR.sub(repl, str(value))


@dataclass(frozen=True)
class AgentNode:
    """The node labelled `docker` in casc.yaml, as the controller would configure it."""
    name: str
    env: dict[str, str]
    remote_fs: str
    java_path: str
    user: str


def _env_vars(properties: list[Any], controller_env: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for prop in properties or []:
        for item in (prop.get("envVars") or {}).get("env", []):
            out[str(item["key"])] = resolve_casc(item["value"], controller_env)
    return out


def docker_node(controller_env: Mapping[str, str]) -> AgentNode:
    casc = yaml.safe_load(CASC.read_text())
    jenkins = casc["jenkins"]
    nodes = [n["permanent"] for n in jenkins.get("nodes", [])
             if "docker" in str(n.get("permanent", {}).get("labelString", "")).split()]
    assert len(nodes) == 1, "casc.yaml must define one permanent node labelled docker (the jobs' `node: docker`)"
    node = nodes[0]
    # A node's own variables win over the global ones, as in Jenkins.
    env = {**_env_vars(jenkins.get("globalNodeProperties", []), controller_env),
           **_env_vars(node.get("nodeProperties", []), controller_env)}
    ssh = node["launcher"]["ssh"]
    credentials = [c for domain in casc["credentials"]["system"]["domainCredentials"] for c in domain["credentials"]]
    keys = [c["basicSSHUserPrivateKey"] for c in credentials
            if c.get("basicSSHUserPrivateKey", {}).get("id") == ssh["credentialsId"]]
    assert len(keys) == 1, f"casc.yaml has no SSH key credential {ssh['credentialsId']!r} for the node's launcher"
    return AgentNode(name=node["name"], env=env, remote_fs=node["remoteFS"],
                     java_path=ssh.get("javaPath") or "java", user=keys[0]["username"])


# --- the agent's image -------------------------------------------------------------------

def _assemble_context(dest: Path) -> str:
    """The build context (the checkout's parts the Dockerfile copies); returns its content hash."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build-ca.pem", "*.egg-info")
    for name in AGENT_CONTEXT:
        source, target = ROOT / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore)
        else:
            shutil.copyfile(source, target)
    digest = hashlib.sha256()
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        rel = path.relative_to(dest).as_posix()
        digest.update(f"{rel}\0{path.stat().st_mode & 0o111}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def build_agent_image(client: Any, work: Path) -> str:
    from docker_support import base_image, ca_bundle

    context = work / "context"
    base = base_image()
    content = _assemble_context(context)
    base_id = client.images.get(base).id
    tag = f"mlchain-jenkins-agent:{hashlib.sha256(f'{content}{base_id}'.encode()).hexdigest()[:12]}"
    if client.images.list(name=tag):
        return tag
    if (bundle := ca_bundle()) is not None:  # the builder stage only: pip behind an intercepting proxy
        shutil.copyfile(bundle, context / "jenkins" / "agent" / "build-ca.pem")
    lines: list[str] = []
    for chunk in client.api.build(path=str(context), dockerfile=AGENT_DOCKERFILE, tag=tag, rm=True,
                                  forcerm=True, pull=False, buildargs={"BASE_IMAGE": base}, decode=True):
        if "stream" in chunk:
            lines.extend(chunk["stream"].splitlines())
        if "error" in chunk:
            pytest.fail(f"the agent image did not build: {chunk['error']}\n" + "\n".join(lines[-60:]))
    return tag


# --- the `docker` endpoint casc.yaml names, in front of the host's engine -----------------

def _write_tls_material(dest: Path, server_name: str) -> tuple[Path, Path]:
    """A CA, a server certificate for ``server_name`` and a client certificate, in the
    layout Docker reads (ca.pem, cert.pem, key.pem). Returns (server dir, client dir)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def builder(subject: str, key: Any) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(name(subject)).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1)))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (builder("mlchain test CA", ca_key).issuer_name(name("mlchain test CA"))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(folder: Path, cn: str, usage: Any, san: list[Any] | None) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = builder(cn, key).issuer_name(ca.subject).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if san:
            cert = cert.add_extension(x509.SubjectAlternativeName(san), critical=False)
        folder.mkdir(parents=True)
        (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (folder / "cert.pem").write_bytes(cert.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
        (folder / "key.pem").chmod(0o600)

    leaf(dest / "server", server_name, ExtendedKeyUsageOID.SERVER_AUTH, [x509.DNSName(server_name)])
    leaf(dest / "client", "jenkins-agent", ExtendedKeyUsageOID.CLIENT_AUTH, None)
    return dest / "server", dest / "client"


class EngineFront:
    """Listens on 127.0.0.1:port (TLS with client certificates when given) and forwards each
    connection to the host engine's socket: the `docker` service of the compose stack, played
    by the real engine. Counts the connections it carried."""

    def __init__(self, port: int, engine_socket: str, tls: ssl.SSLContext | None) -> None:
        self.engine_socket, self.tls = engine_socket, tls
        self.connections = 0
        try:
            self.server = socket.create_server(("127.0.0.1", port))
        except OSError as exc:
            pytest.fail(f"casc.yaml's Docker endpoint needs 127.0.0.1:{port} free for the test: {exc}")
        self.thread = threading.Thread(target=self._accept, name="engine-front", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._carry, args=(conn,), daemon=True).start()

    def _carry(self, conn: socket.socket) -> None:
        try:
            client = self.tls.wrap_socket(conn, server_side=True) if self.tls else conn
        except (OSError, ssl.SSLError):
            conn.close()
            return
        engine = socket.socket(socket.AF_UNIX)
        try:
            engine.connect(self.engine_socket)
        except OSError:
            client.close()
            return
        self.connections += 1
        back = threading.Thread(target=self._pump, args=(engine, client), daemon=True)
        back.start()
        self._pump(client, engine)
        back.join()
        client.close()
        engine.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.server.close()
        self.thread.join(timeout=10)


# --- the agent, over SSH ---------------------------------------------------------------------

@dataclass
class Agent:
    container: Any
    port: int
    key: Path
    known_hosts: Path
    node: AgentNode
    home: Path          # MLCHAIN_HOME, the same path on the host and in the agent
    remote_fs: Path     # the host folder mounted at the node's remoteFS
    repos: Path         # repositories to clone, the same path on the host and in the agent (read-only)
    front: EngineFront | None

    def ssh_args(self, key: Path | None = None, user: str | None = None) -> list[str]:
        return ["ssh", "-F", "/dev/null", "-i", str(key or self.key), "-p", str(self.port),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "ConnectTimeout=20",
                f"{user or self.node.user}@127.0.0.1"]

    def ssh(self, command: str, stdin: str | None = None, timeout: float = 900,
            key: Path | None = None, user: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.ssh_args(key, user), command], input=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def script(self, text: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """A script on the agent's shell, sent on stdin: the build's variables (secrets among
        them) never appear on a command line."""
        return self.ssh("/bin/sh -s", stdin=text, timeout=timeout)

    def host_path(self, agent_path: str) -> Path:
        """Where a path under the node's remoteFS is on the host."""
        return self.remote_fs / Path(agent_path).relative_to(self.node.remote_fs)


def _sh_name(name: str) -> str:
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), f"{name!r} cannot be an environment variable"
    return name


def step_script(env: Mapping[str, str], workspace: str, command: str) -> str:
    """A shell builder as Jenkins runs it: the command in a file under WORKSPACE@tmp, run
    with `sh -xe` in the workspace, with the build's environment."""
    tmp = f"{workspace}@tmp"
    lines = ["set -e", *(f"export {_sh_name(k)}={shlex.quote(v)}" for k, v in sorted(env.items())),
             f"mkdir -p {shlex.quote(workspace)} {shlex.quote(tmp)}",
             f"cat > {shlex.quote(tmp)}/step.sh <<'MLCHAIN_STEP_EOF'", command, "MLCHAIN_STEP_EOF",
             f"cd {shlex.quote(workspace)}",
             f"exec /bin/sh -xe {shlex.quote(tmp)}/step.sh </dev/null"]
    return "\n".join(lines) + "\n"


def checkout_script(workspace: str, url: str, ref: str) -> str:
    """The git SCM step as the Git plugin runs it on the agent: fetch every branch, check out
    the ref's commit detached; prints the commit."""
    q = shlex.quote
    return "\n".join([
        "set -e", f"mkdir -p {q(workspace)}", f"cd {q(workspace)}",
        "[ -d .git ] || git init -q",
        f"git config remote.origin.url {q(url)}",
        f"git fetch --tags --force -q -- {q(url)} '+refs/heads/*:refs/remotes/origin/*'",
        (f"commit=$(git rev-parse --verify -q {q(f'refs/remotes/origin/{ref}^{{commit}}')}"
         f" || git rev-parse --verify {q(f'{ref}^{{commit}}')})"),
        'git checkout -q -f "$commit"', 'echo "$commit"',
    ]) + "\n"


@dataclass
class Build:
    job: str
    number: int
    params: dict[str, str]
    result: str = "SUCCESS"
    console: list[str] = field(default_factory=list)


def run_build(agent: Agent, job: Any, number: int, params: dict[str, str]) -> Build:
    from mlchain.engine.local import FAILURE, UNSTABLE, expand_vars

    build = Build(job.name, number, params)
    workspace = f"{agent.node.remote_fs}/workspace/{job.name}"
    env = {**agent.node.env,
           "WORKSPACE": workspace, "JOB_NAME": job.name, "JOB_BASE_NAME": job.name,
           "BUILD_NUMBER": str(number), "BUILD_ID": str(number), "BUILD_TAG": f"jenkins-{job.name}-{number}",
           "BUILD_URL": f"{CONTROLLER_URL}job/{job.name}/{number}/", "JOB_URL": f"{CONTROLLER_URL}job/{job.name}/",
           "JENKINS_URL": CONTROLLER_URL, "NODE_NAME": agent.node.name, "NODE_LABELS": f"docker {agent.node.name}",
           "EXECUTOR_NUMBER": "0", **params}
    if job.scm is not None:
        url = expand_vars(job.scm.url, env)
        ref = expand_vars(job.scm.branches[0], env) if job.scm.branches else "main"
        done = agent.script(checkout_script(workspace, url, ref))
        build.console.append(done.stdout + done.stderr)
        if done.returncode != 0:
            build.result = FAILURE
            return build
        env.update(GIT_COMMIT=done.stdout.split()[-1], GIT_URL=url, GIT_BRANCH=f"origin/{ref}")
    for step in job.builders:
        done = agent.script(step_script(env, workspace, step.command))
        build.console.append(f"$ {step.command}\n{done.stdout}{done.stderr}")
        if done.returncode == 0:
            continue
        if step.unstable_return is not None and done.returncode == step.unstable_return:
            build.result = UNSTABLE
            continue
        build.result = FAILURE
        return build
    return build


def run_chain_on_agent(agent: Agent, params: Mapping[str, str], history: int) -> list[Build]:
    """Builds from job1 on, each started by its upstream's triggers as Jenkins would. Build
    numbers go on from ``history`` (a controller's earlier builds): the run is named after
    job1's build (BUILD_TAG), and other runs on the shared engine must not have its name."""
    from mlchain.engine.jjb import load_chain
    from mlchain.engine.local import downstream_params, triggered
    from mlchain.resources import shipped

    chain = load_chain(shipped("jobs"))
    first = chain.job(chain.first_job)
    queue = deque([(first.name, {p.name: str(params.get(p.name, p.default)) for p in first.parameters})])
    numbers: Counter[str] = Counter()
    builds: list[Build] = []
    while queue:
        assert len(builds) < MAX_BUILDS, f"the chain did not end within {MAX_BUILDS} builds"
        name, given = queue.popleft()
        job = chain.job(name)
        numbers[name] += 1
        build = run_build(agent, job, history + numbers[name], given)
        builds.append(build)
        workspace = agent.host_path(f"{agent.node.remote_fs}/workspace/{name}")
        env = {"JOB_NAME": name, "BUILD_TAG": f"jenkins-{name}-{build.number}", **given}
        for trigger in triggered(job, build.result):
            target = chain.job(trigger.project)
            passed = downstream_params(trigger, target, given, workspace, env)
            assert passed is not None, (f"{name} #{build.number} left no {trigger.property_file} for"
                                        f" {target.name}:\n" + "\n".join(build.console)[-3000:])
            queue.append((target.name, passed))
    return builds


# --- fixtures ----------------------------------------------------------------------------------

def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mlchain-controller", "-f", str(path)],
                   check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def agent_image(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_agent_image(docker_client, tmp_path_factory.mktemp("agent-image"))


@pytest.fixture(scope="module")
def smtp_module() -> Iterator[tuple[str, int, Any]]:
    from aiosmtpd.controller import Controller
    from conftest import Mailbox

    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield "127.0.0.1", port, mailbox
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def agent(docker_client: Any, agent_image: str, sklearn_image: Any, smtp_module: tuple[str, int, Any],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    if os.geteuid() != 0:
        from strictness import require

        require("the agent test runs as root: it gives its folders to the agent's jenkins user (uid 1000)")
    work = tmp_path_factory.mktemp("agent")
    home, remote_fs, repos = work / "mlchain-home", work / "remote-fs", work / "repos"
    for folder in (home, remote_fs, repos):
        folder.mkdir()
        os.chown(folder, 1000, 1000)  # the agent's jenkins user
    smtp_host, smtp_port, _ = smtp_module
    # What docker-compose.yml gives the controller, for this machine.
    controller_env = {
        "MLCHAIN_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow.db",
        "MLCHAIN_OPTUNA_STORAGE": f"sqlite:///{home}/optuna.db",
        "SMTP_HOST": smtp_host, "SMTP_PORT": str(smtp_port),
        "MLCHAIN_MAIL_FROM": "mlchain@example.com",
    }
    node = docker_node(controller_env)
    key = _keygen(work / "controller_key")
    port = free_port()
    volumes: dict[str, dict[str, str]] = {str(home): {"bind": str(home), "mode": "rw"},
                                          str(remote_fs): {"bind": node.remote_fs, "mode": "rw"},
                                          str(repos): {"bind": str(repos), "mode": "ro"}}
    extra_hosts: dict[str, str] = {}
    front = None
    docker_host = node.env.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    engine_socket = "/var/run/docker.sock"
    if docker_host.startswith("tcp://"):
        endpoint = docker_host.removeprefix("tcp://")
        name, _, engine_port = endpoint.partition(":")
        tls = None
        if node.env.get("DOCKER_TLS_VERIFY") == "1":
            cert_path = node.env.get("DOCKER_CERT_PATH") or "/root/.docker"
            server_dir, client_dir = _write_tls_material(work / "tls", name)
            for path in client_dir.iterdir():
                os.chown(path, 1000, 1000)
            volumes[str(client_dir)] = {"bind": cert_path, "mode": "ro"}
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(server_dir / "ca.pem"))
            tls.load_cert_chain(server_dir / "cert.pem", server_dir / "key.pem")
            tls.verify_mode = ssl.CERT_REQUIRED
        front = EngineFront(int(engine_port or 2375), engine_socket, tls)
        extra_hosts[name] = "127.0.0.1"
    elif docker_host.startswith("unix://"):
        volumes[engine_socket] = {"bind": docker_host.removeprefix("unix://"), "mode": "rw"}
    else:
        pytest.fail(f"casc.yaml's DOCKER_HOST {docker_host!r} is neither tcp:// nor unix://")
    container = docker_client.containers.run(
        agent_image, detach=True, name=f"mlchain-agent-test-{uuid.uuid4().hex[:8]}", network_mode="host",
        environment={"JENKINS_AGENT_SSH_PUBKEY": (key.with_suffix(".pub")).read_text().strip(),
                     "SSHD_PORT": str(port), "SSHD_LISTEN": "127.0.0.1"},
        extra_hosts=extra_hosts, volumes=volumes, labels={"io.mlchain.test": "jenkins-agent"})
    try:
        wait_for(lambda: "Server listening on 127.0.0.1" in container.logs().decode()
                 or container.reload() or container.status == "exited", 120, "the agent's sshd to listen")
        assert container.status != "exited", container.logs().decode()[-2000:]
        host_key = container.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).output.decode().split()
        known_hosts = work / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
        yield Agent(container, port, key, known_hosts, node, home, remote_fs, repos, front)
    finally:
        container.remove(force=True)
        if front is not None:
            front.close()


# --- the tests ---------------------------------------------------------------------------------

def test_the_image_bakes_in_no_key(docker_client: Any, agent_image: str) -> None:
    """Host keys and the authorized key come at start; the image carries neither."""
    done = docker_client.containers.run(agent_image, entrypoint=["sh", "-c",
                                        "ls /etc/ssh/ssh_host_* /home/jenkins/.ssh 2>&1; true"], remove=True)
    assert done.decode().count("No such file or directory") == 2, done.decode()


def test_the_agent_without_a_key_says_how_to_give_one(docker_client: Any, agent_image: str) -> None:
    container = docker_client.containers.run(agent_image, detach=True, network_mode="none")
    try:
        status = container.wait(timeout=60)
        logs = container.logs().decode()
    finally:
        container.remove(force=True)
    assert status["StatusCode"] == 64, logs
    assert "JENKINS_AGENT_SSH_PUBKEY" in logs and "Traceback" not in logs


def test_only_the_nodes_user_with_the_controllers_key_gets_in(agent: Agent, tmp_path: Path) -> None:
    done = agent.ssh("id -un; pwd")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [agent.node.user, "/home/jenkins"]
    other_key = _keygen(tmp_path / "other_key")
    refused = agent.ssh("true", key=other_key)
    assert refused.returncode == 255 and "Permission denied" in refused.stderr
    as_root = agent.ssh("true", user="root")
    assert as_root.returncode == 255 and "Permission denied" in as_root.stderr


def test_the_launcher_can_copy_into_remote_fs_and_start_java(agent: Agent, tmp_path: Path) -> None:
    """The SSH launcher copies remoting.jar into remoteFS by SFTP, then starts it with javaPath:
    that Java must be one the pinned LTS accepts for agents."""
    probe = tmp_path / "remoting-probe.jar"
    probe.write_bytes(os.urandom(4096))
    target = f"{agent.node.remote_fs}/remoting-probe.jar"
    sftp = ["sftp", *agent.ssh_args()[1:-1], "-b", "-", agent.ssh_args()[-1]]
    sftp = [a if a != "-p" else "-P" for a in sftp]
    done = subprocess.run(sftp, input=f"put {probe} {target}\n", capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert agent.host_path(target).read_bytes() == probe.read_bytes()

    java = agent.ssh(f"{shlex.quote(agent.node.java_path)} -version")
    assert java.returncode == 0, java.stderr
    match = re.search(r'version "(\d+)[.\d]*', java.stderr)
    assert match, java.stderr
    assert int(match.group(1)) >= java_needed(pinned_lts()), (
        f"the agent runs Java {match.group(1)}; the controller's LTS ({pinned_lts() or 'floating tag'})"
        f" needs {java_needed(pinned_lts())}")


def test_the_agents_python_is_one_pyproject_allows_and_mlchain_is_the_wheel(agent: Agent) -> None:
    from packaging.specifiers import SpecifierSet

    done = agent.ssh("/opt/mlchain/venv/bin/python -c 'import platform, mlchain.resources as r;"
                     " print(platform.python_version()); print(r.shipped(\"jobs\"))'")
    assert done.returncode == 0, done.stderr
    version, jobs = done.stdout.split()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert version in SpecifierSet(requires)
    assert jobs.endswith("site-packages/mlchain/_shipped/jobs"), "mlchain on the agent is the installed wheel"


def test_the_chain_passes_on_the_agent(agent: Agent, sklearn_image: Any, smtp_module: tuple[str, int, Any]) -> None:
    from mlchain.config import Settings
    from mlchain.state import StateStore

    repo = make_git_repo(agent.repos / f"digits_sklearn-{uuid.uuid4().hex[:6]}", example="digits_sklearn")
    for path in [repo, *repo.rglob("*")]:
        os.chown(path, 1000, 1000, follow_symlinks=False)  # git refuses a repository another user owns

    history = secrets.randbelow(900_000) + 100_000
    builds = run_chain_on_agent(agent, {"REPO_URL": repo.as_uri(), "REF": "main",
                                        "PUSHER_EMAIL": "pusher@example.com"}, history)
    consoles = "\n".join(f"--- {b.job} #{b.number}: {b.result}\n" + "\n".join(b.console) for b in builds)
    assert [b.result for b in builds if b.result == "FAILURE"] == [], consoles
    assert builds[0].job == "job1-pull" and builds[-1].job == "job5-notify", consoles
    gates = [b for b in builds if b.job == "job4-gate"]
    assert [b.result for b in gates[:-1]] == ["UNSTABLE"] * (len(gates) - 1) and gates[-1].result == "SUCCESS"
    run_id = f"jenkins-job1-pull-{history + 1}"  # job1 names the run after its build when RUN_ID is empty

    store = StateStore(Settings(home=agent.home).state_db)
    run = store.get_run(run_id)
    assert run.status == "passed", consoles
    assert run.commit_sha and run.repo_name == repo.name
    trials = store.trials(run_id)
    assert len(trials) == len(gates)
    assert {t.runner for t in trials} == {"docker"}
    assert {t.image for t in trials} == {sklearn_image.tag}, "the agent launched the image built on the host engine"
    assert max(t.metric or 0.0 for t in trials) >= 0.80
    assert run.registered and run.registered["champion"] is True

    assert agent.front is None or agent.front.connections > 0, "the agent used casc.yaml's Docker endpoint"
    _, _, mailbox = smtp_module
    assert len(mailbox.messages) == 1, consoles
    recipients, message = mailbox.messages[0]
    assert "data-scientist@example.com" in recipients
    assert "PASSED" in message["Subject"] and message["X-Mlchain-Run"] == run_id

    # job6 (timed, not triggered) on the same agent, against the engine other tests share.
    from mlchain.engine.jjb import load_chain
    from mlchain.resources import shipped

    monitor = run_build(agent, load_chain(shipped("jobs")).job("job6-monitor"), history + 1, {})
    assert monitor.result == "SUCCESS", "\n".join(monitor.console)
