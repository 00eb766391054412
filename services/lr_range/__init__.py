"""Learning-rate range tests as jobs: a job spec's test stored, run by a worker, read back.

    rows   the rows: create, read, list, the claim (compare-and-set), finish, fail;
           ``range_test_result`` for a caller that waits on a test (a sweep)
    run    what a worker runs for one message: claim, test, record, hand to the mirror
    start  the unit of work behind ``POST /lr-range-tests``: store, commit, enqueue
    recovery  tests whose message was lost, or whose worker died: sent again

A sweep that takes its bounds from a test (``services.sweeps.range_bounds``) calls
:func:`create_range_test` in its own transaction, sends it after its commit, and reads
the outcome with :func:`range_test_result`. The package re-exports the rows only:
``run``, ``start`` and ``recovery`` reach ``services.submit`` and the job run, which
import the sweep scheduler, which imports this package's rows; import them as
``services.lr_range.run`` etc.
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

__all__ = [
    "RUN_RANGE_TEST",
    "RangeTestOutcome",
    "RangeTestSettings",
    "create_range_test",
    "get_range_test",
    "list_range_tests",
    "range_test_result",
]
