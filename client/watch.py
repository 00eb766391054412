"""Live progress of a job or a sweep: rich bars on a terminal, plain lines elsewhere.

A sweep shows a bar per running trial (epochs done of its epochs), its counts and
the best trial so far; a line goes above the bars whenever a trial starts or ends
(with its objective, and its diagnosis when it did not succeed). A job shows one bar
with its latest metrics, then its status and diagnosis. Without a terminal (a pipe,
a log file, CI) the same events come as plain lines, and the progress as a line
whenever it changes.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from client.api import JOB_ENDS, JSON, Client, is_final, kind_of
from client.errors import ApiError, Unreachable
from client.render import (
    best_line,
    ceiling_lines,
    diagnosis_lines,
    fmt,
    fmt_counts,
    fmt_metrics,
    fmt_params,
    lr_finding_lines,
)

BAR_WIDTH = 30
#: How long a watch keeps asking a server that does not answer (a restart, an outage).
RETRY_SECONDS = 60.0
#: Ends whose diagnosis is worth a line under the trial's (the trainer said why).
DIAGNOSED = frozenset({"failed", "diverged", "timed_out"})
#: Ends after training: their learning-rate findings get a line too.
TRAINED = DIAGNOSED | {"succeeded", "pruned", "cancelled"}


def _now() -> str:
    return time.strftime("%H:%M:%S")


class Watcher:
    """Poll ``id`` every ``poll`` seconds until it ends, drawing on ``console``."""

    def __init__(
        self,
        client: Client,
        id: str,
        console: Console,
        *,
        poll: float = 1.0,
        retry_for: float = RETRY_SECONDS,
    ):
        self.client, self.id, self.console, self.poll = client, id, console, poll
        self.retry_for = retry_for
        self._answered = False  # the server answered once: later silences are waited out
        self.live_mode = console.is_terminal
        self._running: dict[str, JSON] = {}
        self._reported: set[str] = set()  # ended trials already given a line
        self._ended_seen: int | None = None  # ended trials counted at the last poll
        self._last_line = ""

    # ------------------------------------------------------------------ the loop

    def run(self) -> JSON:
        """Watch until the job or the sweep ends; return its final answer."""
        if not self.live_mode:
            return self._loop(None)
        with Live(console=self.console, refresh_per_second=8, transient=True) as live:
            return self._loop(live)

    def _loop(self, live: Live | None) -> JSON:
        while True:
            resource, trials = self._poll()
            sweep = kind_of(resource) == "sweep"
            view = self._sweep_view(resource, trials) if sweep else self._job_view(resource)
            if live is not None:
                live.update(view, refresh=True)
            else:
                line = self._sweep_line(resource) if sweep else self._job_line(resource)
                if line != self._last_line:
                    self._say(line)
                    self._last_line = line
            if is_final(resource):
                if not sweep:
                    self._job_ended(resource)
                for text in ceiling_lines(resource) if sweep else []:
                    self._say(text)
                return resource
            time.sleep(self.poll)

    def _poll(self) -> tuple[JSON, list[JSON]]:
        """The job or sweep and its running trials. While the server is away (no answer,
        or a 5xx: an API restart, a database outage) it is asked again for up to
        ``retry_for`` seconds before giving up, so that a watch outlives a restart."""
        away_since: float | None = None
        while True:
            try:
                resource = self.client.get(self.id)
                trials = self._trials(resource) if kind_of(resource) == "sweep" else []
            except (Unreachable, ApiError) as err:
                if not self._answered or (isinstance(err, ApiError) and err.status < 500):
                    raise  # a wrong address or id is said at once
                now = time.monotonic()
                if away_since is None:
                    away_since = now
                    self._say(f"no answer ({err}); asking again for {self.retry_for:.0f} s")
                if now - away_since > self.retry_for:
                    raise
                time.sleep(max(self.poll, 0.5))
                continue
            if away_since is not None:
                self._say("the server answers again")
            self._answered = True
            return resource, trials

    def _say(self, text: str) -> None:
        self.console.print(f"[{_now()}] {text}", markup=False, highlight=False, soft_wrap=True)

    # ------------------------------------------------------------------ sweeps

    def _trials(self, sweep: JSON) -> list[JSON]:
        """The running trials; a line for each trial that started or ended since the last
        poll (ended ones are found newest first among the ended, as many as the counts
        grew by: a trial that started and ended between two polls is reported too)."""
        limit = max(50, 2 * int(sweep.get("max_concurrency") or 1))
        running = self.client.trials(self.id, status="running", limit=limit)
        for trial in running:
            if trial["id"] not in self._running:
                self._say(
                    f"trial {trial.get('trial_index')} running  {fmt_params(trial['params'])}"
                )
        self._running = {t["id"]: t for t in running}
        counts = sweep.get("counts") or {}
        ended = sorted(s for s in JOB_ENDS if counts.get(s))
        total = sum(counts[s] for s in ended)
        if self._ended_seen is None:  # what had ended before we started watching: no lines
            known = self.client.trials(self.id, status=",".join(ended), limit=200) if ended else []
            self._reported.update(t["id"] for t in known)
            self._ended_seen = total
        elif total > self._ended_seen:
            new = total - self._ended_seen
            found = []
            for trial in self.client.trials(self.id, status=",".join(ended), limit=new + 50):
                if trial["id"] not in self._reported:
                    found.append(trial)
                    if len(found) == new:
                        break
            for trial in sorted(found, key=lambda t: t.get("trial_index") or 0):
                self._reported.add(trial["id"])
                self._trial_ended(trial)
            self._ended_seen = total
        return sorted(running, key=lambda t: t.get("trial_index") or 0)

    def _trial_ended(self, job: JSON) -> None:
        status = job.get("status")
        line = f"trial {job.get('trial_index')} {status}  {fmt_params(job.get('params'))}"
        if job.get("objective") is not None:
            line += f"  objective={fmt(job['objective'])} (epoch {fmt(job.get('best_epoch'))})"
        if job.get("reused_from"):
            line += f"  reused from {job['reused_from']}"
        if job.get("prune_reason"):
            line += f"  ({job['prune_reason']})"
        if job.get("error"):
            line += f"  error: {job['error']}"
        self._say(line)
        if status in TRAINED:  # the summary has no diagnosis: the job's page has
            diagnosis = self.client.job(job["id"]).get("diagnosis")
            shown = diagnosis_lines(diagnosis) if status in DIAGNOSED else []
            shown += [t for t in lr_finding_lines(diagnosis) if t not in shown]
            for text in shown:
                self.console.print(f"    {text}", markup=False, highlight=False, soft_wrap=True)

    def _sweep_epochs(self, sweep: JSON) -> str:
        epochs = ((sweep.get("spec") or {}).get("base") or {}).get("hyperparameters", {})
        per_trial = epochs.get("epochs") if isinstance(epochs, dict) else None
        done = sweep.get("epochs_done") or 0
        swept = any(p.endswith("epochs") for p in (sweep.get("spec") or {}).get("parameters", {}))
        if per_trial and sweep.get("n_trials") and not swept:
            return f"epochs {done}/{per_trial * sweep['n_trials']}"
        return f"epochs {done}"

    def _best(self, sweep: JSON) -> str:
        best = sweep.get("best_trial")
        if best:
            return "best " + best_line(best)
        top = (sweep.get("leaderboard") or [None])[0]
        if top and top.get("objective") is not None:
            return "leading (not finished) " + best_line(top)
        return "no objective yet"

    def _sweep_line(self, sweep: JSON) -> str:
        return (
            f"{sweep.get('status')}: {fmt_counts(sweep.get('counts'))}  "
            f"{self._sweep_epochs(sweep)}  {self._best(sweep)}"
        )

    def _sweep_view(self, sweep: JSON, trials: list[JSON]) -> RenderableType:
        objective = sweep.get("objective") or {}
        head = Text.assemble(
            (f"sweep {sweep.get('name') or ''} {sweep['id']}", "bold"),
            f"  {sweep.get('status')}  {objective.get('metric')} ({objective.get('goal')})\n",
            f"{fmt_counts(sweep.get('counts'))}  {self._sweep_epochs(sweep)}\n",
            (self._best(sweep), "green"),
        )
        table = Table(box=None, padding=(0, 1), show_header=bool(trials))
        for name in ("trial", "progress", "epochs", "params"):
            table.add_column(name)
        for trial in trials:
            table.add_row(*self._bar_row(trial), fmt_params(trial.get("params")))
        return Group(head, table)

    @staticmethod
    def _bar_row(item: JSON) -> tuple[str, ProgressBar, str]:
        progress = item.get("progress") or {}
        done, total = progress.get("epoch") or 0, progress.get("epochs") or 0
        bar = ProgressBar(total=float(total or 1), completed=float(done), width=BAR_WIDTH)
        label = f"#{item.get('trial_index')}" if item.get("sweep_id") else "job"
        return label, bar, f"{done}/{fmt(total or None)}"

    # ------------------------------------------------------------------ jobs

    def _job_line(self, job: JSON) -> str:
        progress = job.get("progress") or {}
        return (
            f"{job.get('status')}: epoch {progress.get('epoch')}/{fmt(progress.get('epochs'))}"
            f"  {fmt_metrics(job.get('latest_metrics'))}"
        )

    def _job_view(self, job: JSON) -> RenderableType:
        head = Text.assemble(
            (f"job {job.get('name') or ''} {job['id']}", "bold"), f"  {job.get('status')}"
        )
        table = Table(box=None, padding=(0, 1), show_header=False)
        label, bar, epochs = self._bar_row(job)
        table.add_row(label, bar, epochs, fmt_metrics(job.get("latest_metrics")))
        return Group(head, table)

    def _job_ended(self, job: JSON) -> None:
        line = f"job {job['id']} {job.get('status')}"
        if job.get("best_epoch") is not None:
            line += f"  best epoch {job['best_epoch']}: {fmt_metrics(job.get('best_metrics'))}"
        if job.get("reused_from"):
            line += f"  (reused from {job['reused_from']})"
        if job.get("error"):
            line += f"  error: {job['error']}"
        self._say(line)
        lines = diagnosis_lines(job.get("diagnosis"))
        if lines:
            self.console.print("diagnosis:", markup=False, highlight=False)
            for text in lines:
                self.console.print(f"  - {text}", markup=False, highlight=False, soft_wrap=True)


def watch(
    client: Client,
    id: str,
    console: Console,
    *,
    poll: float = 1.0,
    retry_for: float = RETRY_SECONDS,
) -> dict[str, Any]:
    """Watch a job or a sweep to its end (live on a terminal); return its final answer."""
    return Watcher(client, id, console, poll=poll, retry_for=retry_for).run()
