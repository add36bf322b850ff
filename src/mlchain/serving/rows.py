"""A predicted batch's input rows, read once for what the observer keeps of them: each row as the
JSON object the feedback store holds (column -> value), and the numeric block drift watches.

The observer reads every row served, on a thread that shares the interpreter with the request
path, so the rows are read the cheapest way they allow. Rows that came as JSON with column names
(``dataframe_split`` with ``columns``, ``dataframe_records``) are kept as the request held them:
each row is one ``json.dumps`` of its names and values, and rows of numbers are one ``numpy``
array made from the lists, with no pandas call at all. Other input is read from the model's input
frame (:class:`FrameRows`): in one pass (its columns, their kinds, one array), a frame of
numbers alone through ``tolist`` and the C encoder, any other frame (text, dates, categories,
missing or infinite values, mixed integer and float columns, repeated names) through
``DataFrame.to_json``, which knows them all. JSON rows the cheap way cannot take (ragged rows,
repeated names) are read from the frame as well.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

if TYPE_CHECKING:
    import pandas

NUMBER_KINDS = frozenset("iuf")  # numpy's kinds of numbers; booleans ('b') are not watched as numbers
NUMBER_TYPES = frozenset({int, float, type(None)})  # a JSON column of these is numbers (None: missing)
_COMPACT = (",", ":")


class FrameRows:
    """Rows read from a DataFrame."""

    def __init__(self, frame: pandas.DataFrame) -> None:
        self.frame = frame
        self.names = [str(c) for c in frame.columns.tolist()]  # each column's name as a JSON key
        self.kinds = [dtype.kind for dtype in frame.dtypes.tolist()]
        self.values: np.ndarray | None = None  # the whole frame as one array, when every column holds numbers
        if self.kinds and all(kind in NUMBER_KINDS for kind in self.kinds):
            block = frame.to_numpy()
            if block.dtype.kind in NUMBER_KINDS:  # (a nullable integer column with a gap comes as objects)
                self.values = block

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
            return [json.dumps(dict(zip(names, row, strict=True)), separators=_COMPACT) for row in values.tolist()]
        records = json.loads(self.frame.to_json(orient="records", double_precision=15))
        return [json.dumps(record, separators=_COMPACT) for record in records]

    def numeric(self) -> tuple[list[str], np.ndarray]:
        """Pure: the columns holding numbers (booleans aside), finite in every row, and their values
        as one float array (rows x columns)."""
        if self.values is not None:
            return finite_columns(self.names, self.values.astype(float, copy=False))
        picked = [i for i, kind in enumerate(self.kinds) if kind in NUMBER_KINDS]
        if not picked:
            return [], np.empty((len(self.frame), 0))
        return finite_columns([self.names[i] for i in picked], self.frame.iloc[:, picked].to_numpy(dtype=float))


class JsonRows:
    """Rows as a request's JSON held them: names and each row's values in their order (a list,
    or a dict with exactly those keys in that order), with the model's input frame for what the
    cheap way cannot take."""

    def __init__(self, names: Sequence[str], rows: Sequence[Sequence[Any] | Mapping[str, Any]],
                 frame: pandas.DataFrame) -> None:
        self.names = list(names)
        self.rows = rows
        self.frame = frame
        self._fallback: FrameRows | None = None
        self._read: list[list[Any]] | None = None  # the rows as lists, read once for both uses

    def __len__(self) -> int:
        return len(self.rows)

    def _lists(self) -> list[list[Any]]:
        if self._read is None:
            n = len(self.names)
            lists = [list(row.values()) if isinstance(row, Mapping) else list(row) for row in self.rows]
            if len(set(self.names)) != n or any(len(row) != n for row in lists):
                raise ValueError("the rows do not match their names")
            self._read = lists
        return self._read

    def _frame_rows(self) -> FrameRows:
        if self._fallback is None:
            self._fallback = FrameRows(self.frame)
        return self._fallback

    def json_objects(self) -> list[str]:
        """Pure: each row as one JSON object (column -> value); a missing or infinite number is null."""
        try:
            lists = self._lists()
        except ValueError:
            return self._frame_rows().json_objects()
        names = self.names
        texts = []
        for row in lists:
            try:
                texts.append(json.dumps(dict(zip(names, row, strict=True)), separators=_COMPACT, allow_nan=False))
            except ValueError:  # NaN or infinity (Python's JSON reader takes them): null, as the frame's writer
                texts.append(json.dumps(dict(zip(names, map(_finite_or_none, row), strict=True)),
                                        separators=_COMPACT))
        return texts

    def numeric(self) -> tuple[list[str], np.ndarray]:
        """Pure: as :meth:`FrameRows.numeric`. Rows of numbers alone (or missing values) are one
        array made from the lists; any other value (text, a boolean) means the model's input frame
        decides which columns are numbers (its schema may have made numbers of text)."""
        try:
            lists = self._lists()
            if {type(v) for row in lists for v in row} <= NUMBER_TYPES:
                return finite_columns(self.names, np.array(lists, dtype=float).reshape(len(lists), len(self.names)))
        except (ValueError, TypeError, OverflowError):
            pass
        return self._frame_rows().numeric()


Rows: TypeAlias = FrameRows | JsonRows


def finite_columns(names: list[str], values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Pure: the columns finite in every row."""
    finite = np.isfinite(values).all(axis=0)
    if finite.all():
        return names, values
    return [n for n, ok in zip(names, finite, strict=True) if ok], values[:, finite]


def read_rows(inputs: pandas.DataFrame | Rows) -> Rows:
    """The rows of a frame (rows already read stay as they are)."""
    if isinstance(inputs, (FrameRows, JsonRows)):
        return inputs
    return FrameRows(inputs)


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value
