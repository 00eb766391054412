"""The service as a user meets it: real gunicorn, real Celery worker processes, real HTTP.

One API process (gunicorn, on a free port) and one worker (two processes) on a
fresh SQLite database, a private Redis database number and queue (see
``tests.integration.harness.Stack``); MLflow is off. Everything goes through
HTTP with ``urllib`` and ``http.client``, as ``curl`` would.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import REPO, Stack, wait_for

pytestmark = pytest.mark.e2e

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
TERMINAL = {"succeeded", "failed", "diverged", "cancelled", "pruned"}


class Service:
    """A running API process and worker on one stack, spoken to over HTTP."""

    def __init__(self, stack: Stack, port: int, api: subprocess.Popen[bytes]):
        self.stack, self.port, self.api = stack, port, api
        self.base = f"http://127.0.0.1:{port}"

    def call(
        self, method: str, path: str, body: Any = None, *, content_type: str = "application/json"
    ) -> tuple[int, str, bytes]:
        """Send one request; return (status, content type, body) whatever the status."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.stack.token}")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.headers.get_content_type(), response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get_content_type(), err.read()

    def json(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        code, kind, raw = self.call(method, path, body)
        assert code == status and kind == "application/json", (code, raw[:500])
        return json.loads(raw)

    def wait_job(self, job_id: str, timeout: float) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            job = self.json("GET", f"/api/v1/jobs/{job_id}")
            return job if job["status"] in TERMINAL else None

        try:
            return wait_for(done, timeout, f"job {job_id}", interval=0.2)
        except AssertionError:
            print(self.stack.logs())
            raise


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(redis_base: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    stack = Stack("sqlite", tmp_path_factory.mktemp("http-service"), redis_base)
    # Fast recovery, so that a worker lost mid-job is replaced within seconds.
    stack.env.update(SWEEPLAB_RECOVER_SECONDS="1", SWEEPLAB_REQUEUE_SECONDS="5")
    port = free_port()
    log = open(stack.workdir / "api.log", "wb")  # noqa: SIM115 (closed at teardown)
    api = subprocess.Popen(
        [
            GUNICORN,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "4",
            "--chdir",
            str(REPO),
            "api:create_app()",
        ],
        cwd=REPO,
        env=stack.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    service = Service(stack, port, api)
    try:
        stack.start_worker(concurrency=2)
        wait_for(
            lambda: (
                api.poll() is not None or service.call("GET", "/healthz")[0] == 200
                if _port_open(port)
                else False
            ),
            30,
            "the API",
        )
        assert api.poll() is None, (stack.workdir / "api.log").read_text()[-3000:]
        yield service
    finally:
        with suppress(ProcessLookupError):
            os.killpg(api.pid, signal.SIGTERM)
        api.wait(timeout=15)
        log.close()
        stack.close()
        api_log = (stack.workdir / "api.log").read_text()
        assert "Traceback" not in api_log, api_log[-3000:]  # no request ever hit a 500


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def metrics_of(service: Service, job_id: str) -> tuple[list[int], list[int]]:
    """Epochs of the learning curve as JSON and as CSV."""
    body = service.json("GET", f"/api/v1/jobs/{job_id}/metrics")
    code, kind, raw = service.call("GET", f"/api/v1/jobs/{job_id}/metrics?format=csv")
    assert code == 200 and kind == "text/csv"
    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    return [e["epoch"] for e in body["epochs"]], [int(r["epoch"]) for r in rows]


def test_lr_sweep_over_http(service: Service):
    sweep = json.loads((REPO / "examples" / "lr_sweep.json").read_text())
    sweep["base"]["hyperparameters"]["epochs"] = 5
    values = sweep["parameters"]["hyperparameters.learning_rate"]["values"]
    sweep["parameters"]["hyperparameters.learning_rate"]["values"] = values[1:4]  # stable rates
    created = service.json("POST", "/api/v1/sweeps", sweep, status=201)
    assert created["n_trials"] == 3

    def finished() -> dict[str, Any] | None:
        shown = service.json("GET", created["links"]["self"])
        active = shown["counts"]["queued"] + shown["counts"]["running"]
        return shown if shown["status"] != "running" and not active else None

    done = wait_for(finished, 45, "the sweep", interval=0.2)
    assert done["status"] == "done" and done["counts"]["succeeded"] == 3
    board = done["leaderboard"]
    assert [row["objective"] for row in board] == sorted(row["objective"] for row in board)
    assert len(board) == 3 and done["best_trial"]["job_id"] == board[0]["job_id"]
    trials = service.json("GET", f"/api/v1/sweeps/{created['id']}/trials")["items"]
    assert {t["id"] for t in trials} == {row["job_id"] for row in board}
    for row in board:
        as_json, as_csv = metrics_of(service, row["job_id"])
        assert as_json == as_csv == [1, 2, 3, 4, 5]
    code, _, raw = service.call("POST", f"/api/v1/sweeps/{created['id']}/cancel")
    assert code == 409 and json.loads(raw)["error"]["code"] == "conflict"


JOB = {
    "dataset": {"name": "xor", "n_samples": 64},
    "architecture": {"layers": [{"units": 4, "activation": "tanh"}]},
    "hyperparameters": {"learning_rate": 0.5, "epochs": 3},
}


def _job(**changes: Any) -> bytes:
    spec = json.loads(json.dumps(JOB))
    for path, value in changes.items():
        section, key = path.split("__")
        spec[section][key] = value
    return json.dumps(spec).encode()


def _sweep(**changes: Any) -> dict[str, Any]:
    body = {
        "base": JOB,
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.1]}},
    }
    body.update(changes)
    return body


BAD_REQUESTS = [
    # (method, path, body, content type, status, code, loc)
    ("POST", "/api/v1/jobs", b'{"dataset":', "application/json", 400, "malformed_json", None),
    ("POST", "/api/v1/jobs", b"", "application/json", 400, "malformed_json", None),
    ("POST", "/api/v1/jobs", _job(), "text/plain", 415, "unsupported_media_type", None),
    (
        "POST",
        "/api/v1/jobs",
        _job().replace(b"0.5", b"NaN"),
        "application/json",
        400,
        "malformed_json",
        None,
    ),
    (
        "POST",
        "/api/v1/jobs",
        _job().replace(b"0.5", b"1e400"),
        "application/json",
        400,
        "malformed_json",
        None,
    ),
    ("POST", "/api/v1/jobs", b"[]", "application/json", 422, "validation_error", ""),
    (
        "POST",
        "/api/v1/jobs",
        _job(dataset__colour="red"),
        "application/json",
        422,
        "validation_error",
        "dataset.colour",
    ),
    (
        "POST",
        "/api/v1/jobs",
        _job(hyperparameters__learning_rate=0),
        "application/json",
        422,
        "validation_error",
        "hyperparameters.learning_rate",
    ),
    (
        "POST",
        "/api/v1/jobs",
        _job(hyperparameters__learning_rate="fast"),
        "application/json",
        422,
        "validation_error",
        "hyperparameters.learning_rate",
    ),
    (
        "POST",
        "/api/v1/jobs",
        _job(hyperparameters__optimizer="lion"),
        "application/json",
        422,
        "validation_error",
        "hyperparameters.optimizer",
    ),
    (
        "POST",
        "/api/v1/jobs",
        _job(hyperparameters__seed=10**30),
        "application/json",
        422,
        "validation_error",
        "hyperparameters.seed",
    ),
    (
        "POST",
        "/api/v1/jobs",
        _job(architecture__layers=[{"units": 0}]),
        "application/json",
        422,
        "validation_error",
        "architecture.layers.0.units",
    ),
    (
        "POST",
        "/api/v1/jobs",
        _job(architecture__layers=[{"units": 4, "activation": "gelu"}]),
        "application/json",
        422,
        "validation_error",
        "architecture.layers.0.activation",
    ),
    (
        "POST",
        "/api/v1/jobs",
        _job(dataset__name="mnist"),
        "application/json",
        422,
        "validation_error",
        "dataset.name",
    ),
    (
        "POST",
        "/api/v1/jobs",
        json.dumps({**JOB, "name": "x" * 2**21}).encode(),
        "application/json",
        413,
        "payload_too_large",
        None,
    ),
    (
        "POST",
        "/api/v1/sweeps",
        _sweep(method="random"),
        "application/json",
        422,
        "validation_error",
        "n_trials",
    ),
    (
        "POST",
        "/api/v1/sweeps",
        _sweep(seed=10**30),
        "application/json",
        422,
        "validation_error",
        "seed",
    ),
    (
        "POST",
        "/api/v1/sweeps",
        _sweep(parameters={"hyperparameters.nope": {"values": [1]}}),
        "application/json",
        422,
        "validation_error",
        "parameters.hyperparameters.nope.values.0",
    ),
    (
        "POST",
        "/api/v1/sweeps",
        _sweep(parameters={"architecture.layers.3.units": {"values": [2]}}),
        "application/json",
        422,
        "validation_error",
        "parameters.architecture.layers.3.units",
    ),
    (
        "POST",
        "/api/v1/sweeps",
        _sweep(parameters={"architecture.layers.0.units": {"values": [2, "two"]}}),
        "application/json",
        422,
        "validation_error",
        "parameters.architecture.layers.0.units.values.1",
    ),
    ("GET", "/api/v1/jobs/nope", None, "", 404, "not_found", None),
    ("GET", "/api/v1/jobs/nope/metrics", None, "", 404, "not_found", None),
    ("POST", "/api/v1/jobs/nope/cancel", None, "", 404, "not_found", None),
    ("GET", "/api/v1/sweeps/nope", None, "", 404, "not_found", None),
    ("POST", "/api/v1/sweeps/nope/cancel", None, "", 404, "not_found", None),
    ("GET", "/api/v1/jobs/nope/cancel", None, "", 405, "method_not_allowed", None),
    ("DELETE", "/api/v1/jobs", None, "", 405, "method_not_allowed", None),
    ("GET", "/api/v1/nowhere", None, "", 404, "not_found", None),
    ("GET", "/nowhere", None, "", 404, "not_found", None),
    ("GET", "/api/v1/jobs?cursor=garbage", None, "", 400, "bad_request", "cursor"),
    ("GET", "/api/v1/jobs?limit=%C2%B2", None, "", 400, "bad_request", "limit"),
    ("GET", "/api/v1/jobs?status=bogus", None, "", 400, "bad_request", "status"),
    ("GET", "/api/v1/sweeps?status=bogus", None, "", 400, "bad_request", "status"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status", "code", "loc"), BAD_REQUESTS
)
def test_bad_requests_get_a_4xx_in_the_error_format(
    service: Service, method, path, body, content_type, status, code, loc
):
    got, kind, raw = service.call(method, path, body, content_type=content_type)
    assert (got, kind) == (status, "application/json"), raw[:300]
    error = json.loads(raw)["error"]
    assert error["code"] == code and error["message"]
    if loc is not None:
        assert loc in [d["loc"] for d in error["details"]], error


@pytest.mark.parametrize("size", [2 * 2**20, 12 * 2**20])
def test_a_client_that_sends_its_whole_body_first_gets_the_413(service: Service, size: int):
    """urllib (as requests) writes the whole body before it reads the answer.

    The server must read a refused body (up to 16 MiB) before it answers and
    closes, or such a client sees a broken pipe instead of the 413.
    """
    body = json.dumps({**JOB, "name": "x" * size}).encode()
    for _ in range(3):
        code, kind, raw = service.call("POST", "/api/v1/jobs", body)
        assert (code, kind) == (413, "application/json"), raw[:300]
        assert json.loads(raw)["error"]["code"] == "payload_too_large"


def test_chunked_body_over_the_limit_is_413(service: Service):
    """Without a Content-Length the body is cut at 1 MiB; it must not be read as JSON."""
    body = json.dumps({**JOB, "name": "x" * 2**21}).encode()
    head = (
        b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {service.stack.token}\r\n".encode()
        + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        try:
            sock.sendall(head)
            for i in range(0, len(body), 65536):
                chunk = body[i : i + 65536]
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before it has read the rest, as curl allows
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 413
        assert json.loads(response.read())["error"]["code"] == "payload_too_large"


def test_killed_worker_mid_job_is_replaced_and_every_epoch_lands_once(service: Service):
    spec = {
        "name": "slow",
        "dataset": {"name": "blobs", "n_samples": 40_000, "seed": 0},
        "architecture": {"layers": [{"units": 32, "activation": "tanh"}]},
        "hyperparameters": {"learning_rate": 0.05, "epochs": 40, "batch_size": 16},
    }
    job = service.json("POST", "/api/v1/jobs", spec, status=201)
    wait_for(
        lambda: service.json("GET", f"/api/v1/jobs/{job['id']}")["progress"]["epoch"] >= 6,
        30,
        "six epochs",
        interval=0.1,
    )
    # The whole worker goes at once, as when its machine dies: nobody acks or requeues.
    (victim,) = [w for w in service.stack.workers if w.poll() is None]
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    lost_at = service.json("GET", f"/api/v1/jobs/{job['id']}")["progress"]["epoch"]
    assert lost_at < 40
    service.stack.start_worker(concurrency=2)
    done = service.wait_job(job["id"], timeout=40)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2 and done["progress"]["epoch"] == 40
    as_json, as_csv = metrics_of(service, job["id"])
    assert as_json == as_csv == list(range(1, 41))
    code, _, raw = service.call("POST", f"/api/v1/jobs/{job['id']}/cancel")
    assert code == 409 and json.loads(raw)["error"]["code"] == "conflict"


def test_readyz_answers(service: Service):
    assert service.json("GET", "/readyz")["checks"] == {"database": "ok", "redis": "ok"}
    assert service.json("GET", "/healthz") == {"status": "ok", "service": "sweeplab"}
