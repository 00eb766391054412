"""What people read: parameter names shortened unless ambiguous, numbers to 4 digits,
predictions with their probabilities, ids never cut."""

from __future__ import annotations

import io

from rich.console import Console

from client.render import fmt, fmt_params, fmt_time, leaderboard_table, predictions_table


def _text(renderable: object, width: int = 100) -> str:
    console = Console(width=width, file=io.StringIO())
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_params_by_their_last_name_unless_two_share_it() -> None:
    assert fmt_params(
        {"hyperparameters.learning_rate": 0.01, "architecture.layers.0.units": 64}
    ) == ("learning_rate=0.01 units=64")
    assert fmt_params({"architecture.layers.0.units": 8, "architecture.layers.1.units": 4}) == (
        "architecture.layers.0.units=8 architecture.layers.1.units=4"
    )
    assert fmt_params(None) == ""


def test_numbers_and_times() -> None:
    assert (fmt(0.123456789), fmt(1e-7), fmt(3), fmt(None), fmt("x")) == (
        "0.1235",
        "1e-07",
        "3",
        "-",
        "x",
    )
    assert fmt_time("2026-12-04T16:15:37.123456+00:00") == "2026-12-04 16:15:37"
    assert fmt_time(None) == "-"


def test_predictions_each_class_or_the_predicted_ones_probability() -> None:
    few = {
        "predictions": ["cat", "dog"],
        "classes": ["cat", "dog"],
        "probabilities": [[0.9, 0.1], [0.25, 0.75]],
    }
    text = _text(predictions_table(few))
    assert "p(cat)" in text and "p(dog)" in text and "0.75" in text
    many = {
        "predictions": [3],
        "classes": list(range(10)),
        "probabilities": [[0.01] * 3 + [0.91] + [0.01] * 6],
    }
    text = _text(predictions_table(many))
    assert "p(prediction)" in text and "0.91" in text and "p(0)" not in text
    regression = {"predictions": [1.5], "classes": None, "probabilities": None}
    assert "1.5" in _text(predictions_table(regression))


def test_ids_are_never_cut_even_in_a_narrow_terminal() -> None:
    job = "0123456789abcdef0123456789abcdef"
    row = {
        "rank": 1,
        "job_id": job,
        "trial_index": 0,
        "status": "succeeded",
        "objective": 0.1,
        "params": {"a.b": 1},
        "best_epoch": 3,
        "epochs_done": 3,
    }
    assert job in _text(leaderboard_table([row]), width=60)
