"""FAKE Jenkins controller for contract tests: a real HTTP server on 127.0.0.1, not Jenkins.

It answers the REST endpoints python-jenkins calls for ``mlchain jenkins
deploy``, ``status`` and ``trigger``, the way Jenkins answers them, and keeps
jobs, views, builds and the queue in memory. Endpoints covered:

- ``GET  login``                                the login page (no authentication: a liveness probe)
- ``GET  crumbIssuer/api/json``                 CSRF crumb; POSTs without it get 403 (crumb can be disabled)
- ``GET  api/json[?tree=...]``                  top-level jobs (name, url, color) and views
- ``GET  me/api/json``, ``GET whoAmI/api/json`` the authenticated user
- ``GET  pluginManager/api/json?depth=N``       installed plugins; 403 unless the user is an administrator
- ``GET  job/<name>/api/json?tree=name``        existence check (404 when absent)
- ``GET  job/<name>/api/json?depth=0``          job info with ``builds`` (newest first)
- ``GET  job/<name>/<n>/api/json``              build info: number, result, building, timestamp, parameters
- ``GET|POST job/<name>/config.xml``            read / replace a job's config
- ``POST createItem?name=<name>``               create a job from the posted config.xml (400 if it exists)
- ``POST job/<name>/doDelete``                  delete a job
- ``GET  view/<name>/api/json?tree=name``       view existence check
- ``GET|POST view/<name>/config.xml``           read / replace a view's config (GET view/all/config.xml too)
- ``POST createView?name=<name>``               create a view from the posted config.xml
- ``POST view/<name>/doDelete``                 delete a view
- ``POST job/<name>/buildWithParameters?K=V``   queue a build: 201 with ``Location: .../queue/item/<n>/``
- ``GET  queue/item/<n>/api/json``              the queue item (``why`` while waiting)

Authentication is HTTP basic with a user and API token, as Jenkins checks it:
wrong credentials get 401 on any request, no credentials get 403 (anonymous
has no Overall/Read), a read-only user gets 403 on every POST.

Like Jenkins, a posted config whose root element is a class of a plugin that
is not installed fails with 500 and a stack trace naming the class
(``CannotResolveClassException``); unknown classes deeper in a job are
accepted silently (Jenkins drops them). When it hands a config back, it
writes it the way Jenkins does after saving an item itself: an XML 1.1
declaration and ``plugin="name@version"`` on plugin elements.

``requests`` records every (method, path) so tests can tell what changed.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

CRUMB_FIELD = "Jenkins-Crumb"
CRUMB = "fake-crumb-4f1e"

# Java class prefix -> the plugin providing it (what Jenkins' class loader knows once a plugin is installed).
PLUGIN_CLASSES = {
    "hudson.plugins.git.": "git",
    "com.cloudbees.jenkins.GitHubPushTrigger": "github",
    "org.jenkinsci.plugins.gwt.": "generic-webhook-trigger",
    "hudson.plugins.parameterizedtrigger.": "parameterized-trigger",
    "au.com.centrumsystems.hudson.plugin.buildpipeline.": "build-pipeline-plugin",
    "hudson.plugins.emailext.": "email-ext",
}
ALL_PLUGINS = ("git", "github", "generic-webhook-trigger", "parameterized-trigger", "build-pipeline-plugin", "email-ext",
               "configuration-as-code", "job-dsl", "credentials", "ssh-slaves")
CORE_ROOTS = {"project", "hudson.model.ListView"}
ALL_VIEW = ("<?xml version='1.1' encoding='UTF-8'?>\n<hudson.model.AllView><name>all</name>"
            "<filterExecutors>false</filterExecutors><filterQueue>false</filterQueue>"
            '<properties class="hudson.model.View$PropertyList"/></hudson.model.AllView>')


def plugin_of(class_name: str) -> str | None:
    return next((p for prefix, p in PLUGIN_CLASSES.items() if class_name.startswith(prefix)), None)


@dataclass
class Build:
    number: int
    result: str | None
    parameters: dict[str, str] = field(default_factory=dict)
    timestamp_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z

    def json(self, job_url: str) -> dict[str, Any]:
        return {
            "_class": "hudson.model.FreeStyleBuild",
            "number": self.number,
            "result": self.result,
            "building": self.result is None,
            "timestamp": self.timestamp_ms,
            "duration": 1000,
            "url": f"{job_url}{self.number}/",
            "actions": [
                {"_class": "hudson.model.ParametersAction",
                 "parameters": [{"_class": "hudson.model.StringParameterValue", "name": k, "value": v}
                                for k, v in self.parameters.items()]},
                {"_class": "hudson.model.CauseAction",
                 "causes": [{"shortDescription": "Started by user admin"}]},
            ],
        }


@dataclass
class Job:
    config: str
    builds: list[Build] = field(default_factory=list)


@dataclass
class User:
    token: str
    admin: bool = True
    can_write: bool = True


class FakeJenkins:
    """A FAKE Jenkins controller. Use as a context manager; ``url`` is where it listens."""

    def __init__(self, users: dict[str, User] | None = None, plugins: tuple[str, ...] = ALL_PLUGINS,
                 crumbs: bool = True) -> None:
        self.users = users if users is not None else {"admin": User("admin-api-token-0123456789")}
        self.plugins = set(plugins)
        self.crumbs = crumbs
        self.jobs: dict[str, Job] = {}
        self.views: dict[str, str] = {}
        self.queue: dict[int, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # --- helpers for tests -------------------------------------------------------------
    def add_job(self, name: str, config: str, builds: list[Build] | None = None) -> None:
        self.jobs[name] = Job(config, builds or [])

    def posts(self) -> list[str]:
        """Paths of every POST but the crumbless ones, in order."""
        return [path for method, path in self.requests if method == "POST"]

    # --- Jenkins behaviour ---------------------------------------------------------------
    def stored_form(self, xml: str) -> str:
        """The config as Jenkins writes it back after saving: XML 1.1, plugin attributes."""
        root = ET.fromstring(re.sub(r"^\s*<\?xml[^>]*\?>", "", xml))
        for element in root.iter():
            plugin = plugin_of(element.tag) or plugin_of(element.get("class", ""))
            if plugin and element.get("plugin") is None:
                element.set("plugin", f"{plugin}@1.0")
        return "<?xml version='1.1' encoding='UTF-8'?>\n" + ET.tostring(root, encoding="unicode")

    def load_error(self, xml: str) -> str | None:
        """The stack trace Jenkins answers when the root element's class cannot be loaded."""
        try:
            root = ET.fromstring(re.sub(r"^\s*<\?xml[^>]*\?>", "", xml))
        except ET.ParseError as exc:
            return f"org.xml.sax.SAXParseException: {exc}"
        plugin = plugin_of(root.tag)
        if root.tag in CORE_ROOTS or (plugin is not None and plugin in self.plugins):
            return None
        return ("java.io.IOException: Unable to read\n"
                "\tat hudson.model.Items.load(Items.java:374)\n"
                f"Caused by: com.thoughtworks.xstream.mapper.CannotResolveClassException: {root.tag}\n"
                "\tat hudson.util.XStream2$PluginClassOwnership.ownerOf(XStream2.java:573)\n")


def _handler_for(fake: FakeJenkins) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        jenkins = fake

    return Handler


class _Handler(BaseHTTPRequestHandler):
    jenkins: FakeJenkins
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    # --- plumbing -------------------------------------------------------------------------
    def _send(self, status: int, body: str | bytes = b"", content_type: str = "text/html;charset=utf-8",
              headers: dict[str, str] | None = None) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Jenkins", "2.999-fake")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _json(self, payload: Any, status: int = 200) -> None:
        self._send(status, json.dumps(payload), "application/json;charset=utf-8")

    def _body(self) -> str:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length).decode("utf-8") if length else ""

    def _user(self) -> tuple[str | None, bool]:
        """(user name or None for anonymous, credentials valid)."""
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None, True
        name, _, token = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        user = self.jenkins.users.get(name)
        return name, user is not None and user.token == token

    def _authorised(self, write: bool) -> str | None:
        """The user name if allowed; otherwise sends 401/403 as Jenkins does and returns None."""
        name, valid = self._user()
        if not valid:
            self._send(401, f"<html><body>Invalid password/token for user: {name}</body></html>")
            return None
        if name is None:
            self._send(403, "<html><body>Authentication required: anonymous is missing the Overall/Read "
                            "permission</body></html>")
            return None
        if write and not self.jenkins.users[name].can_write:
            self._send(403, f"<html><body>{name} is missing the Job/Configure permission</body></html>")
            return None
        if write and self.jenkins.crumbs and self.headers.get(CRUMB_FIELD) != CRUMB:
            self._send(403, "<html><body>No valid crumb was included in the request</body></html>")
            return None
        return name

    # --- dispatch ---------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET", _GET_ROUTES)

    def do_POST(self) -> None:
        self._dispatch("POST", _POST_ROUTES)

    def _dispatch(self, method: str, routes: list[tuple[re.Pattern[str], str]]) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        with self.jenkins._lock:
            self.jenkins.requests.append((method, path))
        if method == "GET" and path == "/login":
            self._send(200, "<html><body>Sign in to Jenkins</body></html>")
            return
        user = self._authorised(write=method == "POST")
        if user is None:
            return
        query = dict(parse_qsl(parts.query))
        for pattern, handler in routes:
            match = pattern.fullmatch(path)
            if match:
                with self.jenkins._lock:
                    getattr(self, handler)(user, query, *match.groups())
                return
        self._send(404, "<html><body>Not Found</body></html>")

    # --- GET handlers -------------------------------------------------------------------------
    def crumb(self, user: str, query: dict[str, str]) -> None:
        if not self.jenkins.crumbs:
            self._send(404, "Not Found")
            return
        self._json({"_class": "hudson.security.csrf.DefaultCrumbIssuer", "crumb": CRUMB,
                    "crumbRequestField": CRUMB_FIELD})

    def root(self, user: str, query: dict[str, str]) -> None:
        base = self.jenkins.url
        self._json({
            "_class": "hudson.model.Hudson",
            "jobs": [{"_class": "hudson.model.FreeStyleProject", "name": n, "url": f"{base}job/{n}/",
                      "color": "blue" if job.builds else "notbuilt"} for n, job in sorted(self.jenkins.jobs.items())],
            "views": [{"_class": "hudson.model.AllView", "name": "all", "url": base}]
            + [{"_class": "view", "name": n, "url": f"{base}view/{n}/"} for n in sorted(self.jenkins.views)],
        })

    def me(self, user: str, query: dict[str, str]) -> None:
        self._json({"_class": "hudson.model.User", "id": user, "fullName": user})

    def plugins(self, user: str, query: dict[str, str]) -> None:
        if not self.jenkins.users[user].admin:
            self._send(403, f"<html><body>{user} is missing the Overall/Administer permission</body></html>")
            return
        self._json({"plugins": [{"shortName": p, "longName": p.title(), "version": "1.0", "active": True,
                                 "enabled": True, "deleted": False, "dependencies": []}
                                for p in sorted(self.jenkins.plugins)]})

    def job_json(self, user: str, query: dict[str, str], name: str) -> None:
        job = self.jenkins.jobs.get(name)
        if job is None:
            self._send(404, "Not Found")
            return
        if query.get("tree") == "name":
            self._json({"_class": "hudson.model.FreeStyleProject", "name": name})
            return
        url = f"{self.jenkins.url}job/{name}/"
        builds = sorted(job.builds, key=lambda b: -b.number)
        self._json({
            "_class": "hudson.model.FreeStyleProject", "name": name, "fullName": name, "url": url,
            "builds": [{"_class": "hudson.model.FreeStyleBuild", "number": b.number, "url": f"{url}{b.number}/"}
                       for b in builds],
            "firstBuild": {"number": builds[-1].number} if builds else None,
            "lastBuild": {"number": builds[0].number} if builds else None,
            "nextBuildNumber": (builds[0].number + 1) if builds else 1,
        })

    def build_json(self, user: str, query: dict[str, str], name: str, number: str) -> None:
        job = self.jenkins.jobs.get(name)
        build = next((b for b in job.builds if b.number == int(number)), None) if job else None
        if build is None:
            self._send(404, "Not Found")
            return
        self._json(build.json(f"{self.jenkins.url}job/{name}/"))

    def job_config(self, user: str, query: dict[str, str], name: str) -> None:
        job = self.jenkins.jobs.get(name)
        if job is None:
            self._send(404, "Not Found")
            return
        self._send(200, self.jenkins.stored_form(job.config), "application/xml")

    def view_json(self, user: str, query: dict[str, str], name: str) -> None:
        if name not in self.jenkins.views and name != "all":
            self._send(404, "Not Found")
            return
        self._json({"_class": "view", "name": name})

    def view_config(self, user: str, query: dict[str, str], name: str) -> None:
        if name == "all":  # Jenkins' built-in view, always there
            self._send(200, ALL_VIEW, "application/xml")
            return
        if name not in self.jenkins.views:
            self._send(404, "Not Found")
            return
        self._send(200, self.jenkins.stored_form(self.jenkins.views[name]), "application/xml")

    def queue_item(self, user: str, query: dict[str, str], number: str) -> None:
        item = self.jenkins.queue.get(int(number))
        if item is None:
            self._send(404, "Not Found")
            return
        self._json(item)

    # --- POST handlers ------------------------------------------------------------------------
    def _store(self, kind: dict[str, Any], name: str, xml: str, wrap: Any) -> None:
        error = self.jenkins.load_error(xml)
        if error:
            self._send(500, f"<html><body><h2>HTTP ERROR 500</h2><pre>{error}</pre></body></html>")
            return
        kind[name] = wrap(xml)
        self._send(200)

    def create_item(self, user: str, query: dict[str, str]) -> None:
        name = query.get("name", "")
        if name in self.jenkins.jobs:
            self._send(400, f"A job already exists with the name '{name}'")
            return
        self._store(self.jenkins.jobs, name, self._body(), Job)

    def post_job_config(self, user: str, query: dict[str, str], name: str) -> None:
        job = self.jenkins.jobs.get(name)
        if job is None:
            self._send(404, "Not Found")
            return
        xml = self._body()
        error = self.jenkins.load_error(xml)
        if error:
            self._send(500, f"<pre>{error}</pre>")
            return
        job.config = xml
        self._send(200)

    def delete_job(self, user: str, query: dict[str, str], name: str) -> None:
        if self.jenkins.jobs.pop(name, None) is None:
            self._send(404, "Not Found")
            return
        self._send(200)

    def create_view(self, user: str, query: dict[str, str]) -> None:
        name = query.get("name", "")
        if name in self.jenkins.views:
            self._send(400, f"A view already exists with the name {name}")
            return
        self._store(self.jenkins.views, name, self._body(), str)

    def post_view_config(self, user: str, query: dict[str, str], name: str) -> None:
        if name not in self.jenkins.views:
            self._send(404, "Not Found")
            return
        self._store(self.jenkins.views, name, self._body(), str)

    def delete_view(self, user: str, query: dict[str, str], name: str) -> None:
        if self.jenkins.views.pop(name, None) is None:
            self._send(404, "Not Found")
            return
        self._send(200)

    def build_with_parameters(self, user: str, query: dict[str, str], name: str) -> None:
        job = self.jenkins.jobs.get(name)
        if job is None:
            self._send(404, "Not Found")
            return
        if "ParametersDefinitionProperty" not in job.config:
            self._send(400, f"{name} is not parameterized")
            return
        number = max(self.jenkins.queue, default=100) + 1
        self.jenkins.queue[number] = {
            "_class": "hudson.model.Queue$WaitingItem", "id": number,
            "task": {"name": name, "url": f"{self.jenkins.url}job/{name}/"},
            "params": "\n" + "\n".join(f"{k}={v}" for k, v in query.items()),
            "why": "Waiting for next available executor on \u2018docker\u2019", "executable": None,
        }
        self._send(201, headers={"Location": f"{self.jenkins.url}queue/item/{number}/"})


_NAME = r"([^/]+)"
_GET_ROUTES = [(re.compile(p), h) for p, h in [
    (r"/crumbIssuer/api/json", "crumb"),
    (r"/api/json", "root"),
    (r"/(?:me|whoAmI)/api/json", "me"),
    (r"/pluginManager/api/json", "plugins"),
    (rf"/job/{_NAME}/api/json", "job_json"),
    (rf"/job/{_NAME}/(\d+)/api/json", "build_json"),
    (rf"/job/{_NAME}/config\.xml", "job_config"),
    (rf"/view/{_NAME}/api/json", "view_json"),
    (rf"/view/{_NAME}/config\.xml", "view_config"),
    (r"/queue/item/(\d+)/api/json", "queue_item"),
]]
_POST_ROUTES = [(re.compile(p), h) for p, h in [
    (r"/createItem", "create_item"),
    (rf"/job/{_NAME}/config\.xml", "post_job_config"),
    (rf"/job/{_NAME}/doDelete", "delete_job"),
    (r"/createView", "create_view"),
    (rf"/view/{_NAME}/config\.xml", "post_view_config"),
    (rf"/view/{_NAME}/doDelete", "delete_view"),
    (rf"/job/{_NAME}/buildWithParameters", "build_with_parameters"),
]]
