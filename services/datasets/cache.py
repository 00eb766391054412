"""A worker process's datasets, kept in memory by content hash (bounded by bytes).

The trials of a sweep train on one dataset: each worker process reads its bytes
from the database once and hands every later trial the same (read-only) arrays.
The least recently used datasets leave first when the bound is reached; one larger
than the whole bound is used but not kept.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.datasets.store import dataset_hash, load_blob, read_arrays
from services.trainer import Dataset, load_dataset, load_uploaded
from services.trainer.spec import parse_dataset

#: the default bound of a process's cache (SWEEPLAB_DATASET_CACHE_BYTES)
DEFAULT_CACHE_BYTES = 1 << 30


@dataclass(frozen=True)
class Arrays:
    X: np.ndarray  # (n, f) float64, read-only
    y: np.ndarray  # (n,) class indices, or float64 targets; read-only
    classes: list[Any] | None

    @property
    def nbytes(self) -> int:
        return int(self.X.nbytes + self.y.nbytes)


class DatasetCache:
    """Arrays by content hash, least recently used out first, at most ``max_bytes``."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, Arrays] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(entry.nbytes for entry in self._entries.values())

    def __contains__(self, sha: str) -> bool:
        with self._lock:
            return sha in self._entries

    def get(self, sha: str, sessions: sessionmaker[Session]) -> Arrays:
        """The arrays of blob ``sha``, read from the database on a miss.
        Raises ``LookupError`` when the blob is gone (the dataset was deleted)."""
        with self._lock:
            entry = self._entries.get(sha)
            if entry is not None:
                self._entries.move_to_end(sha)
                self.hits += 1
                return entry
            self.misses += 1
        with sessions() as session:
            data = load_blob(session, sha)
            session.commit()
        if data is None:
            raise LookupError(f"no dataset bytes with content hash {sha}")
        entry = Arrays(*read_arrays(data))
        del data
        self.put(sha, entry)
        return entry

    def put(self, sha: str, entry: Arrays) -> None:
        with self._lock:
            self._entries[sha] = entry
            self._entries.move_to_end(sha)
            total = sum(e.nbytes for e in self._entries.values())
            while total > self.max_bytes and self._entries:
                _, evicted = self._entries.popitem(last=False)
                total -= evicted.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


#: this process's cache (a worker process trains one job at a time)
CACHE = DatasetCache()


def training_data(
    dataset_spec: dict[str, Any],
    sessions: sessionmaker[Session],
    cache: DatasetCache | None = None,
) -> Dataset:
    """The trainer's ``Dataset`` of an ``uploaded`` dataset spec: its rows from the
    cache (the database on a miss), split and standardized by the spec's options."""
    cache = cache if cache is not None else CACHE
    sha = dataset_spec.get("sha256")
    if not sha:
        with sessions() as session:
            sha = dataset_hash(session, dataset_spec["id"])
            session.commit()
        if sha is None:
            raise LookupError(f"dataset {dataset_spec['id']} was deleted")
    arrays = cache.get(sha, sessions)
    return load_uploaded(dataset_spec, arrays.X, arrays.y, arrays.classes)


class PreparedCache:
    """Split and standardized ``Dataset`` objects by their spec's ``dataset`` section:
    the trials of a sweep share it, so a worker process splits (or generates) the
    data once, not once per trial. Few entries (a sweep's trials come together),
    bounded by bytes; the arrays are read-only, so a trial cannot change another's."""

    def __init__(self, max_entries: int = 4):
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Dataset] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Dataset | None:
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
            return data

    def put(self, key: str, data: Dataset, max_bytes: int) -> None:
        size = _dataset_bytes(data)
        if size > max_bytes:
            return
        for array in _dataset_arrays(data):
            array.flags.writeable = False
        with self._lock:
            self._entries[key] = data
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries or (
                sum(_dataset_bytes(d) for d in self._entries.values()) > max_bytes
            ):
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _dataset_arrays(data: Dataset) -> list[np.ndarray]:
    arrays = (data.X_train, data.y_train, data.X_val, data.y_val)
    return [a for a in arrays if isinstance(a, np.ndarray)]


def _dataset_bytes(data: Dataset) -> int:
    return sum(int(a.nbytes) for a in _dataset_arrays(data))


#: this process's prepared datasets (half the dataset cache's bound at most)
PREPARED = PreparedCache()


def fit_data(spec: dict[str, Any], sessions: sessionmaker[Session], settings: Settings) -> Dataset:
    """The data to hand ``fit`` for a stored job ``spec``, split and standardized:
    from this process's cache when an earlier trial had the same ``dataset`` section;
    else an uploaded dataset's rows (from the cache of rows, bounded by
    ``settings.dataset_cache_bytes``) or the named set the spec describes."""
    ds = spec.get("dataset") or {}
    key = json.dumps(ds, sort_keys=True, separators=(",", ":"))
    data = PREPARED.get(key)
    if data is not None:
        return data
    if ds.get("name") == "uploaded":
        CACHE.max_bytes = settings.dataset_cache_bytes
        data = training_data(ds, sessions)
    else:
        data = load_dataset(parse_dataset(ds))
    PREPARED.put(key, data, settings.dataset_cache_bytes // 2)
    return data
