"""Learning-rate range tests as jobs: a job spec's test stored, run by a worker, read back.

    rows   the rows: create, read, list, the claim (compare-and-set), finish, fail;
           ``range_test_result`` for a caller that waits on a test (a sweep)
    run    what a worker runs for one message: claim, test, record, hand to the mirror
    start  the unit of work behind ``POST /lr-range-tests``: store, commit, enqueue

A sweep that takes its bounds from a test calls :func:`start_range_test` (or
:func:`create_range_test` in its own transaction, then
:func:`enqueue_range_test` after its commit) and reads the outcome with
:func:`range_test_result`.
"""

from services.celery_app import RUN_RANGE_TEST  # the task (worker/range_tasks.py), by name
from services.lr_range.rows import (
    RangeTestOutcome,
    RangeTestSettings,
    create_range_test,
    get_range_test,
    list_range_tests,
    range_test_result,
)
from services.lr_range.run import execute_range_test
from services.lr_range.start import enqueue_range_test, prepare_range_test, start_range_test

__all__ = [
    "RUN_RANGE_TEST",
    "RangeTestOutcome",
    "RangeTestSettings",
    "create_range_test",
    "enqueue_range_test",
    "execute_range_test",
    "get_range_test",
    "list_range_tests",
    "prepare_range_test",
    "range_test_result",
    "start_range_test",
]
