"""Shared by the MLflow integration and e2e tests: a real MLflow server, a stack mirroring to it,
and a few REST helpers that read MLflow back the way any client would.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from api import create_app
from services.config import Settings
from services.db import Job, Sweep
from services.mirror import server as mlflow_server
from tests.auth_support import authorize
from tests.integration.harness import Stack, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """A local MLflow server (services.mirror.server) that a test may stop and start again."""

    def __init__(self, var_dir: Path, port: int | None = None):
        self.var_dir = var_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        self.proc = mlflow_server.start_server("127.0.0.1", self.port, self.var_dir)
        return mlflow_server.wait_ready(self.url, timeout=180, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            mlflow_server.stop_server(self.proc)
            self.proc = None

    # --- REST, as documented for MLflow 3.x (/api/2.0/mlflow/...)

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        url = f"{self.url}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=30) as resp:
            return json.load(resp)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/api/2.0/mlflow/{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            return json.load(resp)

    def experiment_id(self, name: str) -> str:
        return self.get("experiments/get-by-name", experiment_name=name)["experiment"][
            "experiment_id"
        ]

    def runs(self, experiment_id: str, filter_string: str = "") -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = []
        token = None
        while True:
            body: dict[str, Any] = {
                "experiment_ids": [experiment_id],
                "filter": filter_string,
                "max_results": 1000,
                "run_view_type": "ALL",
            }
            if token:
                body["page_token"] = token
            page = self.post("runs/search", body)
            runs += page.get("runs", [])
            token = page.get("next_page_token")
            if not token:
                return runs

    def history(self, run_id: str, key: str) -> list[dict[str, Any]]:
        return self.get("metrics/get-history", run_id=run_id, metric_key=key, max_results=25000)[
            "metrics"
        ]

    def artifacts(self, run_id: str) -> list[str]:
        return [f["path"] for f in self.get("artifacts/list", run_id=run_id).get("files", [])]

    def artifact_bytes(self, run_id: str, path: str) -> bytes:
        query = urllib.parse.urlencode({"path": path, "run_uuid": run_id})
        with urllib.request.urlopen(f"{self.url}/get-artifact?{query}", timeout=30) as resp:
            return resp.read()


def tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def params(run: dict[str, Any]) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def mirroring_stack(backend: str, workdir: Path, redis_base: str, mlflow_url: str) -> Stack:
    """The service developer's Stack, with the mirror switched on (workers and API)."""
    stack = Stack(backend, workdir, redis_base)
    old = stack.app.extensions["sweeplab"]
    stack.env["MLFLOW_TRACKING_URI"] = mlflow_url
    stack.settings = Settings.from_env(stack.env)
    stack.app = create_app(stack.settings)
    stack.client = authorize(stack.app.test_client(), stack.token)
    old.dispatcher.close()
    old.engine.dispose()
    return stack


def wait_mirrored(stack: Stack, sweep_id: str, timeout: float = 120) -> None:
    """Wait until the sweep's parent run and every trial's run are final in MLflow."""

    def done() -> bool:
        with stack.sessions() as session:
            sweep = session.get(Sweep, sweep_id)
            assert sweep is not None
            jobs = session.query(Job).filter(Job.sweep_id == sweep_id).all()
            return (
                sweep.status != "running"
                and sweep.mlflow_synced_status == sweep.status
                and all(j.mlflow_synced_status == j.status for j in jobs)
            )

    try:
        wait_for(done, timeout, f"the MLflow mirror of sweep {sweep_id}", interval=0.25)
    except AssertionError:
        print(stack.logs())
        raise


def wait_job_mirrored(stack: Stack, job_id: str, timeout: float = 60) -> Job:
    def done() -> Job | None:
        job = stack.job(job_id)
        return job if job.mlflow_synced_status == job.status else None

    job = wait_for(done, timeout, f"the MLflow mirror of job {job_id}", interval=0.25)
    assert job is not None
    return job


def retry_http(fn, timeout: float = 10):  # the UI server may still be warming up
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
