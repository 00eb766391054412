"""Uploaded data: each format parsed and checked (422s naming row and column), the
canonical bytes and their hash, one dataset per owner and content, the worker cache."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from services.datasets import (
    DatasetCache,
    canonical_bytes,
    content_hash,
    parse,
    store_dataset,
    training_data,
)
from services.datasets.cache import PREPARED, fit_data
from services.datasets.store import facts
from services.specs import SpecValidationError, trainer_spec
from services.trainer import fit

IRIS_CSV = (
    b"sepal_length,petal_width,species\n"
    b"5.1,0.2,setosa\n7.0,1.4,versicolor\n6.3,2.5,virginica\n4.9,0.2,setosa\n"
)


def refused(data: bytes, fmt: str, **kw) -> dict:
    with pytest.raises(SpecValidationError) as info:
        parse(data, format=fmt, **kw)
    (detail,) = info.value.details
    return detail


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def test_csv_with_text_labels():
    table = parse(IRIS_CSV, format="csv")
    assert table.X.dtype == np.float64 and table.X.shape == (4, 2)
    assert table.task == "classification" and table.target == "species"
    assert table.classes == ["setosa", "versicolor", "virginica"]
    assert table.class_counts == [2, 1, 1] and table.y.tolist() == [0, 1, 2, 0]
    assert table.feature_names == ["sepal_length", "petal_width"]


def test_csv_target_by_name_integers_and_regression():
    data = b"a,label,b\n1,0,2.5\n2,1,3.5\n3,0,4.5\n"
    table = parse(data, format="csv", target="label")
    assert table.classes == [0, 1] and table.X.tolist() == [[1, 2.5], [2, 3.5], [3, 4.5]]
    table = parse(data, format="csv")  # the last column, floats: a regression
    assert table.task == "regression" and table.y.tolist() == [2.5, 3.5, 4.5]
    assert parse(data, format="csv", target="label", task="regression").y.dtype == np.float64


@pytest.mark.parametrize(
    "data, kw, loc, msg",
    [
        (b"a,b,c\n1,2,x\n1,abc,y\n", {}, 'file.row 3.column "b"', '"abc" is not a number'),
        (b"a,b,c\n1,2,x\n1,,y\n", {}, 'file.row 3.column "b"', "is empty"),
        (b"a,b,c\n1,2,x\nnan,2,y\n", {}, 'file.row 3.column "a"', "not a finite number"),
        (b"a,b,c\n1,2,x\n1,2\n", {}, "file.row 3", "has 2 values, the header has 3"),
        (b"a,b,c\n1,2,x\n3,4,x\n", {}, 'file.column "c"', "needs at least 2"),
        (b"a,b,c\n1,2,x\n3,4,y\n", {"target": "d"}, "target", "no column 'd'"),
        (b"a,b,c\n1,2,3\n3,4,y\n", {"task": "regression"}, 'file.row 3.column "c"', '"y"'),
        (b"a,b,c\n1,2,3\n", {}, "file", "at least 2"),
        (b"a,a,c\n1,2,3\n", {}, 'file.row 1.column "a"', "named twice"),
    ],
)
def test_csv_refusals_name_row_and_column(data, kw, loc, msg):
    detail = refused(data, "csv", **kw)
    assert detail["loc"] == loc and msg in detail["msg"]


def test_rows_count_as_in_the_file_with_quoted_newlines_and_blank_lines():
    data = b'a,note,c\n1,2,x\n\n3,"4\n",y\n5,oops,x\n'
    assert refused(data, "csv")["loc"] == 'file.row 6.column "note"'  # as an editor counts


def test_npy_target_column_and_refusals():
    array = np.array([[0.5, 1.0, 0], [1.5, 2.0, 1], [2.5, 3.0, 1]])
    table = parse(npy(array), format="npy", task="classification")
    assert table.X.shape == (3, 2) and table.classes == [0, 1]
    table = parse(npy(array), format="npy", target="0")
    assert table.task == "regression" and table.y.tolist() == [0.5, 1.5, 2.5]
    array[1, 1] = np.inf
    assert refused(npy(array), "npy", target="0")["loc"] == "file.row 2.column 2"
    assert refused(npy(np.zeros(3)), "npy")["loc"] == "file"
    assert refused(b"not numpy", "npy")["loc"] == "file"


def test_npz_and_json_arrays():
    X, y = np.arange(8.0).reshape(4, 2), np.array([True, False, True, False])
    table = parse(npz(X=X, y=y), format="npz")
    assert table.classes == [False, True] and table.class_counts == [2, 2]
    assert refused(npz(X=X), "npz")["msg"].startswith("an .npz upload holds arrays X and y")
    # a CSV sent as format=npz (or npy): said plainly, not numpy's words about pickles
    for fmt, kind in (("npz", ".npz archive"), ("npy", ".npy array")):
        msg = refused(b"a,b\n1,2\n", fmt)["msg"]
        assert kind in msg and "pickle" not in msg, msg
    doc = {"X": X.tolist(), "y": ["a", "b", "a", "b"]}
    assert parse(json.dumps(doc).encode(), format="json").classes == ["a", "b"]
    doc["X"][2][1] = "abc"
    assert refused(json.dumps(doc).encode(), "json") == {
        "loc": "X.row 3.column 2",
        "msg": '"abc" is not a number',
    }
    doc = {"X": X.tolist(), "y": [1, "a", 1, 2]}
    assert refused(json.dumps(doc).encode(), "json")["loc"] == "y.row 2"
    doc = {"X": X.tolist(), "y": [0.5, 1, 1, 2]}
    assert refused(json.dumps(doc).encode(), "json", task="classification")["loc"] == "y.row 1"
    doc = {"X": [[1, 2], [3]], "y": [0, 1]}
    assert refused(json.dumps(doc).encode(), "json")["loc"] == "X.row 2"


def test_canonical_bytes_are_the_same_for_the_same_arrays():
    one, two = parse(IRIS_CSV, format="csv"), parse(IRIS_CSV.replace(b",", b";"), format="csv")
    assert canonical_bytes(one) == canonical_bytes(two)
    assert content_hash(canonical_bytes(one)) != content_hash(
        canonical_bytes(parse(IRIS_CSV.replace(b"5.1", b"5.2"), format="csv"))
    )


def test_stored_once_per_owner_and_content(sessions):
    table = parse(IRIS_CSV, format="csv")
    with sessions() as session:
        first, created = store_dataset(session, table, owner_id=None, name="iris")
        again, created_again = store_dataset(session, table, owner_id=None, name="other")
        session.commit()
    assert created and not created_again and again.id == first.id
    assert facts(first)["class_counts"] == [2, 1, 1]


def test_cache_reads_a_dataset_once_and_stays_bounded(sessions):
    table = parse(IRIS_CSV, format="csv")
    with sessions() as session:
        row, _ = store_dataset(session, table, owner_id=None)
        session.commit()
    cache = DatasetCache(max_bytes=10_000)
    spec = {"name": "uploaded", "validation_split": 0.0, **facts(row)}
    for _ in range(3):
        data = training_data(spec, sessions, cache)
    assert (cache.hits, cache.misses) == (2, 1)
    assert data.classes == ["setosa", "versicolor", "virginica"] and len(data.X_train) == 4
    arrays = cache.get(row.sha256, sessions)
    assert not arrays.X.flags.writeable  # shared by every trial: never written
    cache.max_bytes = 10
    cache.put("other", arrays)  # over the bound: the oldest go first
    assert row.sha256 not in cache and cache.nbytes <= arrays.nbytes


def test_a_process_prepares_a_dataset_once_per_dataset_section(sessions, settings):
    """fit_data: the trials of a sweep share one split, standardized, read-only Dataset;
    another dataset section is another; training on it gives the numbers of a run that
    made its own data (the same computation, so bit for bit)."""
    PREPARED.clear()
    spec = {
        "dataset": {"name": "moons", "n_samples": 120, "seed": 3, "validation_split": 0.25},
        "architecture": {"layers": [{"units": 4, "activation": "tanh"}]},
        "hyperparameters": {"epochs": 3, "batch_size": 16, "learning_rate": 0.1, "seed": 1},
    }
    first = fit_data(spec, sessions, settings)
    assert fit_data(json.loads(json.dumps(spec)), sessions, settings) is first
    assert not first.X_train.flags.writeable and not first.y_val.flags.writeable
    other = {**spec, "dataset": {**spec["dataset"], "seed": 4}}
    assert fit_data(other, sessions, settings) is not first
    shared = fit(trainer_spec(spec), data=first)
    own = fit(trainer_spec(spec))
    assert [r["train_loss"] for r in shared.history] == [r["train_loss"] for r in own.history]
    assert [r["val_loss"] for r in shared.history] == [r["val_loss"] for r in own.history]
    PREPARED.clear()
