"""Reads that do not grow with a sweep: GET /sweeps/<id> in constant bytes and queries,
the leaderboard a page at a time, lists of summaries that never read a spec."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import event, insert

from services.db.models import Job, Sweep, new_id, utcnow
from services.ranking import best_trial, leaderboard
from tests.conftest import XOR_JOB

API = "/api/v1"
BIG_COLUMNS = ("spec", "result", "latest_metrics", "best_metrics", "diagnosis", "proposal")


def seed_sweep(
    sessions, n: int, *, goal: str = "minimize", statuses: list[str] | None = None, seed: int = 0
) -> str:
    """A sweep of ``n`` trials inserted in bulk: objectives with ties and gaps, specs
    and results as a real trial has them."""
    rng = random.Random(seed)
    spec = {"base": copy.deepcopy(XOR_JOB), "method": "grid", "parameters": {}}
    now = utcnow()
    sweep_id = new_id()
    rows = []
    for i in range(n):
        status = (statuses or ["succeeded", "succeeded", "diverged", "pruned", "running"])[i % 5]
        objective = None if i % 7 == 3 else rng.choice([0.25, 0.5, 0.75, 1.0, 2.0]) + (i % 3)
        rows.append(
            dict(
                id=new_id(),
                sweep_id=sweep_id,
                trial_index=i,
                name=f"t-{i}",
                status=status,
                params={"hyperparameters.learning_rate": 0.5},
                spec=copy.deepcopy(XOR_JOB),
                epochs_total=3,
                epochs_done=3,
                objective=objective,
                best_epoch=3 if objective is not None else None,
                result={"history": [{"loss": 1.0}] * 3},
                created_at=now - timedelta(seconds=n - i),
                updated_at=now,
            )
        )
    with sessions() as session:
        session.execute(
            insert(Sweep).values(
                id=sweep_id,
                status="running",
                method="grid",
                spec=spec,
                objective_metric="val_loss",
                objective_goal=goal,
                max_concurrency=2,
                n_trials=n,
                n_created=n,
                created_at=now,
                updated_at=now,
            )
        )
        if rows:
            session.execute(insert(Job), rows)
        session.commit()
    return sweep_id


@contextmanager
def statements(app) -> Iterator[list[str]]:
    """The SQL statements the app's engine runs inside the block."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    engine = app.extensions["sweeplab"].engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def reads_a_big_column(sql: list[str]) -> list[str]:
    return [s for s in sql if any(f"jobs.{c}" in s for c in BIG_COLUMNS)]


def test_a_sweep_reads_in_the_same_bytes_and_queries_whatever_its_size(app, client):
    sessions = app.extensions["sweeplab"].sessions
    small, big = seed_sweep(sessions, 10), seed_sweep(sessions, 300)
    client.get(f"{API}/sweeps/{small}")  # warm: the token's use is recorded once
    shown, sql = {}, {}
    for sweep_id in (small, big):
        with statements(app) as seen:
            response = client.get(f"{API}/sweeps/{sweep_id}")
        assert response.status_code == 200
        shown[sweep_id], sql[sweep_id] = response, seen
    assert len(sql[small]) == len(sql[big])
    assert reads_a_big_column(sql[big]) == []
    body = shown[big].get_json()
    assert len(body["leaderboard"]) == 10 and sum(body["counts"].values()) == 300
    assert body["epochs_done"] == 900
    # the same answer but for ids and numbers: 2 digits of count more, at most
    size_small, size_big = len(shown[small].data), len(shown[big].data)
    assert abs(size_big - size_small) <= 48, (size_small, size_big)


def test_the_leaderboard_pages_through_every_trial_in_the_ranking_rule(app, client):
    sessions = app.extensions["sweeplab"].sessions
    for goal in ("minimize", "maximize"):
        sweep_id = seed_sweep(sessions, 53, goal=goal, seed=7)
        sweep = client.get(f"{API}/sweeps/{sweep_id}").get_json()
        url, rows = sweep["links"]["leaderboard"] + "?limit=7", []
        while url:
            page = client.get(url).get_json()
            assert page["sweep_id"] == sweep_id and len(page["items"]) <= 7
            rows += page["items"]
            cursor = page["next_cursor"]
            url = f"{sweep['links']['leaderboard']}?limit=7&cursor={cursor}" if cursor else None
        with sessions() as session:
            row = session.get(Sweep, sweep_id)
            trials = list(session.query(Job).filter(Job.sweep_id == sweep_id))
            board = leaderboard(row, trials)
            best = best_trial(row, board)
            expected = [
                (t.id, i + 1 if t.objective is not None else None) for i, t in enumerate(board)
            ]
        assert [(r["job_id"], r["rank"]) for r in rows] == expected
        assert sweep["leaderboard"] == rows[:10]
        assert sweep["best_trial"]["job_id"] == best.id
        assert sweep["best_trial"]["rank"] == board.index(best) + 1


def test_the_best_trial_below_the_top_of_the_leaderboard_keeps_its_rank(app, client):
    sessions = app.extensions["sweeplab"].sessions
    # 24 trials: the 20 first (best objectives) pruned, then succeeded ones (a pruned trial
    # ranks by its value so far; a diverged one would rank below every succeeded one)
    statuses = ["pruned"] * 4 + ["succeeded"]  # every fifth succeeded...
    sweep_id = seed_sweep(sessions, 24, statuses=statuses, seed=3)
    with sessions() as session:
        row = session.get(Sweep, sweep_id)
        trials = list(session.query(Job).filter(Job.sweep_id == sweep_id))
        for t in trials:  # ...and those rank below every pruned one
            t.objective = (100.0 + t.trial_index) if t.status == "succeeded" else t.trial_index
        session.commit()
        board = leaderboard(row, trials)
        best = best_trial(row, board)
    rank = board.index(best) + 1
    assert rank > 10  # not on the top shown
    for url in (f"{API}/sweeps/{sweep_id}", f"{API}/sweeps"):
        with statements(app) as sql:
            body = client.get(url).get_json()
        shown = body["best_trial"] if "best_trial" in body else body["items"][0]["best_trial"]
        assert (shown["job_id"], shown["rank"]) == (best.id, rank)
        assert reads_a_big_column(sql) == []


def test_lists_are_summaries_that_never_read_a_spec(app, client):
    sessions = app.extensions["sweeplab"].sessions
    sweep_id = seed_sweep(sessions, 40)
    client.get(f"{API}/jobs")
    counts = {}
    for limit in (5, 40):
        for url in (
            f"{API}/jobs?limit={limit}",
            f"{API}/sweeps/{sweep_id}/trials?limit={limit}",
            f"{API}/sweeps?limit={limit}",
            f"{API}/sweeps/{sweep_id}/leaderboard?limit={limit}",
        ):
            with statements(app) as sql:
                body = client.get(url).get_json()
            assert reads_a_big_column(sql) == [], url
            assert not [s for s in sql if "sweeps.spec" in s], url
            counts.setdefault(url.split("?")[0], set()).add(len(sql))
            for item in body["items"]:
                assert not {"spec", "result", "latest_metrics", "leaderboard"} & set(item)
    assert all(len(n) == 1 for n in counts.values()), counts  # as many queries for 40 rows as 5
    job = client.get(f"{API}/jobs?limit=1").get_json()["items"][0]
    full = client.get(job["links"]["self"]).get_json()
    assert full["spec"] and full["result"]  # a job read alone shows them


def test_a_cursor_the_leaderboard_never_handed_out_is_a_400(app, client):
    sweep_id = seed_sweep(app.extensions["sweeplab"].sessions, 3)
    for cursor in ("nonsense", "WzEsMl0", "WyJ4IiwxLDIsIjMiXQ"):
        response = client.get(f"{API}/sweeps/{sweep_id}/leaderboard?cursor={cursor}")
        assert response.status_code == 400, cursor
        assert response.get_json()["error"]["details"][0]["loc"] == "cursor"
    assert client.get(f"{API}/sweeps/nope/leaderboard").status_code == 404


def test_a_list_of_sweeps_counts_each_sweeps_trials_in_one_query(app, client):
    sessions = app.extensions["sweeplab"].sessions
    mixed = seed_sweep(sessions, 7)  # succeeded, succeeded, diverged, pruned, running, ...
    done = seed_sweep(sessions, 3, statuses=["succeeded"] * 5, seed=1)
    with sessions() as session:  # a sweep with no trial yet
        session.execute(
            insert(Sweep).values(
                id="empty",
                status="running",
                method="grid",
                spec={"base": copy.deepcopy(XOR_JOB), "method": "grid", "parameters": {}},
                objective_metric="val_loss",
                objective_goal="minimize",
                max_concurrency=2,
                n_trials=2,
                n_created=0,
                created_at=utcnow() - timedelta(days=1),
                updated_at=utcnow(),
            )
        )
        session.commit()
    with statements(app) as sql:
        items = client.get(f"{API}/sweeps?limit=10").get_json()["items"]
    by_id = {item["id"]: item for item in items}
    assert set(by_id) == {mixed, done, "empty"}
    nonzero = {s: n for s, n in by_id[mixed]["counts"].items() if n}
    assert nonzero == {"succeeded": 4, "diverged": 1, "pruned": 1, "running": 1}
    assert by_id[mixed]["epochs_done"] == 21
    assert {s: n for s, n in by_id[done]["counts"].items() if n} == {"succeeded": 3}
    assert by_id["empty"]["counts"]["queued"] == 0 and not any(by_id["empty"]["counts"].values())
    assert by_id["empty"]["epochs_done"] == 0 and by_id["empty"]["best_trial"] is None
    assert len([s for s in sql if "GROUP BY" in s.upper()]) == 1  # not one count per sweep


def test_a_cursor_from_another_list_or_sweep_is_a_400(app, client):
    sessions = app.extensions["sweeplab"].sessions
    first, second = seed_sweep(sessions, 6), seed_sweep(sessions, 6, seed=1)
    board = client.get(f"{API}/sweeps/{first}/leaderboard?limit=2").get_json()
    assert board["next_cursor"]
    # the first sweep's cursor pages the first sweep, and only it
    assert (
        client.get(f"{API}/sweeps/{first}/leaderboard?cursor={board['next_cursor']}").status_code
        == 200
    )
    other = client.get(f"{API}/sweeps/{second}/leaderboard?cursor={board['next_cursor']}")
    assert other.status_code == 400 and other.get_json()["error"]["details"][0]["loc"] == "cursor"
    jobs = client.get(f"{API}/jobs?limit=2").get_json()["next_cursor"]
    sweeps = client.get(f"{API}/sweeps?limit=1").get_json()["next_cursor"]
    assert jobs and sweeps
    assert (
        client.get(f"{API}/jobs?cursor={jobs}").status_code == 200
        and client.get(f"{API}/sweeps?cursor={sweeps}").status_code == 200
    )
    for url in (f"{API}/sweeps?cursor={jobs}", f"{API}/jobs?cursor={sweeps}"):
        answer = client.get(url)
        assert answer.status_code == 400, url
        assert answer.get_json()["error"]["details"][0]["loc"] == "cursor"
