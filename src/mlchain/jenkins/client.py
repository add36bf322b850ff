"""The controller, through python-jenkins, with its errors turned into messages that say what to fix.

Every request goes through ``Controller._do``: python-jenkins folds most HTTP
failures into one exception type, so the client records the last failed
answer (status and body) and a table maps it to what the user should do.
The API token is only ever in the HTTP Authorization header: messages are
scrubbed of it anyway, and errors are raised outside the ``except`` block so
no exception chain keeps a request (and its headers) alive.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests

from mlchain.config import Settings
from mlchain.errors import ConfigError, JenkinsError

T = TypeVar("T")

# python-jenkins has no type information. Imported by name so that mypy, run
# from a checkout, does not take the repository's jenkins/ folder (the
# controller as code) for it.
jenkins: Any = importlib.import_module("jenkins")

TIMEOUT_S = 30.0

# Java class (or package) prefixes in a config.xml -> the plugin that provides them.
PLUGIN_OF_CLASS: dict[str, str] = {
    "hudson.plugins.git.": "git",
    "com.cloudbees.jenkins.GitHubPushTrigger": "github",
    "org.jenkinsci.plugins.gwt.": "generic-webhook-trigger",
    "hudson.plugins.parameterizedtrigger.": "parameterized-trigger",
    "au.com.centrumsystems.hudson.plugin.buildpipeline.": "build-pipeline-plugin",
    "hudson.plugins.emailext.": "email-ext",
    "javaposse.jobdsl.": "job-dsl",
}

# HTTP status -> (what happened, how to fix it). {url} and {user} are filled in.
STATUS_FIXES: dict[int, tuple[str, str]] = {
    400: ("the controller rejected the request (400)",
          "read the controller's answer above; the XML may use a setting the installed plugin does not know"),
    401: ("the controller rejected the credentials of user {user!r} (401)",
          ("check MLCHAIN_JENKINS_USER and MLCHAIN_JENKINS_TOKEN: the token is an API token made at "
           "{url}user/<user>/security (Add new Token), not the password")),
    403: ("user {user!r} is not allowed to do this (403)",
          ("give the user Overall/Read, Job/Read, Create, Configure, Delete and Build, and View/Configure "
           "(or use an administrator's API token); without MLCHAIN_JENKINS_USER the request is anonymous")),
    404: ("the controller answered 404 (not found)",
          "check MLCHAIN_JENKINS_URL, including any prefix Jenkins runs under (e.g. http://host:8080/jenkins/)"),
    500: ("the controller failed with an internal error (500)",
          "read the controller's log (Manage Jenkins > System Log) for the stack trace"),
    502: ("a proxy in front of the controller could not reach it (502)",
          "check that Jenkins is running behind {url}"),
    503: ("the controller is not ready (503)", "Jenkins answers 503 while it starts; wait a minute and retry"),
    504: ("a proxy in front of the controller timed out (504)", "check that Jenkins is running behind {url}"),
}

_MISSING_CLASS = re.compile(r"(?:CannotResolveClassException|ClassNotFoundException|NoClassDefFoundError)"
                            r"[:\s]+([\w.$]+)")


def plugin_for_class(name: str) -> str | None:
    return next((plugin for prefix, plugin in PLUGIN_OF_CLASS.items() if name.startswith(prefix)), None)


@dataclass(frozen=True)
class Failure:
    """The last answer with an HTTP error status."""

    status: int
    body: str


class _Client(jenkins.Jenkins):
    """python-jenkins, remembering the last failed answer so errors can be explained."""

    last_failure: Failure | None = None

    def _response_handler(self, response: requests.Response) -> Any:
        self.last_failure = Failure(response.status_code, response.text) if response.status_code >= 400 else None
        return super()._response_handler(response)


def _checked_url(url: str | None) -> str:
    if not url:
        raise ConfigError("no Jenkins controller is configured",
                          hint="set MLCHAIN_JENKINS_URL (e.g. http://localhost:8080/) or jenkins_url "
                               "in the config file")
    parts = urlsplit(url)
    if parts.username or parts.password:
        # Do not echo the URL: it holds a secret.
        raise ConfigError("MLCHAIN_JENKINS_URL must not contain a user or token",
                          hint="put the user in MLCHAIN_JENKINS_USER and the API token in MLCHAIN_JENKINS_TOKEN")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"MLCHAIN_JENKINS_URL {url!r} is not an http(s) URL",
                          hint="use the address you open Jenkins at, e.g. http://localhost:8080/")
    return url if url.endswith("/") else url + "/"


class Controller:
    """A Jenkins controller reached with the URL, user and API token from settings."""

    def __init__(self, settings: Settings) -> None:
        self.url = _checked_url(settings.jenkins_url)
        self.user = settings.jenkins_user
        token = settings.jenkins_token.get_secret_value() if settings.jenkins_token else None
        if bool(self.user) != bool(token):
            missing = "MLCHAIN_JENKINS_TOKEN" if self.user else "MLCHAIN_JENKINS_USER"
            raise ConfigError(f"{missing} is not set",
                              hint="set both MLCHAIN_JENKINS_USER and MLCHAIN_JENKINS_TOKEN (an API token), "
                                   "or neither for anonymous access")
        # Replacing a very short "token" would mangle every message; real API tokens are 34 characters.
        self._secrets = [token] if token and len(token) >= 8 else []
        self._client = _Client(self.url, self.user, token, timeout=TIMEOUT_S)

    # --- error handling -------------------------------------------------------------
    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _explain(self, doing: str, exc: Exception, not_found: str | None) -> JenkinsError:
        failure = self._client.last_failure
        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            failure = Failure(exc.response.status_code, exc.response.text)
        if isinstance(exc, requests.ConnectionError | jenkins.TimeoutException | requests.Timeout):
            return JenkinsError(f"cannot {doing}: the controller at {self.url} does not answer",
                                hint="start it (docker compose -f jenkins/docker-compose.yml up -d) "
                                     "or fix MLCHAIN_JENKINS_URL")
        if failure is None:
            return JenkinsError(self.scrub(f"cannot {doing}: {exc}"))
        return self._explain_status(doing, failure, not_found)

    def _explain_status(self, doing: str, failure: Failure, not_found: str | None) -> JenkinsError:
        missing = _MISSING_CLASS.search(failure.body)
        if missing:
            cls = missing.group(1)
            plugin = plugin_for_class(cls)
            return JenkinsError(
                f"cannot {doing}: the controller cannot load class {cls}"
                + (f" (plugin {plugin!r} is missing or disabled)" if plugin else ""),
                hint=f"install the {plugin or 'plugin providing it'} plugin (jenkins/plugins.txt lists all the "
                     "chain needs) and restart Jenkins")
        what, fix = STATUS_FIXES.get(failure.status, (f"the controller answered {failure.status}",
                                                      "read the controller's log"))
        if failure.status == 404 and not_found:
            fix = not_found
        message = f"cannot {doing}: " + what.format(url=self.url, user=self.user or "anonymous")
        return JenkinsError(self.scrub(message), hint=self.scrub(fix.format(url=self.url, user=self.user)))

    def _do(self, doing: str, call: Callable[[], T], not_found: str | None = None) -> T:
        failure: JenkinsError | None = None
        try:
            return call()
        except (jenkins.JenkinsException, requests.RequestException) as exc:
            failure = self._explain(doing, exc, not_found)
        raise failure  # outside the except block: no chained exception keeps the request

    # --- requests ------------------------------------------------------------------
    def whoami(self) -> str:
        me = self._do(f"log in to {self.url}", self._client.get_whoami)
        return str(me.get("id") or me.get("fullName") or "anonymous")

    def plugins(self) -> dict[str, bool] | None:
        """Installed plugins (short name -> active), or None when this user may not list them."""
        try:
            found = self._do("list the installed plugins", lambda: self._client.get_plugins(depth=1))
        except JenkinsError:
            if self._client.last_failure and self._client.last_failure.status == 403:
                return None
            raise
        return {str(p["shortName"]): bool(p.get("active", True) and p.get("enabled", True)) for p in found.values()}

    def job_names(self) -> set[str]:
        jobs = self._do("list the jobs", lambda: self._client.get_all_jobs(folder_depth=0))
        return {str(job["fullname"]) for job in jobs}

    def view_names(self) -> set[str]:
        return {str(view["name"]) for view in self._do("list the views", self._client.get_views)}

    def job_config(self, name: str) -> str:
        return str(self._do(f"read job {name}", lambda: self._client.get_job_config(name)))

    def view_config(self, name: str) -> str:
        return str(self._do(f"read view {name}", lambda: self._client.get_view_config(name)))

    def create_job(self, name: str, xml: str) -> None:
        self._do(f"create job {name}", lambda: self._client.create_job(name, xml))

    def update_job(self, name: str, xml: str) -> None:
        self._do(f"update job {name}", lambda: self._client.reconfig_job(name, xml))

    def delete_job(self, name: str) -> None:
        self._do(f"delete job {name}", lambda: self._client.delete_job(name))

    def create_view(self, name: str, xml: str) -> None:
        self._do(f"create view {name}", lambda: self._client.create_view(name, xml))

    def update_view(self, name: str, xml: str) -> None:
        self._do(f"update view {name}", lambda: self._client.reconfig_view(name, xml))

    def delete_view(self, name: str) -> None:
        self._do(f"delete view {name}", lambda: self._client.delete_view(name))

    def job_info(self, name: str) -> dict[str, Any] | None:
        """The job's JSON, or None when the controller has no such job."""
        if not self._do(f"look up job {name}", lambda: self._client.get_job_name(name)):
            return None
        return dict(self._do(f"read job {name}", lambda: self._client.get_job_info(name)))

    def build_info(self, name: str, number: int) -> dict[str, Any]:
        return dict(self._do(f"read build {name} #{number}", lambda: self._client.get_build_info(name, number)))

    def build(self, name: str, parameters: dict[str, str], not_found: str) -> int:
        return int(self._do(f"start {name}", lambda: self._client.build_job(name, parameters),
                            not_found=not_found))

    def queue_item(self, number: int) -> dict[str, Any]:
        return dict(self._do(f"read queue item {number}", lambda: self._client.get_queue_item(number)))
