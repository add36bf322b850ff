"""MLflow's scoring protocol: a request body in, the model's input out; predictions back to JSON.

The four JSON formats (``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``,
with optional ``params``) are parsed by MLflow's own ``infer_and_parse_data``, so a client of
``mlflow models serve`` works unchanged; CSV goes through MLflow's ``parse_csv_input``. What this
module adds is the edge: every way a body can be wrong becomes :class:`BadInput` with what was
wrong and how to send it right (never a 500), and a check of the parsed input against what the
model takes (:func:`input_problem`), made before the input joins a batch with others.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlchain.serving.rows import JsonRows

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
PARAMS_KEY = "params"
JSON_TYPES = ("application/json", "")
CSV_TYPE = "text/csv"
EXAMPLE = '{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}'


class BadInput(Exception):
    """A request the server will not predict on: answered 400 (or ``status``) with ``message``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class InputSpec:
    """What the model takes, as far as it is known: column names, or a per-row tensor shape, or
    only a feature count; ``numeric`` when every feature must be a number."""

    columns: tuple[str, ...] | None = None
    n_features: int | None = None
    row_shape: tuple[int, ...] | None = None  # -1: any size on that axis
    numeric: bool = False


CSV = "csv"  # a request's format when its body was CSV (parsed already)


@dataclass(frozen=True)
class Request:
    """A request read as far as the event loop needs: its format, the JSON value under that key
    (parsed into the model's input later, in the batch), its rows, and the group of requests it
    can be merged with (None: predicted alone)."""

    fmt: str
    payload: Any
    params: dict[str, Any] | None
    rows: int
    group: tuple[Any, ...] | None


def read_request(body: bytes, content_type: str | None) -> Request:
    """The request in a body, or :class:`BadInput` saying what was wrong."""
    from mlflow.pyfunc.scoring_server import parse_csv_input

    media = (content_type or "").split(";")[0].strip().lower()
    if media == CSV_TYPE:
        try:
            frame = parse_csv_input(io.StringIO(body.decode("utf-8")))
        except Exception as exc:  # noqa: BLE001 - MLflow wraps pandas' error: any failure here is the body's
            raise BadInput(f"the CSV body could not be read: {_reason(exc)}") from None
        if frame.empty:
            raise BadInput("the CSV body holds no rows: send a header line and at least one row")
        return Request(CSV, frame, None, len(frame), None)
    if media not in JSON_TYPES:
        raise BadInput(f"unsupported content type {media!r}: send application/json (MLflow's scoring "
                       f"protocol, e.g. {EXAMPLE}) or text/csv", status=415)
    if not body.strip():
        raise BadInput(f"the body is empty: send a JSON object such as {EXAMPLE}")
    try:
        decoded = json.loads(body)
    except UnicodeDecodeError:
        raise BadInput("the body is not UTF-8 text: send a JSON object encoded as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"the body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
                       f"send a JSON object such as {EXAMPLE}") from None
    except RecursionError:
        raise BadInput("the body's JSON is nested too deeply: send rows of values") from None
    if not isinstance(decoded, dict):
        raise BadInput(f"the body is a JSON {type(decoded).__name__}, not an object: wrap the rows in one "
                       f"of {', '.join(FORMATS)}, e.g. {EXAMPLE}")
    formats = [key for key in FORMATS if key in decoded]
    unknown = sorted(str(key) for key in decoded if key not in FORMATS and key != PARAMS_KEY)
    if unknown:
        raise BadInput(f"unknown key(s) {', '.join(map(repr, unknown))}: the body takes exactly one of "
                       f"{', '.join(FORMATS)} (and optionally {PARAMS_KEY!r})")
    if len(formats) != 1:
        found = f"both {' and '.join(formats)}" if formats else "none of them"
        raise BadInput(f"the body must have exactly one of {', '.join(FORMATS)}; it has {found}")
    params = decoded.get(PARAMS_KEY)
    if params is not None and not isinstance(params, dict):
        raise BadInput(f"{PARAMS_KEY!r} must be a JSON object of parameter names to values")
    fmt = formats[0]
    payload = decoded[fmt]
    rows, group = _rows_and_group(fmt, payload)
    if rows == 0:
        raise BadInput(f"{fmt!r} holds no rows: send at least one")
    return Request(fmt, payload, params or None, rows, None if params else group)


def _rows_and_group(fmt: str, payload: Any) -> tuple[int, tuple[Any, ...] | None]:
    """How many rows a payload holds and which requests it can merge with, read from its shape
    alone; a payload of another shape is predicted alone (MLflow's parser then says what is wrong)."""
    if fmt == "dataframe_split":
        if isinstance(payload, dict) and isinstance(payload.get("data"), list) and set(payload) <= {"columns", "data"}:
            columns = payload.get("columns")
            if columns is None or (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
                return len(payload["data"]), (fmt, tuple(columns) if columns is not None else None)
            return len(payload["data"]), None
        return 1, None
    if isinstance(payload, list):
        if fmt == "dataframe_records":
            keys = tuple(payload[0]) if payload and isinstance(payload[0], dict) else None
            same = keys is not None and all(isinstance(r, dict) and tuple(r) == keys for r in payload)
            return len(payload), (fmt, keys) if same else None
        return len(payload), (fmt,)
    return 1, None  # a scalar, or named tensors: as MLflow reads them, alone


def merge(requests: Sequence[Request]) -> Any:
    """The payload of requests of one group, as one request of the same format."""
    first = requests[0]
    if len(requests) == 1:
        return first.payload
    if first.fmt == "dataframe_split":
        merged: dict[str, Any] = {"data": [row for r in requests for row in r.payload["data"]]}
        if "columns" in first.payload:
            merged["columns"] = first.payload["columns"]
        return merged
    return [row for r in requests for row in r.payload]


def model_input(fmt: str, payload: Any, schema: Any = None) -> Any:
    """A payload parsed into the model's input by MLflow's own parser, or BadInput."""
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    if fmt == CSV:
        return payload
    try:
        return infer_and_parse_data({fmt: payload}, schema)
    except Exception as exc:  # noqa: BLE001 - MLflow's and pandas' parse errors: the body's shape was wrong
        raise BadInput(f"{fmt!r} could not be read as the model's input: {_reason(exc)}") from None


def positional(data: Any, spec: InputSpec) -> Any:
    """A numeric frame as the plain array a model fitted without column names reads anyway
    (positionally): the same predictions, without a warning per call."""
    if (isinstance(data, pd.DataFrame) and spec.columns is None and spec.n_features is not None
            and all(dtype.kind in "biuf" for dtype in data.dtypes)):
        return data.to_numpy()
    return data


def input_problem(data: Any, spec: InputSpec) -> str | None:
    """What is wrong with parsed input ``data`` for a model that takes ``spec``, or None."""
    if isinstance(data, pd.DataFrame):
        return _frame_problem(data, spec)
    if isinstance(data, np.ndarray):
        return _array_problem(data, spec)
    return None  # named tensors: the model's own checks decide


def _frame_problem(frame: pd.DataFrame, spec: InputSpec) -> str | None:
    names = [str(c) for c in frame.columns]
    if spec.columns is not None:
        missing = [c for c in spec.columns if c not in names]
        extra = [c for c in names if c not in spec.columns]
        if missing or extra:
            parts = ([f"missing column(s) {missing[:10]}"] if missing else []) + \
                    ([f"unknown column(s) {extra[:10]}"] if extra else [])
            return f"{'; '.join(parts)}: the model takes the columns {list(spec.columns)[:20]}"
    elif spec.n_features is not None and len(names) != spec.n_features:
        return f"{len(names)} column(s), but the model takes {spec.n_features} features per row"
    if spec.numeric:
        for name, dtype in zip(names, frame.dtypes, strict=True):
            if dtype.kind not in "biuf":
                return f"column {name!r} holds {dtype} values, but the model takes numbers only"
    return None


def _array_problem(array: np.ndarray, spec: InputSpec) -> str | None:
    if array.dtype == object:
        return "the rows are not all of the same length (or mix numbers with other values)"
    expected: tuple[int, ...] | None = spec.row_shape
    if expected is None and spec.n_features is not None:
        expected = (spec.n_features,)
    if expected is not None:
        row = tuple(array.shape[1:])
        if len(row) != len(expected) or any(e not in (-1, r) for e, r in zip(expected, row, strict=False)):
            shown = tuple("any" if e == -1 else e for e in expected)
            return (f"each row has shape {row}, but the model takes rows of shape {shown} "
                    f"(send a list of rows)")
    if spec.numeric and array.dtype.kind not in "biuf":
        return f"the values are {array.dtype}, but the model takes numbers only"
    return None


def jsonable(predictions: Any) -> Any:
    """Predictions as JSON values (a DataFrame as records, as MLflow's server answers)."""
    if isinstance(predictions, pd.DataFrame):
        return [{str(k): _scalar(v) for k, v in row.items()} for row in predictions.to_dict(orient="records")]
    if isinstance(predictions, pd.Series):
        return [_scalar(v) for v in predictions.tolist()]
    if isinstance(predictions, np.ndarray):
        if predictions.dtype.kind in "biu" or (predictions.dtype.kind == "f" and np.isfinite(predictions).all()):
            return predictions.tolist()  # nothing to replace: numpy converts it whole
        return _finite(predictions.tolist())
    if isinstance(predictions, Mapping):
        return {str(k): jsonable(v) for k, v in predictions.items()}
    if isinstance(predictions, (list, tuple)):
        return [jsonable(v) for v in predictions]
    return _scalar(predictions)


def frame_of(data: Any) -> pd.DataFrame:
    """The input rows as a DataFrame (for the observer): tensors flattened to one row each."""
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, np.ndarray):
        return pd.DataFrame(data.reshape(len(data), -1) if data.ndim != 2 else data)
    if isinstance(data, Mapping):
        return pd.DataFrame({str(k): list(np.asarray(v).reshape(len(v), -1)) for k, v in data.items()})
    return pd.DataFrame({"input": list(data)})


def observed_rows(fmt: str, payload: Any, data: Any) -> JsonRows | pd.DataFrame:
    """What the observer reads of a predicted batch: rows that came as JSON with column names as
    the request held them (no pandas needed to keep and watch them), else the model's input as a
    frame. Only shapes are looked at here: this runs on the request path."""
    if fmt == "dataframe_split" and isinstance(payload, dict):
        columns, rows = payload.get("columns"), payload.get("data")
        if (isinstance(columns, list) and isinstance(rows, list) and all(isinstance(c, str) for c in columns)
                and all(isinstance(r, list) for r in rows)):
            return JsonRows(columns, rows, frame_of(data))
    elif fmt == "dataframe_records" and isinstance(payload, list) and payload and isinstance(payload[0], dict):
        keys = tuple(payload[0])
        if all(isinstance(r, dict) and tuple(r) == keys for r in payload):
            return JsonRows(list(keys), payload, frame_of(data))
    return frame_of(data)


def _scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN: as null, which every client reads
    return value


def _finite(value: Any) -> Any:
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return _scalar(value)


def rows_of(data: Any) -> int:
    """How many rows a parsed model input holds."""
    if isinstance(data, (pd.DataFrame, np.ndarray)):
        return int(data.shape[0]) if data.ndim else 1
    if isinstance(data, Mapping):
        return max((len(v) if hasattr(v, "__len__") else 1 for v in data.values()), default=0)
    return len(data) if hasattr(data, "__len__") else 1


def _reason(exc: BaseException) -> str:
    """An exception's message, first lines only (MLflow appends a long note on its old protocol)."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    text = str(text).split(". IMPORTANT:")[0]
    lines = [line for line in text.strip().splitlines() if line.strip()][:3]
    return " ".join(lines)[:500]
