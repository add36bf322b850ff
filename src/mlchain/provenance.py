"""Where a trial's metric came from: ``provenance.json``, written by mlchain-train inside the
training (hostile, so read through :mod:`mlchain.outputs` and parsed to known keys only).

Its ``text`` reads ``accuracy 0.9300 from model.evaluate(x_test, y_test) at mnist.py:41``; its
``source`` is ``sdk.report``, ``held-out`` or ``validation`` (:mod:`mlchain.capture`), or
null when no metric was found (``text`` then says what was looked for).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlchain import contract, outputs

MAX_PROVENANCE_TEXT = 2000
PROVENANCE_KEYS = {"metric": str, "source": str, "value": float, "call": str, "where": str, "text": str,
                   "model": str, "model_files": list}


def parse_provenance(text: str) -> dict[str, Any] | None:
    """Pure: provenance.json as the training wrote it (hostile) -> its known keys, strings cut to a
    bound, wrong types dropped; None when it is not a JSON object."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    out: dict[str, Any] = {}
    for key, kind in PROVENANCE_KEYS.items():
        item = value.get(key)
        if kind is float and isinstance(item, int | float) and not isinstance(item, bool):
            out[key] = float(item)
        elif kind is str and isinstance(item, str):
            out[key] = item[:MAX_PROVENANCE_TEXT]
        elif kind is list and isinstance(item, list):
            out[key] = [str(v)[:300] for v in item[:100] if isinstance(v, str)]
    return out


def read_provenance(output_dir: Path) -> dict[str, Any] | None:
    """The trial's provenance record, read through the checked reader (None: none, or refused)."""
    try:
        text = outputs.read_text(output_dir / contract.PROVENANCE_FILE)
    except outputs.UnsafeOutput:
        return None
    return parse_provenance(text) if text is not None else None
