"""Learning-rate schedules, evaluated per epoch, each with optional linear warm-up.

A schedule is a pure function of the epoch index, so its position in a
checkpoint is just the epoch. With ``warmup_epochs = w`` the rate climbs
linearly over the first ``w`` epochs, ``lr_e = base * (e + 1) / w`` for
``e < w``, and the schedule proper then runs from ``t = e - w = 0``:

- constant:     ``base``
- step:         ``base * gamma ** floor(t / step_size)``
- exponential:  ``base * gamma ** t``
- cosine:       ``min_lr + (base - min_lr) * (1 + cos(pi * min(t, T) / T)) / 2``,
                ``T = t_max`` (default: the epochs left after warm-up)
"""

from __future__ import annotations

import math
from collections.abc import Callable

Schedule = Callable[[float, int, dict, int], float]


def constant(base: float, t: int, options: dict, total: int) -> float:
    return base


def step(base: float, t: int, options: dict, total: int) -> float:
    return base * options.get("gamma", 0.1) ** (t // options.get("step_size", 10))


def exponential(base: float, t: int, options: dict, total: int) -> float:
    return base * options.get("gamma", 0.95) ** t


def cosine(base: float, t: int, options: dict, total: int) -> float:
    T = options.get("t_max") or max(total, 1)
    min_lr = options.get("min_lr", 0.0)
    return min_lr + (base - min_lr) * (1.0 + math.cos(math.pi * min(t, T) / T)) / 2.0


SCHEDULES: dict[str, Schedule] = {
    "constant": constant,
    "step": step,
    "exponential": exponential,
    "cosine": cosine,
}

#: options each schedule accepts (besides ``name`` and ``warmup_epochs``), with defaults
SCHEDULE_OPTIONS: dict[str, dict[str, float | int | None]] = {
    "constant": {},
    "step": {"step_size": 10, "gamma": 0.1},
    "exponential": {"gamma": 0.95},
    "cosine": {"t_max": None, "min_lr": 0.0},
}


def learning_rate(base: float, epoch_index: int, schedule: dict, epochs: int) -> float:
    """Learning rate for the 0-based ``epoch_index`` of a run of ``epochs`` epochs.

    ``schedule`` is the spec's ``lr_schedule`` dict (``name``, ``warmup_epochs``
    and the schedule's options).
    """
    name = schedule.get("name", "constant")
    try:
        fn = SCHEDULES[name]
    except KeyError:
        raise ValueError(
            f"unknown lr_schedule {name!r}; known: {', '.join(sorted(SCHEDULES))}"
        ) from None
    warmup = int(schedule.get("warmup_epochs", 0) or 0)
    if epoch_index < warmup:
        return base * (epoch_index + 1) / warmup
    return fn(base, epoch_index - warmup, schedule, epochs - warmup)
