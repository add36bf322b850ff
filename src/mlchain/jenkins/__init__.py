"""Jenkins: render jobs/ with Jenkins Job Builder and deploy it to a controller.

``render`` turns jobs/ into config.xml files (or a Job DSL seed); ``deploy``
creates or updates only what changed on a controller; ``status`` and
``trigger`` read and start the chain there. The URL, user and API token come
from settings (environment or config file), never from the command line.
"""

from __future__ import annotations

from mlchain.jenkins.deploy import deploy, status, trigger
from mlchain.jenkins.output import render
from mlchain.jenkins.render import Definitions, Item, load, normalise_xml
from mlchain.jobdefs import default_jobs_dir

__all__ = ["Definitions", "Item", "default_jobs_dir", "deploy", "load", "normalise_xml", "render", "status",
           "trigger"]
