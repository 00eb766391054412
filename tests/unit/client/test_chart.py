"""Learning curves in plain characters: where each point lands, axes, gaps, log scale."""

from __future__ import annotations

from client.chart import LABEL_WIDTH, draw_chart


def _cells(lines: list[str], height: int) -> list[str]:
    """The plot area (rows of the grid, without the axis labels)."""
    return [line[LABEL_WIDTH + 2 :] for line in lines[:height]]


def test_points_land_where_their_values_say() -> None:
    lines = draw_chart({"loss": [4.0, 3.0, 2.0, 1.0]}, width=7, height=4)
    grid = _cells(lines, 4)
    # x 1..4 -> columns 0, 2, 4, 6; y 4..1 -> rows 0..3 (top is the largest)
    assert grid == ["*", "  *", "    *", "      *"]
    assert lines[0].startswith("4".rjust(LABEL_WIDTH) + " |")
    assert lines[3].startswith("1".rjust(LABEL_WIDTH) + " |")
    assert lines[4] == " " * LABEL_WIDTH + " +" + "-" * 7
    assert lines[5].split() == ["1", "4"]
    assert "* loss" in lines[6] and "(epoch)" in lines[6]


def test_two_series_two_markers_and_missing_values_left_out() -> None:
    lines = draw_chart(
        {"train_loss": [2.0, None, 0.0], "val_loss": [2.0, float("nan"), 1.0]},
        width=3,
        height=3,
    )
    grid = _cells(lines, 3)
    assert grid[0] == "o"  # both at (1, 2.0): the later series wins the cell
    assert grid[1] == "  o"  # val_loss 1.0 at epoch 3; epoch 2 is missing from both
    assert grid[2] == "  *"  # train_loss 0.0 at epoch 3
    assert "* train_loss  o val_loss" in lines[-1]


def test_log_scale_spreads_decades_and_drops_non_positive_values() -> None:
    lines = draw_chart({"loss": [100.0, 10.0, 1.0, 0.0]}, width=4, height=3, log_y=True)
    grid = _cells(lines, 3)
    assert grid == ["*", " *", "  *"]  # 0.0 has no logarithm: left out
    assert lines[0].strip().startswith("100 |")
    assert lines[1].strip().startswith("10 |")
    assert "log scale" in lines[-1]


def test_flat_and_empty_series() -> None:
    flat = _cells(draw_chart({"loss": [0.5, 0.5]}, width=3, height=3), 3)
    assert flat == ["", "* *", ""]
    assert draw_chart({"loss": [None, float("inf")]}) == ["(no finite values to draw)"]
    assert draw_chart({}) == ["(no finite values to draw)"]


def test_the_x_axis_follows_given_epochs() -> None:
    lines = draw_chart({"loss": [3.0, 1.0]}, x=[5, 10], width=6, height=2)
    assert _cells(lines, 2) == ["*", "     *"]
    assert lines[3].split() == ["5", "10"]
