"""GitHub's delivery signature: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``.

Pure functions. The HMAC covers the body exactly as it arrived (bytes, before any
JSON parsing), so verification must be handed the raw body.
"""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "sha256="


def sign(secret: bytes, body: bytes) -> str:
    """The header value GitHub would send for ``body`` signed with ``secret``."""
    return PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    """True when ``header`` is the signature of ``body``; constant time in the header's content.

    Both sides are compared as bytes: ``compare_digest`` refuses non-ASCII ``str``,
    and a header is whatever a client chose to send.
    """
    if not header:
        return False
    expected = sign(secret, body).encode("ascii")
    return hmac.compare_digest(expected, header.strip().encode("utf-8", "replace"))
