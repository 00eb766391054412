"""The client's predict batches: at most so many rows and so many bytes of JSON each."""

from __future__ import annotations

import json

import pytest

from client.api import _batches


def test_rows_go_in_batches_under_the_body_limit():
    rows = [[0.123456789012345] * 30 for _ in range(2_500)]  # ~1.4 MB of JSON in all
    batches = list(_batches(rows, 10_000, 900_000))
    assert len(batches) > 1 and sum(batches, []) == rows
    assert all(len(json.dumps({"rows": b})) <= 900_000 for b in batches)
    assert [len(b) for b in _batches(rows[:25], 10, 10**9)] == [10, 10, 5]
    assert list(_batches([], 10, 100)) == [[]]
    huge = [[1.0] * 1000]
    assert list(_batches(huge, 10, 100)) == [huge]  # a row over the limit goes alone


def test_columns_are_taken_by_the_features_names(tmp_path) -> None:
    from client.errors import BadInput
    from client.shell import in_feature_order

    path = tmp_path / "x.csv"
    rows = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert in_feature_order(path, ["a", "b", "c"], rows, ["a", "b", "c"]) is rows
    assert in_feature_order(path, ["c", "a", "b"], rows, ["a", "b", "c"]) == [
        [2.0, 3.0, 1.0],
        [5.0, 6.0, 4.0],
    ]
    with pytest.raises(BadInput, match=r"missing \['c'\]; not features \['label'\]"):
        in_feature_order(path, ["a", "b", "label"], rows, ["a", "b", "c"])
    with pytest.raises(BadInput, match="missing"):
        in_feature_order(path, ["a", "b"], [[1.0, 2.0]], ["a", "b", "c"])
    with pytest.raises(BadInput, match="repeated"):
        in_feature_order(path, ["a", "a", "b"], rows, ["a", "b", "b"])
