"""A job spec's dataset at submission: an ``uploaded`` reference gets the stored
dataset's facts, and inline ``arrays`` become a stored dataset referred to instead.

After :func:`attach_dataset` a spec never holds rows: its ``dataset`` is
``{"name": "uploaded", "id", "sha256", "task", "n_rows", "n_features",
"class_counts" | "n_targets", ...the split options}``, which the trainer's checks and
the budgets read without loading the data.
"""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy.orm import Session

from services.auth import Principal
from services.datasets.parse import Table, check_arrays, json_labels, json_matrix
from services.datasets.store import (
    canonical_bytes,
    facts,
    store_dataset,
    visible_dataset,
)
from services.db.models import Dataset
from services.specs.errors import SpecValidationError

#: what a dataset section keeps of itself when it refers to a stored dataset
SPLIT_OPTIONS = ("validation_split", "seed", "standardize", "standardize_targets")
#: filled in from the stored dataset (a value the request gave is replaced)
FACTS = ("sha256", "task", "n_rows", "n_features", "class_counts", "n_targets")


def attach_dataset(
    session: Session,
    spec: dict[str, Any],
    principal: Principal,
    *,
    prefix: str = "",
    max_bytes: int | None = None,
) -> tuple[dict[str, Any], Dataset | None]:
    """``spec`` (a job spec dict, unnormalized) with its dataset resolved; and the
    stored dataset it refers to (None for a named set). A 422 at ``dataset.id`` when
    the id is unknown or not the principal's; inline arrays are checked (a 422 naming
    row and column; a 422 when their stored form is over ``max_bytes``, the limit of an
    upload) and stored as the principal's dataset (flushed, not committed)."""
    ds = spec.get("dataset")
    if not isinstance(ds, dict) or ds.get("name") not in ("uploaded", "arrays"):
        return spec, None
    loc = f"{prefix}dataset"
    if ds["name"] == "arrays":
        table = inline_table(ds, loc)
        size = len(canonical_bytes(table))
        if max_bytes is not None and size > max_bytes:
            raise SpecValidationError(
                "invalid job spec",
                [
                    {
                        "loc": loc,
                        "msg": f"the inline arrays take {size} bytes stored (X as float64), "
                        f"more than {max_bytes} (SWEEPLAB_MAX_DATASET_BYTES)",
                    }
                ],
            )
        dataset, _ = store_dataset(session, table, owner_id=principal.user_id)
    else:
        unknown = sorted(set(ds) - {"name", "id", *SPLIT_OPTIONS, *FACTS})
        if unknown:  # a stored dataset's rows are fixed: a generator's options do not apply
            raise SpecValidationError(
                "invalid job spec",
                [
                    {"loc": f"{loc}.{key}", "msg": "does not apply to an uploaded dataset"}
                    for key in unknown
                ],
            )
        dataset_id = ds.get("id")
        found = (
            visible_dataset(session, dataset_id, principal) if isinstance(dataset_id, str) else None
        )
        if found is None:
            raise SpecValidationError(
                "invalid job spec", [{"loc": f"{loc}.id", "msg": f"no dataset {dataset_id}"}]
            )
        dataset = found
    spec = {**spec, "dataset": reference(ds, dataset)}
    return spec, dataset


def reference(ds: dict[str, Any], dataset: Dataset) -> dict[str, Any]:
    """The ``uploaded`` section of ``dataset`` with ``ds``'s split options."""
    kept = {key: copy.deepcopy(ds[key]) for key in SPLIT_OPTIONS if key in ds}
    return {"name": "uploaded", **kept, **facts(dataset)}


def inline_table(ds: dict[str, Any], loc: str) -> Table:
    """The checked arrays of an inline ``arrays`` section (locs under ``loc``)."""
    X, y = ds.get("X"), ds.get("y")
    if not isinstance(X, list) or not isinstance(y, list):
        key = "X" if not isinstance(X, list) else "y"
        raise SpecValidationError(
            "invalid job spec", [{"loc": f"{loc}.{key}", "msg": "is required for 'arrays'"}]
        )
    try:
        table = check_arrays(json_matrix(X), json_labels(y), ds.get("task"), "X", "y")
    except SpecValidationError as err:
        for detail in err.details:
            detail["loc"] = f"{loc}.{detail['loc']}"
        raise SpecValidationError("invalid job spec", err.details) from None
    table.format = "json"
    return table
