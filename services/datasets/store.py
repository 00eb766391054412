"""Datasets in the database: canonical bytes, stored once per content hash.

A checked :class:`~services.datasets.parse.Table` is written as a canonical ``.npz``
(``X`` float64, ``y`` class indices or float64 targets, ``classes`` the labels; fixed
member order and timestamps, so the same arrays always give the same bytes) whose
SHA-256 is the dataset's content hash. The bytes live in ``dataset_blobs`` (one row
per hash, shared by every owner who uploads the same data), so a worker on any host
reads them from the database. A user's ``datasets`` row names the blob and holds
what submission needs without reading it (task, shape, class sizes).

Like the other row helpers these flush; the caller commits.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from typing import Any

import numpy as np
from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session, load_only

from services.auth import Principal
from services.datasets.parse import Table
from services.db.models import ACTIVE_STATUSES, Dataset, DatasetBlob, Job, LrRangeTest, Sweep
from services.db.pages import paginate

#: the zip timestamp of every member (the DOS epoch), so that equal arrays give equal bytes
_EPOCH = (1980, 1, 1, 0, 0, 0)


class DatasetInUseError(Exception):
    """A queued or running job (or a running sweep) trains on the dataset."""


def canonical_bytes(table: Table) -> bytes:
    """The ``.npz`` of ``table``'s arrays, byte for byte the same for the same arrays."""
    arrays: dict[str, np.ndarray] = {
        "X": np.ascontiguousarray(table.X, dtype=np.float64),
        "y": np.ascontiguousarray(table.y),
    }
    if table.classes is not None:
        arrays["classes"] = np.asarray(table.classes)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    return buf.getvalue()


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_arrays(data: bytes) -> tuple[np.ndarray, np.ndarray, list[Any] | None]:
    """``(X, y, classes)`` of canonical bytes (read-only arrays: callers share them)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        X, y = archive["X"], archive["y"]
        classes = archive["classes"].tolist() if "classes" in archive.files else None
    X.flags.writeable = False
    y.flags.writeable = False
    return X, y, classes


def store_dataset(
    session: Session,
    table: Table,
    *,
    owner_id: str | None,
    name: str | None = None,
) -> tuple[Dataset, bool]:
    """The owner's dataset holding ``table``: an existing one with the same content
    hash, else a new one (and its blob, unless another owner stored the same bytes).
    Returns ``(dataset, created)``."""
    data = canonical_bytes(table)
    sha = content_hash(data)
    found = find_by_hash(session, sha, owner_id)
    if found is not None:
        return found, False
    if session.get(DatasetBlob, sha) is None:
        session.add(DatasetBlob(sha256=sha, size_bytes=len(data), data=data))
        session.flush()
    counts = table.class_counts
    dataset = Dataset(
        owner_id=owner_id,
        sha256=sha,
        name=name,
        format=table.format,
        task=table.task,
        target=table.target,
        n_rows=int(table.X.shape[0]),
        n_features=int(table.X.shape[1]),
        n_classes=len(counts) if counts is not None else None,
        classes=table.classes,
        class_counts=counts,
        feature_names=table.feature_names,
        size_bytes=len(data),
    )
    session.add(dataset)
    session.flush()
    return dataset, True


def find_by_hash(session: Session, sha: str, owner_id: str | None) -> Dataset | None:
    owner = Dataset.owner_id.is_(None) if owner_id is None else Dataset.owner_id == owner_id
    return session.scalars(select(Dataset).where(Dataset.sha256 == sha, owner)).first()


def visible_dataset(session: Session, dataset_id: str, principal: Principal) -> Dataset | None:
    """The dataset if ``principal`` may use it (theirs, or any for an admin), else None."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or not principal.sees(dataset):
        return None
    return dataset


#: what a list shows of each dataset (not its classes or feature names)
SUMMARY_COLUMNS = (
    Dataset.id,
    Dataset.owner_id,
    Dataset.sha256,
    Dataset.name,
    Dataset.format,
    Dataset.task,
    Dataset.target,
    Dataset.n_rows,
    Dataset.n_features,
    Dataset.n_classes,
    Dataset.size_bytes,
    Dataset.created_at,
)


def list_datasets(
    session: Session, *, owner_id: str | None, cursor: str | None, limit: int
) -> tuple[list[Dataset], str | None]:
    """Datasets newest first, their ``SUMMARY_COLUMNS`` only (only ``owner_id``'s unless
    None); returns (rows, next_cursor)."""
    stmt = select(Dataset).options(load_only(*SUMMARY_COLUMNS, raiseload=True))
    if owner_id is not None:
        stmt = stmt.where(Dataset.owner_id == owner_id)
    return paginate(session, Dataset, stmt, cursor=cursor, limit=limit)


def in_use(session: Session, dataset_id: str) -> bool:
    """Whether a queued or running job, a running sweep, or a queued or running
    learning-rate range test trains on the dataset."""
    job = exists().where(Job.dataset_id == dataset_id, Job.status.in_(ACTIVE_STATUSES))
    sweep = exists().where(Sweep.dataset_id == dataset_id, Sweep.status == "running")
    if session.scalar(select(job | sweep)):
        return True
    # a range test names its dataset in its spec only (the active ones are few)
    tests = select(LrRangeTest.spec).where(LrRangeTest.status.in_(ACTIVE_STATUSES))
    return any(refers_to(spec) == dataset_id for spec in session.scalars(tests))


def refers_to(spec: dict[str, Any]) -> str | None:
    """The id of the stored dataset a (resolved) job spec trains on, if any."""
    ds = spec.get("dataset") or {}
    return ds.get("id") if ds.get("name") == "uploaded" else None


def delete_dataset(session: Session, dataset_id: str) -> None:
    """Delete a dataset, and its blob when no other dataset shares it. Raises
    :class:`DatasetInUseError` while a queued or running job or a running sweep uses it."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise LookupError(dataset_id)
    if in_use(session, dataset_id):
        raise DatasetInUseError(dataset_id)
    sha = dataset.sha256
    session.delete(dataset)
    session.flush()
    others = session.scalar(select(func.count()).where(Dataset.sha256 == sha))
    if not others:
        session.execute(delete(DatasetBlob).where(DatasetBlob.sha256 == sha))
    session.flush()


def dataset_hash(session: Session, dataset_id: str) -> str | None:
    return session.scalar(select(Dataset.sha256).where(Dataset.id == dataset_id))


def load_blob(session: Session, sha: str) -> bytes | None:
    return session.scalar(select(DatasetBlob.data).where(DatasetBlob.sha256 == sha))


def facts(dataset: Dataset) -> dict[str, Any]:
    """What a job spec's ``uploaded`` dataset carries of it (the trainer's facts)."""
    out: dict[str, Any] = {
        "id": dataset.id,
        "sha256": dataset.sha256,
        "task": dataset.task,
        "n_rows": dataset.n_rows,
        "n_features": dataset.n_features,
    }
    if dataset.task == "classification":
        out["class_counts"] = list(dataset.class_counts or [])
    return out
