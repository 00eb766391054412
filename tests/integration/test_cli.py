"""The `sweeplab` console script as a user runs it, against a real server (gunicorn, a
Celery worker, SQLite, Redis): a sweep submitted with --wait --json, its leaderboard, the
best trial's weights and predictions (the CLI's and the Python client's the same), and
every exit code (0 succeeded, 1 ended badly, 2 bad usage or a 4xx, 3 unreachable)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits

from client import ApiError, Client
from tests.integration.cli_support import SWEEPLAB, Server, digits_job, free_port, lr_sweep, serve
from tests.integration.harness import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_base: str) -> Iterator[Server]:
    yield from serve(tmp_path_factory, redis_base)


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[Client]:
    with Client(server.url, server.stack.token) as client:
        yield client


def has_route(api: Client, path: str) -> bool:
    """Whether the server documents ``path`` (as the OpenAPI document writes it, under
    its ``/api/v1`` server)."""
    document = api._http.get(api.url + "/api/v1/openapi.json").json()
    return path.removeprefix("/api/v1") in document.get("paths", {})


def _json(result: Any) -> Any:
    assert result.returncode == 0, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def finished_sweep(server: Server) -> dict[str, Any]:
    """A small LR sweep on digits run to its end through `sweeplab submit --wait --json`."""
    spec = server.workdir / "sweep.json"
    spec.write_text(json.dumps(lr_sweep([0.01, 0.1, 10.0], digits_job(epochs=6))))
    result = server.cli("submit", str(spec), "--wait", "--json")
    sweep = _json(result)  # stdout is the API's JSON and nothing else; exit 0
    assert sweep["status"] == "done" and sweep["counts"]["succeeded"] >= 2, sweep
    return sweep


def test_submit_wait_json_then_leaderboard_and_show(
    server: Server, api: Client, finished_sweep: dict[str, Any]
) -> None:
    sweep_id = finished_sweep["id"]
    assert finished_sweep == api.get(sweep_id)  # the final GET, exactly
    board = _json(server.cli("leaderboard", sweep_id, "--json"))
    assert board["sweep_id"] == sweep_id and board["next_cursor"] is None
    rows = board["items"]
    assert rows == api.leaderboard(sweep_id)
    assert len(rows) == 3 and rows[0]["job_id"] == finished_sweep["best_trial"]["job_id"]
    ranked = [r["objective"] for r in rows if r["rank"] is not None]
    assert ranked == sorted(ranked)  # val_loss, minimized: best first
    assert {r["params"]["hyperparameters.learning_rate"] for r in rows} == {0.01, 0.1, 10.0}
    assert _json(server.cli("show", sweep_id, "--json")) == finished_sweep
    # for people: a table on stdout, with every trial's learning rate
    human = server.cli("leaderboard", sweep_id)
    assert human.returncode == 0 and "learning_rate=10" in human.stdout
    listed = _json(server.cli("ls", "--sweeps", "--json"))
    assert sweep_id in [s["id"] for s in listed["items"]]
    trials = _json(server.cli("ls", "--sweep", sweep_id, "--json"))
    assert sorted(t["id"] for t in trials["items"]) == sorted(r["job_id"] for r in rows)
    assert trials["more"] is False
    # a list cut at --limit says so: "more" in JSON, a line on stderr
    cut = server.cli("ls", "--sweep", sweep_id, "--limit", "2", "--json")
    assert len(_json(cut)["items"]) == 2 and _json(cut)["more"] is True
    assert "the 2 newest jobs shown; there are more" in cut.stderr


def test_curves_in_the_terminal_as_json_and_png(
    server: Server, api: Client, finished_sweep: dict[str, Any]
) -> None:
    best = finished_sweep["best_trial"]["job_id"]
    drawn = server.cli("curves", finished_sweep["id"], "--png", "curves.png")
    assert drawn.returncode == 0, drawn.stderr
    assert f"its best trial, job {best}" in drawn.stderr
    assert "* train_loss  o val_loss" in drawn.stdout and "(epoch)" in drawn.stdout
    assert (server.workdir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    body = _json(server.cli("curves", best, "--json"))
    assert [e["epoch"] for e in body["epochs"]] == [1, 2, 3, 4, 5, 6]
    table = api.metrics_table(best)
    assert table["epoch"] == [1, 2, 3, 4, 5, 6]
    assert table["val_loss"] == [e["metrics"]["val_loss"] for e in body["epochs"]]
    assert api.metrics(best)[0] == {"epoch": 1, **body["epochs"][0]["metrics"]}


def _digits_csv(path: Path, n: int) -> tuple[list[list[float]], list[int]]:
    X, y = load_digits(return_X_y=True)
    rows = X[:n].tolist()
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([f"pixel_{i}" for i in range(64)] + ["label"])
        writer.writerows([*row, int(label)] for row, label in zip(rows, y[:n], strict=True))
    return rows, [int(v) for v in y[:n]]


def test_best_weights_and_predictions_agree_between_cli_and_client(
    server: Server, api: Client, finished_sweep: dict[str, Any]
) -> None:
    if not has_route(api, "/api/v1/jobs/{job_id}/weights"):
        pytest.skip("GET /jobs/<id>/weights is not on this branch yet")
    sweep_id, best = finished_sweep["id"], finished_sweep["best_trial"]["job_id"]
    got = server.cli("weights", sweep_id, "-o", "best.npz")
    assert got.returncode == 0, got.stderr
    with np.load(server.workdir / "best.npz", allow_pickle=False) as npz:
        from_cli = {name: npz[name] for name in npz.files}
    from_client = api.weights(best)
    assert from_cli.keys() == from_client.keys() >= {"W1", "b1", "W2", "b2", "spec"}
    for name, array in from_client.items():
        np.testing.assert_array_equal(from_cli[name], array)
    assert from_client["W1"].shape == (64, 16) and from_client["W2"].shape == (16, 10)
    assert (
        json.loads(str(from_client["spec"]))["hyperparameters"]["learning_rate"]
        == (finished_sweep["best_trial"]["params"]["hyperparameters.learning_rate"])
    )

    rows, labels = _digits_csv(server.workdir / "digits.csv", 20)
    by_cli = _json(server.cli("predict", best, "digits.csv", "--target", "label", "--json"))
    by_client = api.predict(best, rows)
    assert by_cli == by_client  # the same numbers, to the last bit
    assert by_cli["job_id"] == best and len(by_cli["predictions"]) == 20
    right = sum(int(p) == t for p, t in zip(by_cli["predictions"], labels, strict=True))
    assert right >= 15, (by_cli["predictions"], labels)  # a trained network, not noise
    table = server.cli("predict", sweep_id, "digits.csv", "--target", "label")
    assert table.returncode == 0, table.stderr
    assert f"predictions of job {best}" in table.stdout and "p(prediction)" in table.stdout


def test_exit_codes(server: Server, finished_sweep: dict[str, Any]) -> None:
    work = server.workdir
    # 1: it ran and diverged (a YAML job, recognised by content)
    (work / "diverge.yaml").write_text(yaml.safe_dump(digits_job(epochs=4, learning_rate=50.0)))
    ended = server.cli("submit", "diverge.yaml", "--wait")
    assert ended.returncode == 1, (ended.stdout, ended.stderr)
    assert "diverged" in ended.stdout

    # 2: the API refused the spec: its message and the field's path are shown
    (work / "bad.json").write_text(json.dumps(digits_job(learning_rate=-1.0)))
    refused = server.cli("submit", "bad.json")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "422 validation_error" in refused.stderr
    assert "hyperparameters.learning_rate:" in refused.stderr
    # 2: not a spec at all; an unknown id; a wrong token; bad usage
    (work / "neither.yaml").write_text("name: x\nepochs: 3\n")
    neither = server.cli("submit", "neither.yaml")
    assert neither.returncode == 2 and "neither a job" in neither.stderr
    unknown = server.cli("show", "0" * 32)
    assert unknown.returncode == 2 and "404 not_found: no job or sweep 000" in unknown.stderr
    who = server.cli("ls", SWEEPLAB_TOKEN="swl_nobody_secret")
    assert who.returncode == 2 and "401" in who.stderr
    assert server.cli("submit").returncode == 2
    assert server.cli("no-such-command").returncode == 2

    # 3: nobody listens there
    closed = f"http://127.0.0.1:{free_port()}"
    gone = server.cli("--url", closed, "show", finished_sweep["id"])
    assert gone.returncode == 3 and "cannot reach the sweeplab server" in gone.stderr
    assert server.cli("ls", SWEEPLAB_URL=closed).returncode == 3
    assert server.cli("status", "--json", SWEEPLAB_URL=closed).returncode == 3
    ready = _json(server.cli("status", "--json"))  # this server's /readyz, exit 0
    assert ready == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}

    # 0, then 1: a cancelled sweep
    (work / "long.json").write_text(json.dumps(lr_sweep([0.01, 0.02, 0.05], digits_job(200))))
    created = _json(server.cli("submit", "long.json", "--json"))
    cancelled = server.cli("cancel", created["id"], "--json")
    assert _json(cancelled)["id"] == created["id"]
    watched = server.cli("watch", created["id"], "--json", "--poll", "0.2")
    assert watched.returncode == 1, watched.stderr
    assert json.loads(watched.stdout)["status"] == "cancelled"
    # mirroring is off on this server: `open` has nothing to open
    nothing = server.cli("open", finished_sweep["id"])
    assert nothing.returncode == 1 and "no MLflow run" in nothing.stderr
    assert _json(server.cli("open", finished_sweep["id"], "--json")) is None


def test_watch_without_a_terminal_prints_plain_lines(server: Server) -> None:
    (server.workdir / "job.json").write_text(json.dumps(digits_job(epochs=5)))
    created = _json(server.cli("submit", "job.json", "--json"))
    watched = server.cli("watch", created["id"], "--poll", "0.2")
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.splitlines()
    assert "\x1b" not in watched.stdout  # no cursor movement, no colour: a log file's lines
    assert any("succeeded: epoch 5/5" in line for line in lines), lines
    assert any(line.startswith("[") and f"job {created['id']} succeeded" in line for line in lines)


def test_watch_outlives_an_api_restart(server: Server) -> None:
    (server.workdir / "restart.json").write_text(json.dumps(digits_job(epochs=500, units=48)))
    job_id = _json(server.cli("submit", "restart.json", "--json"))["id"]
    watcher = subprocess.Popen(
        [SWEEPLAB, "watch", job_id, "--poll", "0.2", "--retry-for", "60"],
        cwd=server.workdir,
        env=server.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        first = watcher.stdout.readline()  # the first progress line: it is watching
        assert job_id not in first and "epoch" in first, first
        server.stop_api()
        time.sleep(3)  # Client retries for ~2 s: the watch must wait longer than that
        server.start_api()
        out, errors = watcher.communicate(timeout=180)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 0, (out, errors)
    assert "no answer (cannot reach the sweeplab server" in out
    assert "the server answers again" in out
    assert f"job {job_id} succeeded" in out
    # a server that never answered is said at once (exit 3), not waited for
    closed = server.cli("watch", job_id, SWEEPLAB_URL=f"http://127.0.0.1:{free_port()}")
    assert closed.returncode == 3 and "no answer" not in closed.stdout


def test_tokens(server: Server) -> None:
    created = _json(server.cli("token", "create", "--user", "alice", "--name", "cli", "--json"))
    assert created["user"] == "alice" and created["token"].startswith("swl_")
    listed = _json(server.cli("token", "list", "--json"))
    assert created["id"] in [t["id"] for t in listed["items"]]
    mine = _json(server.cli("ls", "--jobs", "--json", SWEEPLAB_TOKEN=created["token"]))
    assert mine["items"] == []  # alice sees her own jobs only: none
    plain = server.cli("token", "create", "--user", "bob")
    assert plain.returncode == 0 and plain.stdout.strip().startswith("swl_")
    assert "shown this once" in plain.stderr
    revoked = _json(server.cli("token", "revoke", created["id"], "--json"))
    assert revoked["revoked_at"] is not None
    wait_for(
        lambda: server.cli("ls", SWEEPLAB_TOKEN=created["token"]).returncode == 2,
        15,
        "the revoked token to be refused",
        interval=1.0,
    )


def test_python_client_waits_with_a_callback(api: Client) -> None:
    seen: list[dict[str, Any]] = []
    job = api.submit(digits_job(epochs=4))
    final = api.wait(job["id"], callback=seen.append, poll=0.2)
    assert final["status"] == "succeeded" and seen[-1] == final
    assert [s["id"] for s in seen] == [job["id"]] * len(seen)
    assert api.kind(job["id"]) == "job" and api.mlflow_link(job["id"]) is None
    assert [r["epoch"] for r in api.metrics(job["id"])] == [1, 2, 3, 4]
    assert any(j["id"] == job["id"] for j in api.jobs(limit=None))
    with pytest.raises(ApiError) as caught:
        api.cancel(job["id"])
    assert caught.value.status == 409


def test_a_submission_sent_again_with_its_key_is_the_same_job(api: Client) -> None:
    """What the client's retry relies on: the server answers a repeated key with the
    resource it made (and refuses the key with another body)."""
    spec = digits_job(epochs=3, learning_rate=0.07)
    key = uuid.uuid4().hex
    first = api.submit(spec, idempotency_key=key)
    again = api.submit(spec, idempotency_key=key)
    assert again["id"] == first["id"]
    with pytest.raises(ApiError) as caught:
        api.submit(digits_job(epochs=3, learning_rate=0.08), idempotency_key=key)
    assert (caught.value.status, caught.value.code) == (422, "idempotency_key_reused")
    assert caught.value.details[0]["loc"] == "Idempotency-Key"
    fresh = api.submit(spec)  # a new key: a new job (the finished one reused, or queued)
    assert fresh["id"] != first["id"]


def test_the_example_script_runs(server: Server, api: Client) -> None:
    if not has_route(api, "/api/v1/jobs/{job_id}/predict"):
        pytest.skip("POST /jobs/<id>/predict is not on this branch yet")
    example = Path(__file__).resolve().parents[2] / "examples" / "client_example.py"
    result = subprocess.run(
        [sys.executable, str(example)],
        env=server.env(),
        cwd=server.workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert "predictions" in result.stdout


def test_resume_and_extend(server: Server, api: Client) -> None:
    if not has_route(api, "/api/v1/sweeps/{sweep_id}/extend"):
        pytest.skip("POST /sweeps/<id>/resume and /extend are not on this branch yet")
    # a sweep cancelled while its first trial trains, then resumed to its end
    spec = lr_sweep([0.011, 0.021, 0.051], digits_job(epochs=300), max_concurrency=1)
    (server.workdir / "resume.json").write_text(json.dumps(spec))
    sweep_id = _json(server.cli("submit", "resume.json", "--json"))["id"]
    wait_for(lambda: api.trials(sweep_id, status="running"), 60, "a trial to run")
    assert server.cli("cancel", sweep_id).returncode == 0
    stopped = server.cli("watch", sweep_id, "--json", "--poll", "0.2")
    assert stopped.returncode == 1 and json.loads(stopped.stdout)["status"] == "cancelled"
    resumed = server.cli("resume", sweep_id, "--wait", "--json", "--poll", "0.2", timeout=300)
    final = _json(resumed)
    assert final["status"] == "done" and final["best_trial"] is not None, final
    rates = {
        row["params"]["hyperparameters.learning_rate"]
        for row in api.leaderboard(sweep_id)
        if row["status"] == "succeeded"
    }
    assert rates == {0.011, 0.021, 0.051}
    done_again = server.cli("resume", sweep_id)  # nothing is missing: the API's 409
    assert done_again.returncode == 2 and "409" in done_again.stderr, done_again.stderr
    assert done_again.stderr.count("nothing to resume") == 1  # said once
    a_trial = api.trials(sweep_id)[0]["id"]
    for command in (["resume", a_trial], ["extend", a_trial, "--trials", "1"]):
        wrong = server.cli(*command)
        assert wrong.returncode == 2 and f"{a_trial} is a job" in wrong.stderr, wrong.stderr

    # a random sweep extended by 2 trials, the sampler going on
    spec = lr_sweep([0.01], digits_job(epochs=3))
    spec.update(method="random", n_trials=2)
    spec["parameters"] = {
        "hyperparameters.learning_rate": {"distribution": "log_uniform", "min": 0.01, "max": 0.1}
    }
    (server.workdir / "random.json").write_text(json.dumps(spec))
    done = _json(server.cli("submit", "random.json", "--wait", "--json"))
    grown = _json(server.cli("extend", done["id"], "--trials", "2", "--wait", "--json"))
    assert grown["n_trials"] == 4 and grown["counts"].get("succeeded") == 4, grown
    board = api.leaderboard(done["id"])
    assert len({r["params"]["hyperparameters.learning_rate"] for r in board}) == 4
    # a grid has no more points: 409, shown with its code
    exhausted = server.cli("extend", sweep_id, "--trials", "1")
    assert exhausted.returncode == 2 and "grid_exhausted" in exhausted.stderr, exhausted.stderr


def test_predict_takes_an_uploaded_csvs_columns_by_name(server: Server, api: Client) -> None:
    # a network trained on an uploaded CSV: a file with its columns in another order
    # predicts the same; a file with another column is refused, naming it
    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] - 2 * X[:, 2] > 0).astype(int)
    lines = ["a,b,c,label", *(f"{r[0]},{r[1]},{r[2]},{t}" for r, t in zip(X, y, strict=True))]
    uploaded = api._http.post(
        api.base + "/datasets",
        content="\n".join(lines).encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert uploaded.status_code in (200, 201), uploaded.text
    spec = {
        "name": "by-name",
        "dataset": {"name": "uploaded", "id": uploaded.json()["id"]},
        "architecture": {"layers": [{"units": 8}]},
        "hyperparameters": {"learning_rate": 0.1, "epochs": 5, "batch_size": 16, "seed": 1},
    }
    job = api.wait(api.submit(spec)["id"], timeout=120)
    assert job["status"] == "succeeded", job
    rows = X[:12]
    with open(server.workdir / "same.csv", "w", newline="") as out:
        csv.writer(out).writerows([["a", "b", "c"], *rows.tolist()])
    with open(server.workdir / "shuffled.csv", "w", newline="") as out:
        csv.writer(out).writerows([["c", "a", "b"], *rows[:, [2, 0, 1]].tolist()])
    with open(server.workdir / "other.csv", "w", newline="") as out:
        csv.writer(out).writerows([["a", "b", "d"], *rows.tolist()])
    same = _json(server.cli("predict", job["id"], "same.csv", "--json"))
    shuffled = _json(server.cli("predict", job["id"], "shuffled.csv", "--json"))
    assert shuffled["probabilities"] == same["probabilities"]
    assert same == api.predict(job["id"], rows.tolist())
    other = server.cli("predict", job["id"], "other.csv")
    assert other.returncode == 2 and other.stdout == ""
    assert "missing ['c']" in other.stderr and "not features ['d']" in other.stderr
