"""Reading an uploaded dataset (CSV, NPY, NPZ, JSON) into checked arrays.

``parse(data, format=..., target=..., task=...)`` returns a :class:`Table`: ``X``
(float64, one row per sample), ``y`` (class indices ``0..k-1`` with ``classes`` the
original labels, or float64 targets) and what the upload knew (feature names, the
target column). Every refusal is a :class:`SpecValidationError` (a 422) whose
details name the place as the user sees it: rows count from 1 (in a CSV the header
is row 1, as in an editor or a spreadsheet), CSV columns by their header name,
array columns from 1: ``file.row 17.column "petal_width"``, ``X.row 3.column 2``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from services.specs.errors import SpecValidationError

FORMATS = ("csv", "npy", "npz", "json")
Task = Literal["classification", "regression"]
#: more distinct labels than this is rather a regression target (or an id column)
MAX_CLASSES = 1000


@dataclass
class Table:
    """Checked arrays of one dataset, and what the upload said about them."""

    X: np.ndarray  # (n, f) float64, finite
    y: np.ndarray  # (n,) int64 class indices, or (n,) / (n, d) float64 targets
    task: str
    classes: list[Any] | None = None  # the label of each class index
    feature_names: list[str] | None = None
    target: str | None = None  # the CSV column or NPY column index the labels came from
    format: str = "csv"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def class_counts(self) -> list[int] | None:
        if self.classes is None:
            return None
        return np.bincount(self.y, minlength=len(self.classes)).tolist()


def refuse(loc: str, msg: str, message: str = "invalid dataset") -> SpecValidationError:
    return SpecValidationError(message, [{"loc": loc, "msg": msg}])


def detect_format(content_type: str | None, filename: str | None, data: bytes) -> str:
    """The format of an upload from its file name, else its content type, else its bytes."""
    name = (filename or "").lower()
    for fmt in FORMATS:
        if name.endswith(f".{fmt}"):
            return fmt
    kind = (content_type or "").split(";")[0].strip().lower()
    by_type = {
        "text/csv": "csv",
        "application/csv": "csv",
        "application/json": "json",
        "application/x-npy": "npy",
        "application/x-npz": "npz",
        "application/zip": "npz",
    }
    if kind in by_type:
        return by_type[kind]
    if data.startswith(b"\x93NUMPY"):
        return "npy"
    if data.startswith(b"PK\x03\x04"):
        return "npz"
    if data.lstrip()[:1] == b"{":
        return "json"
    return "csv"


def parse(
    data: bytes, *, format: str, target: str | None = None, task: Task | None = None
) -> Table:
    """Read and check ``data`` in ``format``; ``target`` names the label column of a
    CSV (default: the last) or an NPY (an index; default: the last)."""
    if format not in FORMATS:
        raise refuse("format", f"unknown format {format!r}; one of: {', '.join(FORMATS)}")
    if not data:
        raise refuse("file", "is empty")
    reader = {"csv": _csv, "npy": _npy, "npz": _npz, "json": _json}[format]
    table = reader(data, target, task)
    table.format = format
    return table


# --- CSV ------------------------------------------------------------------------------


def _csv(data: bytes, target: str | None, task: Task | None) -> Table:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise refuse("file", f"is not UTF-8 text (byte {err.start + 1})") from None
    try:
        dialect: Any = csv.Sniffer().sniff(text[:8192], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    try:
        header = next(reader)
    except StopIteration:
        raise refuse("file", "is empty") from None
    except csv.Error as err:
        raise refuse("file.row 1", f"is not CSV: {err}") from None
    header = [name.strip() for name in header]
    if len(header) < 2:
        raise refuse("file.row 1", "needs a header row with at least 2 columns (features, target)")
    for i, name in enumerate(header):
        if not name:
            raise refuse(f"file.row 1.column {i + 1}", "has no name")
        if name in header[:i]:
            raise refuse(f'file.row 1.column "{name}"', "is named twice")
    if target is None:
        t = len(header) - 1
    elif target in header:
        t = header.index(target)
    else:
        raise refuse("target", f"no column {target!r}; the columns are {', '.join(header)}")
    features = [i for i in range(len(header)) if i != t]
    feature_names = [header[i] for i in features]

    chunks: list[np.ndarray] = []
    labels: list[str] = []
    label_lines: list[int] = []
    chunk: list[list[str]] = []
    lines: list[int] = []
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank lines
            line = reader.line_num
            if len(row) != len(header):
                raise refuse(
                    f"file.row {line}",
                    f"has {len(row)} values, the header has {len(header)} columns",
                )
            chunk.append([row[i] for i in features])
            lines.append(line)
            labels.append(row[t].strip())
            label_lines.append(line)
            if len(chunk) >= 8192:
                chunks.append(_numbers(chunk, lines, feature_names))
                chunk, lines = [], []
    except csv.Error as err:
        raise refuse(f"file.row {reader.line_num}", f"is not CSV: {err}") from None
    if chunk:
        chunks.append(_numbers(chunk, lines, feature_names))
    if len(labels) < 2:
        raise refuse("file", f"has {len(labels)} data rows; at least 2 are needed")
    X = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    column = f'file.column "{header[t]}"'
    y, classes, kind = _csv_labels(labels, label_lines, header[t], task)
    table = Table(X, y, kind, classes, feature_names, header[t])
    _check_classes(table, column)
    return table


def _numbers(rows: list[list[str]], lines: list[int], names: list[str]) -> np.ndarray:
    """A chunk of CSV feature cells as float64 (numpy parses them in C); the first bad
    cell named by row and column."""
    try:
        X = np.array(rows, dtype=np.float64)
    except ValueError:
        X = None
    if X is not None and X.ndim == 2 and np.isfinite(X).all():
        return X
    for row, line in zip(rows, lines, strict=True):
        for value, name in zip(row, names, strict=True):
            problem = _not_a_number(value)
            if problem:
                raise refuse(f'file.row {line}.column "{name}"', problem)
    raise AssertionError("a chunk failed to parse without a bad cell")  # pragma: no cover


def _not_a_number(value: str) -> str | None:
    text = value.strip()
    if not text:
        return "is empty (missing values are not allowed)"
    try:
        number = float(text)
    except ValueError:
        return f"{json.dumps(value)} is not a number"
    if not math.isfinite(number):
        return f"{json.dumps(value)} is not a finite number"
    return None


def _csv_labels(
    labels: list[str], lines: list[int], name: str, task: Task | None
) -> tuple[np.ndarray, list[Any] | None, str]:
    """The target column: integers or text are class labels, other numbers targets."""
    for label, line in zip(labels, lines, strict=True):
        if not label:
            raise refuse(f'file.row {line}.column "{name}"', "is empty (every row needs a target)")
    ints = _as_ints(labels)
    if task is None:
        if ints is not None:
            task = "classification"
        else:
            numbers = _as_floats(labels)
            task = "regression" if numbers is not None else "classification"
    if task == "classification":
        values: np.ndarray = ints if ints is not None else np.array(labels)
        return _encode(values)
    for label, line in zip(labels, lines, strict=True):
        if problem := _not_a_number(label):
            raise refuse(f'file.row {line}.column "{name}"', problem + " (a regression target)")
    return np.array(labels, dtype=np.float64), None, task


def _as_ints(labels: list[str]) -> np.ndarray | None:
    try:
        return np.array([int(label) for label in labels], dtype=np.int64)
    except (ValueError, OverflowError):
        return None


def _as_floats(labels: list[str]) -> np.ndarray | None:
    try:
        values = np.array(labels, dtype=np.float64)
    except ValueError:
        return None
    return values if np.isfinite(values).all() else None


def _encode(labels: np.ndarray) -> tuple[np.ndarray, list[Any], str]:
    classes, codes = np.unique(labels, return_inverse=True)
    return codes.reshape(-1).astype(np.int64), classes.tolist(), "classification"


def _check_classes(table: Table, column: str) -> None:
    if table.classes is None:
        return
    k = len(table.classes)
    if k < 2:
        only = f" ({table.classes[0]!r})" if k else ""
        raise refuse(column, f"has {k} class{only}; classification needs at least 2")
    if k > MAX_CLASSES:
        raise refuse(
            column,
            f"has {k} distinct labels, at most {MAX_CLASSES} classes; "
            'for a numeric target give task "regression"',
        )


# --- arrays: NPY, NPZ, JSON -----------------------------------------------------------


def _npy(data: bytes, target: str | None, task: Task | None) -> Table:
    array = _load_npy(data, "file")
    if array.ndim != 2 or array.shape[1] < 2:
        raise refuse(
            "file",
            f"an .npy upload is a 2-D array (rows, features and the target column), "
            f"got shape {array.shape}; or send an .npz with arrays X and y",
        )
    n_cols = array.shape[1]
    if target is None:
        t = n_cols - 1
    else:
        try:
            t = int(target)
        except ValueError:
            raise refuse("target", f"an .npy target is a column index, got {target!r}") from None
        if not -n_cols <= t < n_cols:
            raise refuse("target", f"column {t} is out of range: the array has {n_cols} columns")
        t %= n_cols
    X = np.delete(array, t, axis=1)
    table = check_arrays(
        X, array[:, t], task, "file", "file", skipped=t, y_column=f".column {t + 1}"
    )
    table.target = str(t)
    return table


def _npz(data: bytes, target: str | None, task: Task | None) -> Table:
    if not data.startswith(b"PK"):  # numpy would try it as a pickle and say so
        raise refuse("file", "is not an .npz archive (a zip file of X.npy and y.npy)")
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise refuse("file", f"is not an .npz archive: {err}") from None
    with archive:
        missing = [key for key in ("X", "y") if key not in archive.files]
        if missing:
            raise refuse(
                "file", f"an .npz upload holds arrays X and y; it has {sorted(archive.files)}"
            )
        try:
            X, y = archive["X"], archive["y"]
        except ValueError as err:  # an object array
            raise refuse("file", f"cannot be read without pickle: {err}") from None
    return check_arrays(X, y, task, "X", "y")


def _load_npy(data: bytes, loc: str) -> np.ndarray:
    if not data.startswith(b"\x93NUMPY"):  # numpy would try it as a pickle and say so
        raise refuse(loc, "is not an .npy array (np.save's format)")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise refuse(loc, f"is not an .npy array (or holds Python objects): {err}") from None


def _json(data: bytes, target: str | None, task: Task | None) -> Table:
    try:
        doc = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        raise refuse("file", f"is not JSON: {err}") from None
    if not isinstance(doc, dict) or "X" not in doc or "y" not in doc:
        raise refuse("file", 'a JSON upload is an object {"X": [[...], ...], "y": [...]}')
    extra = sorted(set(doc) - {"X", "y"})
    if extra:
        raise refuse(f"file.{extra[0]}", 'unknown field; a JSON upload has "X" and "y"')
    X, y = doc["X"], doc["y"]
    if not isinstance(X, list) or not isinstance(y, list):
        raise refuse("X" if not isinstance(X, list) else "y", "must be a list")
    return check_arrays(json_matrix(X), json_labels(y), task, "X", "y")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def json_matrix(rows: list[Any]) -> np.ndarray:
    """``X`` as float64: rows of numbers of one length (a flat list is one feature)."""
    if rows and all(_is_number(v) for v in rows):
        return np.array(rows, dtype=np.float64)[:, None]
    width = len(rows[0]) if rows and isinstance(rows[0], list) else 0
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise refuse(f"X.row {i + 1}", "must be a list of numbers")
        if len(row) != width:
            raise refuse(f"X.row {i + 1}", f"has {len(row)} values, row 1 has {width}")
        for j, value in enumerate(row):
            if not _is_number(value):
                raise refuse(
                    f"X.row {i + 1}.column {j + 1}", f"{json.dumps(value)} is not a number"
                )
    return np.array(rows, dtype=np.float64).reshape(len(rows), width)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def json_labels(values: list[Any]) -> np.ndarray:
    """``y``: labels of one kind (integers, strings or booleans), or numbers (rows of
    numbers for several targets)."""
    kinds = {_kind(v) for v in values}
    if len(kinds) == 1 or kinds == {"int", "float"}:
        kind = "float" if "float" in kinds else next(iter(kinds), "float")
        if kind == "row":
            return np.array(values, dtype=np.float64) if _rectangular(values) else _bad_y(values)
        if kind != "other":
            return np.array(values)
    return _bad_y(values)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list) and value and all(_is_number(v) for v in value):
        return "row"
    return "other"


def _rectangular(rows: list[list[Any]]) -> bool:
    return len({len(row) for row in rows}) == 1


def _bad_y(values: list[Any]) -> np.ndarray:
    first = _kind(values[0])
    for i, value in enumerate(values):
        kind = _kind(value)
        if kind == "other":
            raise refuse(
                f"y.row {i + 1}",
                f"{json.dumps(value)} is not a label (an integer, string or boolean) or a number",
            )
        if kind != first and {kind, first} != {"int", "float"}:
            raise refuse(
                f"y.row {i + 1}",
                f"{json.dumps(value)} is a {kind}, row 1 a {first}: labels are all of one type",
            )
        if kind == "row" and len(value) != len(values[0]):
            raise refuse(f"y.row {i + 1}", f"has {len(value)} targets, row 1 has {len(values[0])}")
    raise AssertionError("y failed without a bad row")  # pragma: no cover


def check_arrays(
    X: np.ndarray,
    y: np.ndarray,
    task: Task | None,
    x_loc: str,
    y_loc: str,
    skipped: int | None = None,
    y_column: str = "",
) -> Table:
    """Check ``X`` (numbers, 2-D, finite) and ``y`` (one per row) and encode labels.
    ``skipped``: X's columns came from an array without this one (an NPY's target, in
    ``y_column``); columns are named as in that array."""

    def column(j: int) -> int:  # 1-based, as in the uploaded array
        return j + 1 + (skipped is not None and j >= skipped)

    if X.dtype.kind not in "biuf":
        raise refuse(x_loc, f"must hold numbers, got {X.dtype} values")
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[1] < 1:
        raise refuse(x_loc, f"must be 2-D (rows, features), got shape {X.shape}")
    X = np.ascontiguousarray(X, dtype=np.float64)
    if len(X) < 2:
        raise refuse(x_loc, f"has {len(X)} rows; at least 2 are needed")
    bad = np.argwhere(~np.isfinite(X))
    if len(bad):
        i, j = (int(v) for v in bad[0])
        raise refuse(f"{x_loc}.row {i + 1}.column {column(j)}", f"{X[i, j]} is not a finite number")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim not in (1, 2) or len(y) != len(X):
        raise refuse(y_loc, f"must have one entry per row of X ({len(X)}), got shape {y.shape}")
    if task is None:
        task = "classification" if y.dtype.kind in "biuUS" else "regression"
    if task == "classification":
        table = _class_labels(X, y, y_loc, y_column)
    else:
        if y.dtype.kind not in "biuf":
            raise refuse(y_loc + y_column, f"regression targets are numbers, got {y.dtype} values")
        y = np.ascontiguousarray(y, dtype=np.float64)
        bad = np.argwhere(~np.isfinite(y))
        if len(bad):
            i = int(bad[0][0])
            raise refuse(
                f"{y_loc}.row {i + 1}{y_column}", f"{y[tuple(bad[0])]} is not a finite number"
            )
        table = Table(X, y, "regression")
    return table


def _class_labels(X: np.ndarray, y: np.ndarray, y_loc: str, y_column: str = "") -> Table:
    if y.ndim != 1:
        raise refuse(
            y_loc,
            f"class labels are one per row, got rows of {y.shape[1]} (one-hot? give the class)",
        )
    if y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if len(bad):
            i = int(bad[0])
            raise refuse(
                f"{y_loc}.row {i + 1}{y_column}",
                f"{y[i]} is not a class label (an integer, string or boolean); "
                'for numeric targets give task "regression"',
            )
        y = y.astype(np.int64)
    elif y.dtype.kind not in "biuUS":
        raise refuse(y_loc, f"class labels are integers, strings or booleans, got {y.dtype}")
    codes, classes, task = _encode(y)
    table = Table(X, codes, task, classes)
    _check_classes(table, y_loc + y_column)
    return table
