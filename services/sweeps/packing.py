"""Trial packing: which of a sweep's new trials one worker process trains together.

A learning-rate sweep of a small network trains the same architecture on the same
data many times; ``services.trainer.fit_packed`` trains k such trials as one stack,
each with the numbers of its solo run, faster where a step is NumPy call overhead
rather than arithmetic (``services.trainer.packed_rule``). The scheduler creates a
sweep's trials as before (never more than ``max_concurrency`` queued or running: a
pack of k is k running trials); this module decides which of the trials one advance
created go to a worker as one ``run_pack`` message, and which alone (``run_job``).

The rule (the sweep's ``"packing"``):

- ``"off"``: every trial alone.
- ``k`` (an int): trials with the same ``pack_key`` in packs of up to
  ``min(k, max_concurrency)``.
- ``"auto"`` (the default): packs of ``k = ceil(min(max_concurrency, n_trials) /
  pack_processes)`` trials, so that each worker process (``SWEEPLAB_PACK_PROCESSES``,
  the workers' summed ``--concurrency``) gets one pack of the sweep's trials at once,
  if ``packing_pays(widths, batch_size, k)``; else alone. Spreading beats stacking:
  8 small trials on 2 processes train faster as two packs of 4 (each process busy)
  than as one pack of 8 (one process idle), since a pack of 8 is well under twice
  as fast as a pack of 4 (``benchmarks/packing_service.py``). With the default
  ``max_concurrency`` of 2 on 2 processes, ``k`` is 1: two solo trials use both
  cores better than a pack of 2 uses one.

The trials are dealt to the packs in turn (trial i to pack i mod the number of
packs), so that the packs are as even as they can be and a grid's sorted values
spread over them: packs that run side by side end together (with the trials of a
grid sorted by rate in two packs of 4, the higher rates' pack took 1.6x the
lower's: trials at high rates cost more per epoch, ``benchmarks/packing_service.py``).

Only trials of one ``pack_key`` (dataset, architecture, optimizer, batch size,
epochs, loss, dtype) share a pack; a sweep over, say, the hidden width makes one
group per width.

Who creates trials (``scheduler.advance_sweep``) notes them on the session
(:func:`note_trials`); whoever commits and sends them asks :func:`trial_units` for
the messages to send, as with ``services.sweeps.reused``."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from services.db.models import Job, Sweep
from services.specs import trainer_spec
from services.trainer import pack_key
from services.trainer.data import CLASSIFICATION, dataset_shape, dataset_task
from services.trainer.packed_rule import pack_size

log = logging.getLogger(__name__)

_KEY = "sweeplab.new_trials"


@dataclass
class NewTrials:
    """The queued trials one advance of one sweep created, with what the rule reads."""

    packing: str | int
    max_concurrency: int
    n_trials: int
    # (job id, pack key, widths, batch size), in creation order
    trials: list[tuple[str, str, tuple[int, ...], int | None]] = field(default_factory=list)


def widths_of(spec: dict[str, Any]) -> tuple[int, ...]:
    """``(n_features, hidden units..., n_outputs)`` of a normalized job spec, from the
    spec alone (no data is made)."""
    ds = spec["dataset"]
    n_features = dataset_shape(ds["name"], ds)[1]
    task, n_classes = dataset_task(ds["name"], ds)
    if task == CLASSIFICATION:
        k = int(n_classes or 2)
        sigmoid = spec["architecture"].get("output_activation") == "sigmoid"
        outputs = 1 if k == 2 and sigmoid else k
    else:
        outputs = int(ds.get("n_targets") or 1)
    hidden = [int(layer["units"]) for layer in spec["architecture"]["layers"]]
    return (n_features, *hidden, outputs)


def note_trials(session: Session, sweep: Sweep, jobs: list[Job]) -> None:
    """Note the queued trials ``jobs`` that an advance of ``sweep`` just created."""
    if not jobs:
        return
    note = NewTrials(
        packing=(sweep.spec or {}).get("packing", "auto"),
        max_concurrency=sweep.max_concurrency,
        n_trials=sweep.n_trials,
    )
    for job in jobs:
        if note.packing == "off":  # each alone: no need to read the spec
            note.trials.append((job.id, f"alone:{job.id}", (), None))
            continue
        try:
            spec = trainer_spec(job.spec)
            key = pack_key(spec)
            widths = widths_of(spec)
            batch = spec["hyperparameters"].get("batch_size")
        except Exception:  # a spec the rule cannot read: the trial runs alone
            log.warning("trial %s: not considered for packing", job.id, exc_info=True)
            key, widths, batch = f"alone:{job.id}", (), None
        note.trials.append((job.id, key, widths, batch))
    session.info.setdefault(_KEY, []).append(note)


def pack_size_for(
    note: NewTrials, widths: tuple[int, ...], batch: int | None, processes: int
) -> int:
    """How many trials of one group of ``note`` go in one pack (1: alone); see the module."""
    packing = note.packing
    if packing == "off" or not widths:
        return 1
    if isinstance(packing, int):
        return max(1, min(packing, note.max_concurrency))
    at_once = min(note.max_concurrency, note.n_trials)
    k = math.ceil(at_once / max(processes, 1))
    return pack_size(widths, batch, k) if k >= 2 else 1


def plan(note: NewTrials, processes: int) -> list[list[str]]:
    """The messages for the trials of ``note``: lists of job ids, packs and singles,
    each pack of one ``pack_key`` (its trials dealt in turn), in the creation order of
    their first trials."""
    groups: dict[str, list[tuple[str, tuple[int, ...], int | None]]] = {}
    for job_id, key, widths, batch in note.trials:
        groups.setdefault(key, []).append((job_id, widths, batch))
    units: list[tuple[int, list[str]]] = []
    order = {job_id: i for i, (job_id, *_) in enumerate(note.trials)}
    for members in groups.values():
        _, widths, batch = members[0]
        k = pack_size_for(note, widths, batch, processes)
        n_packs = math.ceil(len(members) / k)
        for first in range(n_packs):  # dealt round-robin: see the module
            ids = [job_id for job_id, _, _ in members[first::n_packs]]
            units.append((order[ids[0]], ids))
    return [ids for _, ids in sorted(units)]


def trial_units(session: Session, job_ids: list[str], processes: int) -> list[list[str]]:
    """The messages to send for the new trials ``job_ids``: packs (two ids or more, one
    ``run_pack``) and single ids (``run_job``), by the notes of the advances made in
    ``session`` (then forgotten). Ids no note mentions go alone."""
    wanted = dict.fromkeys(job_ids)
    units: list[list[str]] = []
    for note in session.info.pop(_KEY, []):
        for unit in plan(note, processes):
            ids = [job_id for job_id in unit if job_id in wanted]
            for job_id in ids:
                del wanted[job_id]
            if ids:
                units.append(ids)
    units += [[job_id] for job_id in wanted]
    return units
