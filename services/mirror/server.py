"""Run a local MLflow tracking server that starts fast and stays small.

MLflow 3.x's default server starts a job runner and queue processes (~2.4 GiB)
and four uvicorn workers, which add ~45 ms to every kept-alive request. One
uvicorn worker with job execution switched off serves our REST calls in a few
milliseconds from a ~0.5 GiB process. The SQLite backend and the artifacts live
under the project's ``var/`` directory; artifacts are proxied by the server so
workers on other hosts need no shared filesystem.

Used by ``make up`` / ``make demo`` (through ``services.stack``)
and by the test fixtures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000


def _mlflow_executable() -> str:
    here = Path(sys.executable).parent / "mlflow"
    if here.exists():
        return str(here)
    found = shutil.which("mlflow")
    if found is None:
        raise FileNotFoundError(
            "the mlflow server is not installed; pip install 'sweeplab[server]'"
        )
    return found


def server_command(
    host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, var_dir: str | os.PathLike = "var"
) -> tuple[list[str], dict[str, str]]:
    """Return the argv and the environment that run the server.

    The environment is the current one plus the variables that keep the server
    small; pass it whole to ``subprocess.Popen``.
    """
    var = Path(var_dir).resolve()
    allowed = ",".join(
        [f"{h}:{port}" for h in ("localhost", "127.0.0.1", host)] + ["localhost", "127.0.0.1"]
    )
    argv = [
        _mlflow_executable(),
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{var / 'mlflow.db'}",
        "--artifacts-destination",
        str(var / "mlartifacts"),
        "--serve-artifacts",
        "--workers",
        "1",
        "--allowed-hosts",
        allowed,
    ]
    env = dict(os.environ)
    env.update(
        {
            # No huey job runner / queue processes: most of the 2.4 GiB.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    # The server is a separate program: a client-side URI must not leak into it.
    env.pop("MLFLOW_TRACKING_URI", None)
    return argv, env


def start_server(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    var_dir: str | os.PathLike = "var",
    *,
    log_path: str | os.PathLike | None = None,
) -> subprocess.Popen:
    """Start the server in its own process group and return at once.

    Its output goes to ``log_path`` (default ``<var_dir>/mlflow.log``). Stop it
    with :func:`stop_server`, which ends the whole group (mlflow spawns uvicorn).
    """
    var = Path(var_dir)
    var.mkdir(parents=True, exist_ok=True)
    argv, env = server_command(host, port, var)
    log = open(log_path or var / "mlflow.log", "ab")  # noqa: SIM115 - owned by the child
    try:
        return subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        log.close()


def stop_server(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop a server started by :func:`start_server` and its children."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def is_ready(url: str, timeout: float = 1.0) -> bool:
    """Return True if the server at ``url`` answers its health check."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_ready(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> float:
    """Wait until the server answers; return the seconds waited.

    Raises ``TimeoutError`` after ``timeout`` seconds, or ``RuntimeError`` at once
    if ``proc`` is given and has exited.
    """
    start = time.monotonic()
    while True:
        if is_ready(url):
            return time.monotonic() - start
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the MLflow server exited with code {proc.returncode}")
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"MLflow server at {url} not ready after {timeout:.0f} s")
        time.sleep(0.25)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run sweeplab's local MLflow server.")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--var-dir", default="var")
    parser.add_argument(
        "--print-command", action="store_true", help="print the command line and exit"
    )
    parser.add_argument("--foreground", action="store_true", help="exec the server in this process")
    args = parser.parse_args(argv)
    cmd, env = server_command(args.host, args.port, args.var_dir)
    if args.print_command:
        print(" ".join(cmd))
        return 0
    Path(args.var_dir).mkdir(parents=True, exist_ok=True)
    if args.foreground:
        os.execve(cmd[0], cmd, env)
    proc = start_server(args.host, args.port, args.var_dir)
    url = f"http://{args.host}:{args.port}"
    waited = wait_ready(url, proc=proc)
    print(f"MLflow server pid {proc.pid} ready at {url} after {waited:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
