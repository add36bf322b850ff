"""GitHub push receiver (``mlchain serve``): signature check, durable queue, workers, dashboard.

- ``signature``: the HMAC of GitHub's ``X-Hub-Signature-256`` (pure);
- ``payload``: what a delivery asks for, and whether to build it (pure);
- ``queue``: the SQLite queue (``$MLCHAIN_HOME/webhook.db``), scheduling and workers;
- ``dashboard``: the pipeline view of runs, HTML and JSON;
- ``server``: the FastAPI app and ``serve``.
"""

from __future__ import annotations
