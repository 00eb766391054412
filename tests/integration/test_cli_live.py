"""`sweeplab watch` on a terminal (a pseudo-terminal, as a person's shell gives it): the
display is redrawn in place while the sweep trains, each running trial's bar moving
through its epochs, and lines for trials as they start and end."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from collections import defaultdict
from collections.abc import Iterator

import pytest

from tests.integration.cli_support import SWEEPLAB, Server, digits_job, lr_sweep, serve

pytestmark = pytest.mark.integration

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
EPOCHS = 400


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_base: str) -> Iterator[Server]:
    yield from serve(tmp_path_factory, redis_base)


def run_in_terminal(server: Server, *args: str, timeout: float = 240) -> tuple[int, str]:
    """Run ``sweeplab ARGS`` with a 120x40 pseudo-terminal as stdin, stdout and stderr;
    return its exit code and everything it wrote (escape sequences included)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = server.env(TERM="xterm-256color", COLUMNS="120", LINES="40")
    for key in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CI"):
        env.pop(key, None)
    proc = subprocess.Popen(
        [SWEEPLAB, *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=server.workdir,
        env=env,
        start_new_session=True,
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: the terminal's other side is closed
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_watch_redraws_bars_as_trials_train(server: Server) -> None:
    spec = lr_sweep([0.01, 0.03, 0.1, 0.3], digits_job(epochs=EPOCHS, units=64))
    (server.workdir / "sweep.json").write_text(json.dumps(spec))
    submitted = server.cli("submit", "sweep.json", "--json")
    assert submitted.returncode == 0, submitted.stderr
    sweep_id = json.loads(submitted.stdout)["id"]

    code, screen = run_in_terminal(server, "watch", sweep_id, "--poll", "0.2")
    text = ANSI.sub("", screen)
    assert code == 0, text[-3000:]

    # redrawn in place: the cursor goes back up over the last frame, many times
    assert screen.count("\x1b[1A") + screen.count("\x1b[2K") > 20, screen[:2000]
    # each running trial has a bar (rich's bar glyphs) and its epochs counting up
    assert "━" in text
    epochs_seen: dict[str, set[int]] = defaultdict(set)
    for trial, done in re.findall(rf"#(\d+)\s+[━╸╺ ]+\s+(\d+)/{EPOCHS}\b", text):
        epochs_seen[trial].add(int(done))
    moving = {
        t: sorted(s) for t, s in epochs_seen.items() if len({e for e in s if 0 < e < EPOCHS}) >= 3
    }
    assert len(moving) >= 2, (
        dict(epochs_seen),
        text[-6000:],
    )  # two trials seen at 3+ different epochs each
    # statuses as they change, above the bars; the best so far; the end
    for index in range(4):
        assert f"trial {index} running" in text and f"trial {index} succeeded" in text, text[-3000:]
    assert "best " in text and "objective=" in text
    assert "top of the leaderboard" in text  # the final summary once the sweep is done


def test_watch_a_job_redraws_its_bar_then_says_how_it_ended(server: Server) -> None:
    (server.workdir / "job.json").write_text(json.dumps(digits_job(epochs=EPOCHS, units=96)))
    submitted = server.cli("submit", "job.json", "--json")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]

    code, screen = run_in_terminal(server, "watch", job_id, "--poll", "0.2")
    text = ANSI.sub("", screen)
    assert code == 0, text[-3000:]
    seen = {int(d) for d in re.findall(rf"job\s+[━╸╺ ]+\s+(\d+)/{EPOCHS}\b", text)}
    assert len({e for e in seen if 0 < e < EPOCHS}) >= 3, (sorted(seen), text[-2000:])
    assert "val_loss=" in text  # the latest metrics beside the bar
    assert f"job {job_id} succeeded  best epoch" in text
