"""A sweep's report page: self-contained, escaped, complete, and as fast for 1,000 trials.

The sweeps here are trained for real, in-process (``tests.reports_support``).
"""

from __future__ import annotations

import copy
import re
import time
from html.parser import HTMLParser

from sqlalchemy import event, insert

from services.db.models import Job
from services.reports.page import finding_counts
from services.reports.trials import TrialRow
from tests.reports_support import API, finished_sweep, lr_sweep_body

EVIL_NAME = '<script>alert("name")</script>'
EVIL_EXPERIMENT = '"><img src=x onerror=alert(1)>'


class Page(HTMLParser):
    """Every tag with its attributes, and the text of the leaderboard's rows."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def all(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [
            a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())
        ]


def report(client, sweep_id: str, **query) -> str:
    response = client.get(f"{API}/sweeps/{sweep_id}/report", query_string=query)
    assert response.status_code == 200 and response.mimetype == "text/html"
    return response.get_data(as_text=True)


def test_the_report_is_one_self_contained_page(client, app, dispatcher):
    sweep = finished_sweep(client, app, dispatcher, lr_sweep_body())
    html = report(client, sweep["id"])
    page = Page(html)
    tags = {t for t, _ in page.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "base", "form"}
    sources = [a.get("src") for _, a in page.tags if "src" in a]
    assert len(sources) == 3  # the LR map, the best trial's curves and layers
    assert all(s and s.startswith("data:image/png;base64,") for s in sources)
    assert not [a for _, a in page.tags if "href" in a or "srcset" in a]
    assert "http:" not in html and "https:" not in html and "url(" not in html
    assert {a["id"] for a in page.all("img")} == {"lr-map-img", "curves-img", "layers-img"}
    # the leaderboard: every trial (8 <= 20), ranked
    assert len(page.all("tr", **{"class": "trial"})) == 8
    assert len(Page(report(client, sweep["id"], top=3)).all("tr", **{"class": "trial"})) == 3
    # the best trial, its diagnosis, the findings across trials, the importance
    assert sweep["best_trial"]["job_id"] in html
    assert "Divergence ceiling" in html and "the sweep skips the trials at or above it" in html
    assert page.all("table", **{"class": "findings"})
    assert "Optuna's fANOVA evaluator over 7 finished trials" in html
    assert "<code>hyperparameters.learning_rate</code>" in html
    assert "<code>hyperparameters.batch_size</code>" in html


def test_every_user_string_is_escaped(client, app, dispatcher):
    body = lr_sweep_body(name=EVIL_NAME, experiment=EVIL_EXPERIMENT)
    body["parameters"] = {
        "hyperparameters.learning_rate": {"values": [0.03, 0.3]},
        "name": {"values": ["<b>bold</b>", "a & b"]},  # a swept string, shown as a value
    }
    sweep = finished_sweep(client, app, dispatcher, body)
    html = report(client, sweep["id"])
    assert EVIL_NAME not in html and EVIL_EXPERIMENT not in html
    assert "&lt;script&gt;alert(&#34;name&#34;)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "a &amp; b" in html
    page = Page(html)
    assert not page.all("script") and not page.all("b")
    assert all(a.get("src", "").startswith("data:") for a in page.all("img"))  # type: ignore[union-attr]


def test_what_the_report_cannot_show_it_says_why(client, app, dispatcher):
    body = lr_sweep_body()
    body["parameters"] = {"hyperparameters.batch_size": {"values": [16, 32]}}
    sweep = finished_sweep(client, app, dispatcher, body)
    html = report(client, sweep["id"])
    assert "No learning-rate map: sweep" in html and "does not sweep a learning rate" in html
    assert "2 trial(s) finished with an objective; parameter importance needs 5 or more" in html
    rates = finished_sweep(
        client,
        app,
        dispatcher,
        lr_sweep_body(
            parameters={"hyperparameters.learning_rate": {"values": [0.01, 0.03, 0.1, 0.3, 1.0]}}
        ),
    )
    html = report(client, rates["id"])
    assert "only hyperparameters.learning_rate varies among the finished trials" in html


def test_findings_are_counted_once_per_trial():
    rows = [
        TrialRow("a", 0, "succeeded", 0.1, {}, None, [{"code": "dead_relus"}]),
        TrialRow("b", 1, "diverged", None, {}, None, [{"code": "diverged"}, {"code": "diverged"}]),
        TrialRow("c", 2, "succeeded", 0.2, {}, None, []),
        TrialRow("d", 3, "cancelled", None, {}, None, None),
        TrialRow("e", 4, "running", None, {}, None, None),
        TrialRow("f", 5, "skipped", None, {}, "above the ceiling", None),  # never trained
    ]
    assert finding_counts(rows) == ([("dead_relus", 1), ("diverged", 1)], 1, 3)


def _more_trials(app, sweep_id: str, n: int, first_index: int) -> None:
    """``n`` more ended trials in the sweep's table (as many a large sweep has)."""
    spec = copy.deepcopy(lr_sweep_body()["base"])
    finding = {"code": "underfitting", "message": "m", "evidence": {"x": 1}, "suggestion": "s"}
    rows = [
        {
            "id": f"{i:032x}",
            "sweep_id": sweep_id,
            "trial_index": first_index + i,
            "status": "diverged" if i % 10 == 0 else "succeeded",
            "params": {
                "hyperparameters.learning_rate": 10 ** (-3 + (i % 50) / 10),
                "hyperparameters.batch_size": 16 * (1 + i % 4),
            },
            "objective": None if i % 10 == 0 else 0.3 + (i % 50) / 100,
            "spec": spec,
            "epochs_total": 3,
            "epochs_done": 3,
            "diagnosis": [finding] if i % 3 else [],
        }
        for i in range(n)
    ]
    with app.extensions["sweeplab"].sessions() as session:
        session.execute(insert(Job), rows)
        session.commit()


def underfitting(html: str) -> int:
    """How many trials the findings table counts for ``underfitting``."""
    found = re.search(r"<code>underfitting</code></td><td class=\"num\">(\d+)</td>", html)
    return int(found.group(1)) if found else 0


def test_a_large_sweeps_report_reads_a_fixed_number_of_statements(client, app, dispatcher):
    sweep = finished_sweep(client, app, dispatcher, lr_sweep_body())
    engine = app.extensions["sweeplab"].engine
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        before = underfitting(report(client, sweep["id"]))
        small = len(statements)
        _more_trials(app, sweep["id"], 992, first_index=8)
        statements.clear()
        started = time.perf_counter()
        html = report(client, sweep["id"])
        seconds = time.perf_counter() - started
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == small  # whatever the number of trials
    assert "of 1000 trial(s) that ended have no finding" in html
    assert underfitting(html) == before + 661  # 2 in 3 of the 992 added
    assert seconds < 10, seconds  # ~0.6 s measured on this machine (2 cores, shared)
