"""Uploaded data, stored once by content hash.

parse    reading CSV, NPY, NPZ and JSON uploads into checked arrays (422s that
         name row and column)
store    canonical bytes and their SHA-256, the blob and dataset rows, in-use checks
attach   a job spec's dataset at submission: references get the stored facts,
         inline arrays become a stored dataset
cache    a worker process's arrays by content hash, and the trainer's Dataset of
         an ``uploaded`` spec
"""

from services.datasets.attach import attach_dataset
from services.datasets.cache import CACHE, DatasetCache, fit_data, training_data
from services.datasets.parse import FORMATS, Table, detect_format, parse
from services.datasets.store import (
    DatasetInUseError,
    canonical_bytes,
    content_hash,
    delete_dataset,
    list_datasets,
    refers_to,
    store_dataset,
    visible_dataset,
)

__all__ = [
    "CACHE",
    "FORMATS",
    "DatasetCache",
    "DatasetInUseError",
    "Table",
    "attach_dataset",
    "canonical_bytes",
    "content_hash",
    "delete_dataset",
    "detect_format",
    "fit_data",
    "list_datasets",
    "parse",
    "refers_to",
    "store_dataset",
    "training_data",
    "visible_dataset",
]
