"""Samplers: the next trial's parameters by grid, random, or Optuna's TPE.

TPE proposals come from Optuna's ask-and-tell interface on an in-memory study
rebuilt from the trials in the database, so Optuna never touches the database
itself (its own storage on SQLite is a known source of lock errors)."""

from __future__ import annotations

from typing import Any

from services.db.models import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Job,
    Sweep,
)
from services.specs import (
    ParameterSpec,
)
from services.sweeps.space import grid_point, parameters_of, random_point


def optuna_distributions(parameters: dict[str, ParameterSpec]) -> dict[str, Any]:
    """Optuna distributions; choices are indices into ``values`` (any JSON value works)."""
    from optuna.distributions import (  # late: heavy (optuna)
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    dists: dict[str, Any] = {}
    for path, p in parameters.items():
        if p.values is not None:
            dists[path] = CategoricalDistribution(list(range(len(p.values))))
            continue
        assert p.min is not None and p.max is not None
        if p.distribution == "int_uniform":
            dists[path] = IntDistribution(int(p.min), int(p.max))
        else:
            dists[path] = FloatDistribution(p.min, p.max, log=p.distribution == "log_uniform")
    return dists


def _to_optuna(parameters: dict[str, ParameterSpec], params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for path, p in parameters.items():
        value = params[path]
        out[path] = p.values.index(value) if p.values is not None else value
    return out


def tpe_study(sweep: Sweep, trials: list[Job], index: int):  # -> optuna.Study
    """An in-memory Optuna study holding every trial so far, with a TPE sampler."""
    import optuna  # late: heavy (optuna)
    from optuna.trial import TrialState, create_trial  # late: heavy (optuna)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    parameters = parameters_of(sweep)
    dists = optuna_distributions(parameters)
    startup = sweep.spec.get("n_startup_trials")
    sampler = optuna.samplers.TPESampler(
        seed=(sweep.seed * 100_003 + index) & 0xFFFFFFFF,
        n_startup_trials=10 if startup is None else startup,
        constant_liar=True,  # trials still running count as pending, not as unknowns
    )
    direction = optuna.study.StudyDirection.MINIMIZE
    if sweep.objective_goal == "maximize":
        direction = optuna.study.StudyDirection.MAXIMIZE
    study = optuna.create_study(direction=direction, sampler=sampler)
    worst = _worst(trials, sweep.objective_goal == "maximize")
    for trial in trials:
        if not trial.params:
            continue
        value = trial.objective if trial.objective is not None else None
        if trial.status in ACTIVE_STATUSES:
            state, value = TrialState.RUNNING, None
        elif trial.status in ("pruned", "timed_out"):  # stopped early: its value so far
            state = TrialState.PRUNED
        elif trial.status == "succeeded" and value is not None:
            state = TrialState.COMPLETE
        elif trial.status in UNSTABLE and worst is not None:
            # Never a success: as bad as the worst trial that finished, so that TPE's
            # model puts its rate among the bad ones (FAIL would only be ignored).
            state, value = TrialState.COMPLETE, worst
        else:
            state, value = TrialState.FAIL, None
        intermediate = {trial.epochs_done: value} if value is not None and trial.epochs_done else {}
        study.add_trial(
            create_trial(
                params=_to_optuna(parameters, trial.params),
                distributions=dists,
                value=value if state == TrialState.COMPLETE else None,
                state=state,
                intermediate_values=intermediate if state == TrialState.PRUNED else {},
            )
        )
    return study, dists, parameters


#: trials whose learning rate was unstable: diverged, or skipped above a rate that did
UNSTABLE = frozenset({"diverged", "skipped"})


def _worst(trials: list[Job], maximize: bool) -> float | None:
    """The worst objective among the trials that succeeded (None: none has yet).

    The rule TPE is told for a diverged or skipped trial: this value, as a COMPLETE
    trial. While no trial has succeeded, such a trial is a FAIL (TPE ignores it)."""
    values = [t.objective for t in trials if t.status == "succeeded" and t.objective is not None]
    if not values:
        return None
    return min(values) if maximize else max(values)


def point_of(sweep: Sweep, index: int) -> int:
    """Which point of a grid or random sequence trial ``index`` takes: its index less
    the trials before it that run an earlier trial again (a resume's replays), so that
    the points continue where they were; a replay of a trial that never had parameters
    (the sampler failed) takes the point that trial was to take."""
    replays = sweep.replays or {}
    replay = replays.get(str(index))
    if replay is not None and replay.get("params") is None and replay.get("index") is not None:
        return point_of(sweep, int(replay["index"]))
    return index - sum(1 for k in replays if int(k) < index)


def replays_ahead(sweep: Sweep) -> dict[int, tuple[dict[str, Any], dict[str, Any]]]:
    """The parameters of the trials still to create that run an earlier trial again
    (``Sweep.replays``, set by a resume), by trial index."""
    out = {}
    for key, replay in (sweep.replays or {}).items():
        if int(key) >= sweep.n_created and replay.get("params") is not None:
            proposal = {**(replay.get("proposal") or {}), "replays": replay["from"]}
            out[int(key)] = (dict(replay["params"]), proposal)
    return out


def in_space(parameters: dict[str, ParameterSpec], params: dict[str, Any] | None) -> bool:
    """Whether ``params`` is a point of the space (a warm start's trials must be)."""
    if not params or set(params) != set(parameters):
        return False
    for path, p in parameters.items():
        value = params[path]
        if p.values is not None:
            if value not in p.values:
                return False
        elif isinstance(value, bool) or not isinstance(value, int | float):
            return False
        elif not (p.min is not None and p.max is not None and p.min <= value <= p.max):
            return False
    return True


def propose(sweep: Sweep, index: int, trials: list[Job]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parameters for trial ``index`` and a note on where they came from."""
    parameters = parameters_of(sweep)
    if sweep.method == "grid":
        point = point_of(sweep, index)
        return grid_point(parameters, point), {"method": "grid", "index": point}
    if sweep.method == "random":
        point = point_of(sweep, index)
        return random_point(parameters, sweep.seed, point), {"method": "random", "index": point}
    study, dists, parameters = tpe_study(sweep, trials, index)
    trial = study.ask(dists)
    params = {
        path: (p.values[trial.params[path]] if p.values is not None else trial.params[path])
        for path, p in parameters.items()
    }
    finished = sum(t.status in TERMINAL_STATUSES for t in trials)
    startup = sweep.spec.get("n_startup_trials")
    startup = 10 if startup is None else startup
    proposal = {
        "method": "tpe",
        "sampler": type(study.sampler).__name__,
        "index": index,
        "history": len(study.trials) - 1,
        "finished": finished,
        "startup": finished < startup,
    }
    return params, proposal
