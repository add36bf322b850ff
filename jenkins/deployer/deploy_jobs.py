"""Deploy jobs/ (mounted at /jobs) to the controller with Jenkins Job Builder, once it answers.

The ini file with the password is written to a private temporary file and
removed afterwards; JJB's --delete-old removes only jobs it manages.
"""

from __future__ import annotations

import os
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

TEMPLATE = os.environ.get("JJB_INI_TEMPLATE", "/etc/mlchain/jenkins_jobs.ini.template")
JOBS = os.environ.get("JOBS_DIR", "/jobs")
WAIT_S = float(os.environ.get("WAIT_FOR_JENKINS_S", "600"))


def wait_for(url: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            with urllib.request.urlopen(url + "login", timeout=5):
                return
        except (urllib.error.URLError, OSError) as exc:
            if time.monotonic() > deadline:
                sys.exit(f"the controller at {url} did not answer within {WAIT_S:.0f}s: {exc}")
            time.sleep(5)


def main() -> int:
    missing = [v for v in ("JENKINS_URL", "JENKINS_USER", "JENKINS_PASSWORD") if not os.environ.get(v)]
    if missing:
        sys.exit(f"set {', '.join(missing)} (see jenkins/.env.example)")
    url = os.environ["JENKINS_URL"].rstrip("/") + "/"
    wait_for(url)
    # configparser reads % as interpolation: double it in values.
    values = {k: v.replace("%", "%%") for k, v in os.environ.items()}
    with open(TEMPLATE, encoding="utf-8") as handle:
        ini = string.Template(handle.read()).substitute(values)
    with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as conf:  # created 0600
        conf.write(ini)
    try:
        return subprocess.call(["jenkins-jobs", "--conf", conf.name, "update", "--delete-old", JOBS])
    finally:
        os.unlink(conf.name)


if __name__ == "__main__":
    sys.exit(main())
