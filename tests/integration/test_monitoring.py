"""Monitoring against the real things: a worker's task events, Flower as `make up` starts
it, the queue depth in Redis, and /metrics summed over gunicorn's processes."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from api import create_app
from services.celery_app import make_celery
from services.stack import commands, processes
from services.stack.flower import basic_auth_header, flower_status
from services.stack.tokens import TOKEN_FILE_NAME
from tests.auth_support import authorize
from tests.conftest import XOR_JOB
from tests.integration.harness import REPO, Stack, wait_for

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def stack(redis_base: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """SQLite and one worker process: what is watched here does not depend on the database."""
    s = Stack("sqlite", tmp_path_factory.mktemp("monitoring"), redis_base)
    try:
        s.start_worker(concurrency=1)
        yield s
    finally:
        s.close()


def fresh_job() -> dict[str, Any]:
    """A job no earlier one is identical to: it trains (an identical one is reused)."""
    spec = copy.deepcopy(XOR_JOB)
    spec["hyperparameters"]["learning_rate"] = 0.5 + (time.time_ns() % 10**6) * 1e-9
    return spec


class Events:
    """A Celery event receiver on the stack's broker, capturing in a thread."""

    def __init__(self, stack: Stack):
        self.app = make_celery(stack.settings)
        self.seen: list[dict[str, Any]] = []
        self.connection = self.app.connection_for_read()
        self.receiver = self.app.events.Receiver(self.connection, handlers={"*": self.seen.append})
        self.thread = threading.Thread(target=self._capture, daemon=True)

    def _capture(self) -> None:
        with suppress(Exception):  # the connection closes under it at the end
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> Events:
        self.thread.start()
        # pub/sub keeps no history: listen before anything is sent
        with self.app.connection_for_write() as conn:
            probe = self.app.events.Dispatcher(conn)
            wait_for(
                lambda: probe.send("sweeplab-probe") or self.of("sweeplab-probe"),
                20,
                "the event receiver to listen",
                interval=0.2,
            )
            probe.close()
        return self

    def __exit__(self, *exc: object) -> None:
        self.receiver.should_stop = True
        self.thread.join(timeout=5)
        self.connection.release()

    def of(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in list(self.seen)
            if e["type"] == kind and all(e.get(k) == v for k, v in fields.items())
        ]


def test_a_job_sends_task_events_from_the_api_and_the_worker(stack: Stack):
    with Events(stack) as events:
        job = stack.post("/jobs", fresh_job())
        assert stack.wait_job(job["id"]).status == "succeeded"
        received = wait_for(
            lambda: [e for e in events.of("task-received") if job["id"] in e["args"]],
            20,
            "task-received",
        )
        uuid = received[0]["uuid"]
        assert received[0]["name"] == "sweeplab.run_job"
        assert events.of("task-sent", uuid=uuid)  # from the API (task_send_sent_event)
        wait_for(lambda: events.of("task-succeeded", uuid=uuid), 20, "task-succeeded")
        assert events.of("task-started", uuid=uuid)
        assert received[0]["hostname"].startswith("w0-")


def _get(url: str, token: str | None = None, timeout: float = 5) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", basic_auth_header(token))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read()


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp shows them) with a listener on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(FileNotFoundError), open(table) as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


def _wait_until_flower_listens(stack: Stack, url: str) -> None:
    """Flower answers HTTP before its event receiver has subscribed (events are
    pub/sub: what is sent before is not seen); send a task-sent event of a probe
    task until Flower knows that task."""
    app = make_celery(stack.settings)
    probe = f"probe-{time.monotonic_ns()}"
    with app.connection_for_write() as conn:
        dispatcher = app.events.Dispatcher(conn)

        def seen() -> bool:
            dispatcher.send("task-sent", uuid=probe, name="probe", args="[]", kwargs="{}")
            return _get(f"{url}/api/task/info/{probe}", stack.token)[0] == 200

        wait_for(seen, 20, "Flower to listen to events", interval=0.2)
        dispatcher.close()


def test_flower_as_up_starts_it(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """On 127.0.0.1 only, basic auth with the local admin token (not on its command
    line), read-only; it sees the job's task succeed; `status` lists it, `down` stops it."""
    port = free_port()
    monkeypatch.setenv("SWEEPLAB_HOME", str(tmp_path))
    monkeypatch.setenv("SWEEPLAB_FLOWER_PORT", str(port))
    var = processes.var_dir()
    (var / TOKEN_FILE_NAME).write_text(stack.token + "\n")
    env = dict(stack.env, SWEEPLAB_HOME=str(tmp_path))
    proc = commands.up_flower(env, stack.token, var / "log")
    assert proc is not None
    url = f"http://127.0.0.1:{port}"
    try:
        pid = processes.running_pid("flower")
        assert pid is not None
        if Path("/proc/net/tcp").exists():
            assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            assert stack.token.encode() not in cmdline

        assert flower_status(url, None) == 401
        assert flower_status(url, "swl_wrong") == 401
        assert _get(url + "/")[0] == 401
        assert _get(url + "/api/workers?refresh=1")[0] == 401

        _wait_until_flower_listens(stack, url)
        job = stack.post("/jobs", fresh_job())
        assert stack.wait_job(job["id"]).status == "succeeded"

        def succeeded() -> bool:
            status, body = _get(url + "/api/tasks?limit=200", stack.token)
            assert status == 200
            tasks = json.loads(body)
            return any(
                t["name"] == "sweeplab.run_job"
                and job["id"] in t["args"]
                and t["state"] == "SUCCESS"
                for t in tasks.values()
            )

        wait_for(succeeded, 30, "Flower to see the job's task succeed", interval=0.3)
        workers = urllib.request.Request(
            f"{url}/api/worker/shutdown/nobody@nowhere", method="POST", data=b""
        )
        workers.add_header("Authorization", basic_auth_header(stack.token))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(workers, timeout=5)
        refused.value.close()
        assert refused.value.code == 403  # read-only

        capsys.readouterr()
        commands.status()
        assert f"flower  up  {url}" in capsys.readouterr().out
    finally:
        commands.down()
        proc.wait(timeout=10)
    assert "flower: stopped" in capsys.readouterr().out
    assert flower_status(url, stack.token) is None


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_queue_depth_comes_from_redis(stack: Stack):
    """Messages nobody consumes yet: a queue of the stack's broker with no worker on it."""
    settings = stack.settings.replace(celery_queue=f"{stack.queue}-idle")
    app = create_app(settings)
    client = authorize(app.test_client(), stack.token)
    try:
        app.extensions["sweeplab"].dispatcher.enqueue_jobs(["a", "b", "c"])
        text = client.get("/metrics").get_data(as_text=True)
        assert metric(text, "sweeplab_queue_depth", queue=settings.celery_queue) == 3
        assert metric(text, "sweeplab_queue_depth", queue=f"{settings.celery_queue}.control") == 0
        assert metric(text, "sweeplab_metrics_source_up", source="redis") == 1
        assert metric(text, "sweeplab_jobs", status="succeeded") >= 1
    finally:
        with redis.Redis.from_url(stack.redis_url) as r:
            r.delete(settings.celery_queue)
        app.extensions["sweeplab"].dispatcher.close()
        app.extensions["sweeplab"].engine.dispose()


def test_metrics_are_summed_over_gunicorns_processes(stack: Stack, tmp_path: Path):
    """Two gunicorn workers each count their own requests; every scrape, whichever
    process answers it, shows them all (PROMETHEUS_MULTIPROC_DIR, as `make up` runs it)."""
    port = free_port()
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = dict(stack.env, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    argv = [gunicorn, "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "2"]
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [*argv, "--chdir", str(REPO), "api:create_app()"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        # the master listens first; connections wait until a worker takes them. Only
        # these requests are sent before the scrapes, each answered (no timeout).
        wait_for(lambda: processes.port_open("127.0.0.1", port), 60, "gunicorn", interval=0.1)

        def pids() -> set[str]:  # the processes that have answered a request
            return {p.stem.rsplit("_", 1)[1] for p in metrics_dir.glob("histogram_*.db")}

        sent = 0
        deadline = time.monotonic() + 30
        while len(pids()) < 2 and time.monotonic() < deadline:
            _, body = _get(base + "/healthz", timeout=60)  # a new connection each
            assert json.loads(body)["status"] == "ok"
            sent += 1
        assert len(pids()) == 2, "both workers answered"

        for _ in range(4):
            request = urllib.request.Request(base + "/metrics")
            request.add_header("Authorization", f"Bearer {stack.token}")
            with urllib.request.urlopen(request, timeout=5) as resp:
                text = resp.read().decode()
            count = metric(
                text, "flask_http_request_duration_seconds_count", url_rule="/healthz", status="200"
            )
            assert count == sent
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        proc.wait(timeout=20)
        log.close()
