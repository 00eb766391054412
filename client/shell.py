"""What every command shares: the server it talks to, where output goes, CSV input."""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from client.api import Client
from client.config import Target, resolve
from client.errors import BadInput

#: the width of tables written to a file or a pipe (a log, CI) when COLUMNS does not say:
#: rich would take 80 and cut a leaderboard's columns to an ellipsis
PIPE_WIDTH = 160


def _console(stream: Any, **kwargs: Any) -> Console:
    piped = not (hasattr(stream, "isatty") and stream.isatty()) and not os.environ.get("COLUMNS")
    return Console(highlight=False, width=PIPE_WIDTH if piped else None, **kwargs)


#: Tables and summaries for people (stdout); messages and progress next to --json (stderr).
out = _console(sys.stdout)
err = _console(sys.stderr, stderr=True)


@dataclass
class Options:
    """The global flags (``sweeplab --url ... --token ... <command>``)."""

    url: str | None = None
    token: str | None = None
    timeout: float = 30.0


def options(ctx: typer.Context) -> Options:
    found = ctx.find_object(Options)
    return found if found is not None else Options()


def target(ctx: typer.Context) -> Target:
    opts = options(ctx)
    return resolve(opts.url, opts.token)


def client(ctx: typer.Context) -> Client:
    """A client for the server the flags, the environment or the local stack name."""
    where = target(ctx)
    return Client(where.url, where.token, timeout=options(ctx).timeout)


def emit_json(value: Any) -> None:
    """The API's JSON on stdout, and nothing else there."""
    sys.stdout.write(json.dumps(value, indent=2) + "\n")
    sys.stdout.flush()


def say(text: str) -> None:
    """A message for the person (stderr: stdout stays parseable)."""
    err.print(text, markup=False, highlight=False, soft_wrap=True)


def read_csv_rows(
    path: Path, *, target_column: str | None = None
) -> tuple[list[str], list[list[float]]]:
    """A CSV of raw features with a header row: (column names, rows of numbers).

    ``target_column`` is dropped if given (e.g. the label column of a training file)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise BadInput(f"{path} is empty (a header row is expected)")
            header = [h.strip() for h in header]
            keep = list(range(len(header)))
            if target_column is not None:
                if target_column not in header:
                    raise BadInput(f"{path} has no column {target_column!r}; it has {header}")
                keep.remove(header.index(target_column))
            rows: list[list[float]] = []
            for line_no, row in enumerate(reader, start=2):
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise BadInput(
                        f"{path}: row {line_no} has {len(row)} values, the header {len(header)}"
                    )
                rows.append([_number(path, line_no, header[i], row[i]) for i in keep])
    except OSError as error:
        raise BadInput(f"cannot read {path}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise BadInput(f"{path} is not UTF-8 text") from error
    if not rows:
        raise BadInput(f"{path} has a header but no rows")
    return [header[i] for i in keep], rows


def in_feature_order(
    path: Path, header: list[str], rows: list[list[float]], names: list[str]
) -> list[list[float]]:
    """``rows`` (columns named by ``header``) with their columns in the order of the
    features the network was trained on (``names``); a :class:`BadInput` naming the
    difference when the header has other columns."""
    if header == names:
        return rows
    if sorted(header) != sorted(names):
        missing = [n for n in names if n not in header]
        extra = [h for h in header if h not in names]
        raise BadInput(
            f"{path}'s columns are not the features the job was trained on, {names}: "
            + "; ".join(
                part
                for part in (
                    f"missing {missing}" if missing else "",
                    f"not features {extra} (a label column: --target)" if extra else "",
                    "a column repeated" if not (missing or extra) else "",
                )
                if part
            )
        )
    order = [header.index(name) for name in names]
    return [[row[i] for i in order] for row in rows]


def _number(path: Path, line_no: int, column: str, cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise BadInput(
            f'{path}: row {line_no}, column "{column}": {cell!r} is not a number'
        ) from None
