"""Which trials a sweep packs (services.sweeps.packing): "auto", "off" and k, never more
than max_concurrency trials at once, one pack_key per pack; TPE asks for the pack's
trials at once (its constant liar counts the pending ones)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from sqlalchemy import func, select

from services.celery_app import RUN_JOB, RUN_PACK, message_job_ids
from services.db.models import ACTIVE_STATUSES, Job
from services.jobs import pack_run
from services.jobs.execute import run_chain, run_pack_chain
from services.specs import SpecValidationError, validate_job, validate_sweep
from services.sweeps.ahead import prepare_proposals
from services.sweeps.packing import NewTrials, plan, trial_units, widths_of
from services.sweeps.scheduler import create_sweep
from tests.conftest import FakeDispatcher

SMALL = (2, 64, 64, 2)  # the network: packing pays at batch 32
LARGE = (784, 256, 10)  # GEMM-bound: it never pays

BASE = {
    "reuse": False,
    "dataset": {"name": "moons", "n_samples": 200, "seed": 0},
    "architecture": {"layers": [{"units": 64}, {"units": 64}]},
    "hyperparameters": {"learning_rate": 0.1, "epochs": 3, "batch_size": 32},
}


def note(packing: Any, n: int, max_concurrency: int, widths=SMALL, batch=32) -> NewTrials:
    trials = [(f"t{i}", "key", widths, batch) for i in range(n)]
    return NewTrials(packing, max_concurrency, n, trials)


def sizes(units: list[list[str]]) -> list[int]:
    return [len(u) for u in units]


@pytest.mark.parametrize(
    ("packing", "n", "max_concurrency", "widths", "expected"),
    [
        ("auto", 8, 8, SMALL, [4, 4]),  # one pack per process (2)
        ("auto", 16, 16, SMALL, [8, 8]),
        ("auto", 2, 2, SMALL, [1, 1]),  # two processes beat a pack of two on one
        ("auto", 8, 8, LARGE, [1] * 8),  # where it does not pay
        ("off", 8, 8, SMALL, [1] * 8),
        (3, 8, 8, SMALL, [3, 3, 2]),
        (8, 4, 4, SMALL, [4]),  # never beyond max_concurrency
        (8, 8, 8, LARGE, [8]),  # an explicit k packs where auto would not
    ],
)
def test_the_rule(packing, n, max_concurrency, widths, expected):
    assert sizes(plan(note(packing, n, max_concurrency, widths), processes=2)) == expected


def test_auto_follows_the_number_of_processes():
    assert sizes(plan(note("auto", 8, 8), processes=1)) == [8]
    assert sizes(plan(note("auto", 8, 8), processes=4)) == [2, 2, 2, 2]
    assert sizes(plan(note("auto", 8, 8), processes=8)) == [1] * 8


def test_whole_batch_training_never_packs_by_itself():
    assert sizes(plan(note("auto", 8, 8, batch=None), processes=2)) == [1] * 8


def test_trials_are_dealt_to_the_packs_in_turn():
    units = plan(note(3, 8, 8), processes=2)
    assert units == [["t0", "t3", "t6"], ["t1", "t4", "t7"], ["t2", "t5"]]


def test_only_trials_of_one_pack_key_share_a_pack():
    trials = [(f"t{i}", "ab"[i % 2], SMALL, 32) for i in range(8)]
    units = plan(NewTrials(4, 8, 8, trials), processes=2)
    assert units == [["t0", "t2", "t4", "t6"], ["t1", "t3", "t5", "t7"]]


def test_the_spec_takes_auto_off_or_a_pack_size():
    body = {
        "base": BASE,
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.1, 0.2]}},
    }
    assert validate_sweep(body).packing == "auto"
    assert validate_sweep({**body, "packing": 4}).packing == 4
    for bad in (1, 0, 65, True, "on", 2.0, None):
        with pytest.raises(SpecValidationError) as err:
            validate_sweep({**body, "packing": bad})
        assert [d["loc"] for d in err.value.details] == ["packing"]


def sweep_body(rates: list[float], **changes: Any) -> dict[str, Any]:
    return {
        "base": copy.deepcopy(BASE),
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": rates}},
        **changes,
    }


def created_units(settings, sessions, body: dict[str, Any]) -> list[list[str]]:
    with sessions() as session:
        _, ids = create_sweep(session, sweep=validate_sweep(body))
        units = trial_units(session, ids, settings.pack_processes)
        session.commit()
    assert sorted(i for unit in units for i in unit) == sorted(ids)  # every new trial, once
    return units


RATES = [0.001 * 2**i for i in range(8)]


def test_a_created_sweep_is_sent_in_packs(settings, sessions):
    assert widths_of(validate_job(copy.deepcopy(BASE))) == (2, 64, 64, 1)  # sigmoid output
    assert sizes(created_units(settings, sessions, sweep_body(RATES, max_concurrency=8))) == [4, 4]
    off = sweep_body(RATES, max_concurrency=8, packing="off")
    assert sizes(created_units(settings, sessions, off)) == [1] * 8
    six = sweep_body(RATES, max_concurrency=6, packing=4)
    assert sizes(created_units(settings, sessions, six)) == [3, 3]  # even packs
    widths = sweep_body(RATES[:4], max_concurrency=8, packing=4)
    widths["parameters"]["architecture.layers.0.units"] = {"values": [16, 32]}
    units = created_units(settings, sessions, widths)
    assert sizes(units) == [4, 4]
    with sessions() as session:
        for unit in units:
            jobs = session.scalars(select(Job).where(Job.id.in_(unit))).all()
            assert len({j.params["architecture.layers.0.units"] for j in jobs}) == 1


class Recorder(FakeDispatcher):
    """Records the messages as units, in order: one id (run_job) or several (run_pack)."""

    def __init__(self) -> None:
        super().__init__()
        self.units: list[list[str]] = []

    def enqueue_units(self, units: Any) -> None:
        self.units += [list(unit) for unit in units]


def test_max_concurrency_is_never_exceeded(settings, sessions, monkeypatch):
    body = sweep_body([0.001 * 1.5**i for i in range(10)], max_concurrency=6, packing=4)
    dispatcher = Recorder()
    dispatcher.enqueue_units(created_units(settings, sessions, body))
    seen: list[int] = []
    original = pack_run.JobRun.on_epoch

    def on_epoch(run: Any, record: dict[str, Any]) -> bool:
        with sessions() as session:
            active = select(func.count()).where(Job.status.in_(ACTIVE_STATUSES))
            seen.append(int(session.scalar(active.select_from(Job)) or 0))
        return original(run, record)

    monkeypatch.setattr(pack_run.JobRun, "on_epoch", on_epoch)
    settings = settings.model_copy(update={"chain_seconds": 0.0})
    kwargs = dict(settings=settings, session_factory=sessions, dispatcher=dispatcher)
    done = 0
    while done < len(dispatcher.units):  # the queue, first in first out
        unit = dispatcher.units[done]
        done += 1
        if len(unit) > 1:
            run_pack_chain(**kwargs, job_ids=unit)
        else:
            run_chain(**kwargs, job_id=unit[0])
    assert max(seen) == 6  # two packs of 3 at once, never more
    assert sizes(dispatcher.units) == [3, 3, 3, 1]  # each pack's end freed 3 places
    with sessions() as session:
        statuses = session.scalars(select(Job.status)).all()
    assert statuses == ["succeeded"] * 10


def test_tpe_asks_for_a_packs_trials_at_once(settings, sessions):
    body = {
        "base": copy.deepcopy(BASE),
        "method": "tpe",
        "parameters": {
            "hyperparameters.learning_rate": {
                "distribution": "log_uniform",
                "min": 1e-3,
                "max": 1.0,
            }
        },
        "n_trials": 8,
        "n_startup_trials": 0,
        "max_concurrency": 4,
        "packing": 4,
    }
    units = created_units(settings, sessions, body)
    assert sizes(units) == [4]
    with sessions() as session:
        jobs = session.scalars(select(Job).order_by(Job.trial_index)).all()
        # each proposal saw the earlier ones of the pack, pending (constant liar)
        assert [j.proposal["history"] for j in jobs] == [0, 1, 2, 3]
        assert len({j.params["hyperparameters.learning_rate"] for j in jobs}) == 4
        for i, job in enumerate(jobs):  # as if the pack had ended
            job.status, job.objective, job.epochs_done = "succeeded", 1.0 - i / 10, 3
        session.commit()
        sweep_id = jobs[0].sweep_id
    prepared = prepare_proposals(sessions, sweep_id)
    assert prepared is not None and prepared.n_created == 4
    assert [p[1]["history"] for p in prepared.proposals] == [4, 5, 6, 7]


def kombu_message(task: str, args: list[Any]) -> dict[str, Any]:
    import base64
    import json

    body = base64.b64encode(json.dumps([args, {}, {}]).encode()).decode()
    return {
        "body": body,
        "headers": {"task": task},
        "properties": {"body_encoding": "base64"},
    }


def test_the_trials_of_a_waiting_pack_message_count_as_waiting():
    assert message_job_ids(kombu_message(RUN_PACK, [["a", "b"]])) == ["a", "b"]
    assert message_job_ids(kombu_message(RUN_JOB, ["c"])) == ["c"]
    assert message_job_ids(kombu_message(RUN_PACK, [["a"]]), task="other") == []
    assert message_job_ids(kombu_message("other", ["x"])) == []


LOG_RATE = {"distribution": "log_uniform", "min": 1e-3, "max": 1.0}


def test_a_tpe_sweep_runs_pack_after_pack(settings, sessions):
    """The second pack's trials are proposed together once the first pack has ended,
    from everything the first taught the model."""
    body = {
        "base": copy.deepcopy(BASE),
        "method": "tpe",
        "parameters": {"hyperparameters.learning_rate": LOG_RATE},
        "n_trials": 8,
        "n_startup_trials": 2,
        "max_concurrency": 4,
        "packing": 4,
    }
    dispatcher = Recorder()
    dispatcher.enqueue_units(created_units(settings, sessions, body))
    settings = settings.model_copy(update={"chain_seconds": 0.0})
    kwargs = dict(settings=settings, session_factory=sessions, dispatcher=dispatcher)
    done = 0
    while done < len(dispatcher.units):
        run_pack_chain(**kwargs, job_ids=dispatcher.units[done])
        done += 1
    assert sizes(dispatcher.units) == [4, 4]
    with sessions() as session:
        jobs = session.scalars(select(Job).order_by(Job.trial_index)).all()
    assert [j.status for j in jobs] == ["succeeded"] * 8
    assert [j.proposal["finished"] for j in jobs] == [0, 0, 0, 0, 4, 4, 4, 4]
    assert [j.proposal["history"] for j in jobs] == list(range(8))
