"""A real server for the CLI's tests: the API under gunicorn on a free port, one Celery
worker (two processes), a fresh SQLite database (tests.integration.harness.Stack), and a
way to run the installed ``sweeplab`` console script against it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import REPO, Stack, wait_for

BIN = Path(sys.executable).parent
SWEEPLAB = str(BIN / "sweeplab")
GUNICORN = str(BIN / "gunicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digits_job(epochs: int = 6, units: int = 16, **hp: Any) -> dict[str, Any]:
    return {
        "name": f"digits-{units}",
        "dataset": {"name": "digits", "validation_split": 0.2, "seed": 0},
        "architecture": {"layers": [{"units": units, "activation": "relu"}]},
        "hyperparameters": {"learning_rate": 0.1, "batch_size": 32, "epochs": epochs, **hp},
    }


def lr_sweep(lrs: list[float], base: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": "cli-lr-sweep",
        "base": base,
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": lrs}},
        "objective": {"metric": "val_loss", "goal": "minimize"},
        "max_concurrency": 2,
        **extra,
    }


class Server:
    """The API under gunicorn on ``port`` (it can be stopped and started again), the
    stack's worker behind it, and a working directory for the CLI."""

    def __init__(self, stack: Stack, port: int, workdir: Path):
        self.stack, self.port, self.workdir = stack, port, workdir
        self.url = f"http://127.0.0.1:{port}"
        self.api: subprocess.Popen[bytes] | None = None

    def start_api(self) -> None:
        with open(self.stack.workdir / "api.log", "ab") as log:
            self.api = subprocess.Popen(
                [GUNICORN, "--bind", f"127.0.0.1:{self.port}", "--workers", "1"]
                + ["--threads", "4", "--chdir", str(REPO), "api:create_app()"],
                cwd=REPO,
                env=self.stack.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        api = self.api
        wait_for(lambda: api.poll() is not None or _answers(self.port), 30, "the API")
        assert api.poll() is None, (self.stack.workdir / "api.log").read_text()[-3000:]

    def stop_api(self) -> None:
        if self.api is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.api.pid, signal.SIGTERM)
        self.api.wait(timeout=15)
        self.api = None

    def env(self, **extra: str) -> dict[str, str]:
        """The CLI's environment: this server and an admin token, nothing from var/."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEPLAB_")}
        env.update(SWEEPLAB_URL=self.url, SWEEPLAB_TOKEN=self.stack.token, COLUMNS="160")
        env.update(extra)
        return env

    def cli(self, *args: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``sweeplab ARGS`` (stdout and stderr captured: not a terminal)."""
        return subprocess.run(
            [SWEEPLAB, *args],
            cwd=self.workdir,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def serve(
    tmp_path_factory: pytest.TempPathFactory, redis_base: str, mlflow_url: str = ""
) -> Iterator[Server]:
    """Start a stack whose API listens on a real port (mirroring to ``mlflow_url`` if
    given: the API and the worker both read it); stop it afterwards."""
    stack = Stack("sqlite", tmp_path_factory.mktemp("cli-stack"), redis_base)
    stack.env["MLFLOW_TRACKING_URI"] = mlflow_url
    server = Server(stack, free_port(), tmp_path_factory.mktemp("cli-cwd"))
    try:
        server.start_api()
        stack.start_worker(concurrency=2)
        yield server
    finally:
        server.stop_api()
        stack.close()
        api_log = (stack.workdir / "api.log").read_text()
        assert "Traceback" not in api_log, api_log[-3000:]  # no request ever hit a 500


def _answers(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
