"""A predicted batch's input rows, read once for what the observer keeps of them: each row as the
JSON object the feedback store holds (column -> value), and the numeric block drift watches.

The observer reads every row served, on a thread that shares the interpreter with the request
path; so the frame is read in one pass (its columns, their kinds, one array), and a frame of
numbers alone (the usual model input) becomes JSON through ``tolist`` and the C encoder, not
pandas' writer. Any other frame (text, dates, categories, missing or infinite values, mixed
integer and float columns, repeated names) goes through ``DataFrame.to_json``, which knows them all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas

NUMBER_KINDS = frozenset("iuf")  # numpy's kinds of numbers; booleans ('b') are not watched as numbers


@dataclass(frozen=True)
class Rows:
    frame: pandas.DataFrame
    names: list[str]           # each column's name as a JSON key
    kinds: list[str]           # each column's numpy kind
    values: np.ndarray | None  # the whole frame as one array, when every column holds numbers

    def __len__(self) -> int:
        return len(self.frame)

    def json_objects(self) -> list[str]:
        """Pure: each row as one JSON object (column -> value); a missing or infinite value is null."""
        if not len(self.frame):
            return []
        values = self.values
        if (values is not None and len(set(self.kinds)) == 1 and len(set(self.names)) == len(self.names)
                and (values.dtype.kind != "f" or np.isfinite(values).all())):
            names = self.names
            return [json.dumps(dict(zip(names, row, strict=True)), separators=(",", ":")) for row in values.tolist()]
        records = json.loads(self.frame.to_json(orient="records", double_precision=15))
        return [json.dumps(record, separators=(",", ":")) for record in records]

    def numeric(self) -> tuple[list[str], np.ndarray]:
        """Pure: the columns holding numbers (booleans aside), finite in every row, and their values
        as one float array (rows x columns)."""
        if self.values is not None:
            names, values = self.names, self.values.astype(float, copy=False)
        else:
            picked = [i for i, kind in enumerate(self.kinds) if kind in NUMBER_KINDS]
            if not picked:
                return [], np.empty((len(self.frame), 0))
            names = [self.names[i] for i in picked]
            values = self.frame.iloc[:, picked].to_numpy(dtype=float)
        finite = np.isfinite(values).all(axis=0)
        if finite.all():
            return names, values
        return [n for n, ok in zip(names, finite, strict=True) if ok], values[:, finite]


def read_rows(frame: pandas.DataFrame) -> Rows:
    """Pure: ``frame`` read once (see the module's doc)."""
    names = [str(c) for c in frame.columns.tolist()]
    kinds = [dtype.kind for dtype in frame.dtypes.tolist()]
    values = None
    if kinds and all(kind in NUMBER_KINDS for kind in kinds):
        block = frame.to_numpy()
        if block.dtype.kind in NUMBER_KINDS:  # (a nullable integer column with a gap comes as objects)
            values = block
    return Rows(frame, names, kinds, values)
