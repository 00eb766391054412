"""The Python client: a thin, typed shell over the sweeplab HTTP API (httpx).

```python
from client import Client
c = Client("http://127.0.0.1:8000", token)
sweep = c.submit(spec)                      # a job or a sweep, told apart by its keys
final = c.wait(sweep["id"], callback=print) # until it ends; the callback sees each poll
c.leaderboard(sweep["id"])                  # every row, best first
arrays = c.weights(final["best_trial"]["job_id"])   # {"W1": ndarray, ...}
c.predict(final["best_trial"]["job_id"], [[0.1, 0.2], ...])
```

Answers are the API's own JSON (dicts). Errors: :class:`ApiError` for a 4xx/5xx
answer (status, code, message, details with field paths), :class:`Unreachable`
when no answer comes. Jobs and sweeps share one id space (uuid hex), so
:meth:`Client.get` asks for a job, then a sweep, and remembers which it was.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Literal

import httpx
import numpy as np

from client.errors import ApiError, Unreachable
from client.specfile import spec_kind

JSON = dict[str, Any]
Kind = Literal["job", "sweep"]

#: Job statuses after which nothing changes (services/db/models.py TERMINAL_STATUSES).
JOB_ENDS = frozenset(
    {"succeeded", "failed", "diverged", "cancelled", "pruned", "timed_out", "skipped"}
)
PAGE = 200  # the API's largest page


def api_base(url: str) -> str:
    """``http://host:port`` (or with ``/api/v1`` already) -> ``http://host:port/api/v1``."""
    url = url.rstrip("/")
    return url if url.endswith("/api/v1") else url + "/api/v1"


def kind_of(resource: JSON) -> Kind:
    """Whether an answer of the API is a sweep or a job."""
    return "sweep" if "n_trials" in resource and "counts" in resource else "job"


def is_final(resource: JSON) -> bool:
    """Whether a job has ended, or a sweep has ended with none of its trials still active."""
    if kind_of(resource) == "job":
        return resource.get("status") in JOB_ENDS
    counts = resource.get("counts") or {}
    active = (counts.get("queued") or 0) + (counts.get("running") or 0)
    return resource.get("status") != "running" and not active


#: a predict request's body at most (the API's default limit is 1 MiB)
PREDICT_BODY_BYTES = 900_000


def _batches(rows: list[list[float]], most: int, max_bytes: int) -> Iterator[list[list[float]]]:
    """``rows`` in consecutive batches of at most ``most`` rows whose JSON stays under
    ``max_bytes`` (one batch, maybe empty, for no rows)."""
    if not rows:
        yield rows
        return
    start = 0
    while start < len(rows):
        size, end = 16, start  # '{"rows": []}' and change
        while end < len(rows) and end - start < most:
            size += len(json.dumps(rows[end])) + 2
            if size > max_bytes and end > start:
                break
            end += 1
        yield rows[start:end]
        start = end


class Client:
    """The sweeplab API at ``url`` with ``token`` (None: a server with SWEEPLAB_AUTH=off).

    ``retries``: how many times a request that got no answer is sent again (with the
    same ``Idempotency-Key`` for a submission, so that it is never trained twice), and
    a 503 (database or broker away) is retried after its ``Retry-After``.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.25,
        transport: httpx.BaseTransport | None = None,
    ):
        self.url = url.rstrip("/")
        self.base = api_base(url)
        self.retries, self.backoff = retries, backoff
        headers = {"Accept": "application/json", "User-Agent": "sweeplab-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(timeout=timeout, headers=headers, transport=transport)
        self._kinds: dict[str, Kind] = {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ HTTP

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """Send one request under ``/api/v1``; the 2xx response, or ApiError / Unreachable.

        A request that got no answer is sent again when that is safe: a GET, a POST
        carrying an Idempotency-Key, or any request the server never received
        (connection refused)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        query = {k: v for k, v in (params or {}).items() if v is not None}
        safe = method == "GET" or idempotency_key is not None
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(
                    method, self.base + path, json=json, params=query, headers=headers
                )
            except httpx.TransportError as err:
                never_sent = isinstance(err, httpx.ConnectError | httpx.ConnectTimeout)
                if last or not (safe or never_sent):
                    raise Unreachable(self.url, _reason(err)) from err
                time.sleep(self.backoff * 2**attempt)
                continue
            if response.status_code == 503 and safe and not last:
                time.sleep(_retry_after(response, self.backoff * 2**attempt))
                continue
            if response.status_code >= 400:
                raise _api_error(response)
            return response
        raise AssertionError("unreachable")  # pragma: no cover (the loop returns or raises)

    def _json(self, method: str, path: str, **kwargs: Any) -> JSON:
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else {}

    def _pages(self, path: str, params: dict[str, Any], limit: int | None) -> Iterator[JSON]:
        """The items of a cursor-paginated list, following ``next_cursor``, ``limit`` at most."""
        cursor, seen = None, 0
        while True:
            size = PAGE if limit is None else max(1, min(PAGE, limit - seen))
            page = self._json("GET", path, params={**params, "cursor": cursor, "limit": size})
            for item in page.get("items") or []:
                yield item
                seen += 1
                if limit is not None and seen >= limit:
                    return
            cursor = page.get("next_cursor")
            if not cursor:
                return

    # ------------------------------------------------------------------ jobs and sweeps

    def submit(self, spec: JSON, *, idempotency_key: str | None = None) -> JSON:
        """Submit a job or a sweep (told apart by its keys): the created resource (201).

        Sent with an ``Idempotency-Key`` (a fresh uuid4 unless given), and sent again
        with the same key if no answer came, so a retry never trains twice."""
        kind = spec_kind(spec)
        key = idempotency_key or uuid.uuid4().hex
        created = self._json("POST", f"/{kind}s", json=spec, idempotency_key=key)
        self._kinds[created["id"]] = kind
        return created

    def kind(self, id: str) -> Kind:
        """Whether ``id`` names a job or a sweep (ApiError 404 if neither)."""
        if id not in self._kinds:
            self.get(id)
        return self._kinds[id]

    def get(self, id: str) -> JSON:
        """A job or a sweep by id (the API's GET /jobs/<id> or GET /sweeps/<id>)."""
        known = self._kinds.get(id)
        order: tuple[Kind, ...] = (known,) if known else ("job", "sweep")
        for kind in order:
            try:
                found = self._json("GET", f"/{kind}s/{id}")
            except ApiError as err:
                if err.status == 404 and kind != order[-1]:
                    continue
                if err.status == 404 and not known:
                    raise ApiError(404, "not_found", f"no job or sweep {id}") from err
                raise
            self._kinds[id] = kind
            return found
        raise AssertionError("unreachable")  # pragma: no cover

    def job(self, id: str) -> JSON:
        return self._json("GET", f"/jobs/{id}")

    def sweep(self, id: str) -> JSON:
        return self._json("GET", f"/sweeps/{id}")

    def jobs(
        self, *, status: str | None = None, sweep: str | None = None, limit: int | None = 50
    ) -> list[JSON]:
        """Jobs, newest first (summaries), following the pages; ``limit=None``: all."""
        return list(self._pages("/jobs", {"status": status, "sweep": sweep}, limit))

    def sweeps(self, *, status: str | None = None, limit: int | None = 50) -> list[JSON]:
        """Sweeps, newest first (summaries), following the pages; ``limit=None``: all."""
        return list(self._pages("/sweeps", {"status": status}, limit))

    def trials(
        self, sweep_id: str, *, status: str | None = None, limit: int | None = None
    ) -> list[JSON]:
        """A sweep's trials (job summaries), newest first."""
        return list(self._pages(f"/sweeps/{sweep_id}/trials", {"status": status}, limit))

    def leaderboard(self, sweep_id: str, *, limit: int | None = None) -> list[JSON]:
        """A sweep's leaderboard rows, best first (unranked trials last); all by default."""
        return list(self._pages(f"/sweeps/{sweep_id}/leaderboard", {}, limit))

    def wait(
        self,
        id: str,
        callback: Callable[[JSON], object] | None = None,
        *,
        poll: float = 1.0,
        timeout: float | None = None,
    ) -> JSON:
        """Poll a job or a sweep until it ends; return its final answer.

        ``callback(resource)`` is called with every poll's answer (the last one too).
        TimeoutError after ``timeout`` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            resource = self.get(id)
            if callback is not None:
                callback(resource)
            if is_final(resource):
                return resource
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.kind(id)} {id} still {resource.get('status')}")
            time.sleep(poll)

    def cancel(self, id: str) -> JSON:
        """Cancel a job or a sweep (202: queued ones never start, running ones stop)."""
        return self._json("POST", f"/{self.kind(id)}s/{id}/cancel")

    def delete(self, id: str) -> None:
        """Delete a job or a sweep with everything it made (204)."""
        self.request("DELETE", f"/{self.kind(id)}s/{id}")

    def resume(self, sweep_id: str) -> JSON:
        """Continue a cancelled or failed sweep (202)."""
        key = uuid.uuid4().hex
        return self._json("POST", f"/sweeps/{sweep_id}/resume", idempotency_key=key)

    def extend(self, sweep_id: str, n_trials: int) -> JSON:
        """Add ``n_trials`` trials to a sweep, the sampler continuing from what it saw (202)."""
        key = uuid.uuid4().hex
        body = {"n_trials": n_trials}
        return self._json("POST", f"/sweeps/{sweep_id}/extend", json=body, idempotency_key=key)

    # ------------------------------------------------------------------ results

    def best_job_id(self, id: str) -> str:
        """``id`` if it is a job; a sweep's best (succeeded) trial otherwise."""
        resource = self.get(id)
        if kind_of(resource) == "job":
            return str(resource["id"])
        best = resource.get("best_trial")
        if not best:
            raise ApiError(409, "no_best_trial", f"sweep {id} has no succeeded trial yet")
        return str(best["job_id"])

    def metrics(self, job_id: str) -> list[JSON]:
        """The learning curve: one dict per epoch (``epoch`` and the flattened metrics)."""
        return metric_rows(self._json("GET", f"/jobs/{job_id}/metrics"))

    def metrics_table(self, job_id: str) -> dict[str, list[Any]]:
        """The learning curve as columns: ``{"epoch": [1, 2, ...], "val_loss": [...], ...}``
        (None where an epoch lacks a metric); ``pandas.DataFrame(table)`` if you like."""
        return rows_to_table(self.metrics(job_id))

    def weights_npz(self, job_id: str) -> bytes:
        """The job's final weights as the API sends them (.npz bytes)."""
        return self.request("GET", f"/jobs/{job_id}/weights").content

    def weights(self, job_id: str) -> dict[str, np.ndarray]:
        """The job's final weights: ``W1..Wn``, ``b1..bn``, ``spec`` (JSON text) and the
        standardization statistics and ``classes`` when there are any."""
        with np.load(io.BytesIO(self.weights_npz(job_id)), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}

    def predict(
        self,
        job_id: str,
        rows: list[list[float]],
        *,
        batch: int = 10_000,
        max_bytes: int = PREDICT_BODY_BYTES,
    ) -> JSON:
        """Predictions for ``rows`` (raw feature units): ``predictions``, ``classes`` and
        ``probabilities`` (classification), as the API answers; more rows than the API
        takes at once (10,000 rows, a 1 MiB body) go in batches of at most ``batch`` rows
        and ``max_bytes`` of JSON, answered as one."""
        answer: JSON = {}
        for part_rows in _batches(rows, batch, max_bytes):
            part = self._json("POST", f"/jobs/{job_id}/predict", json={"rows": part_rows})
            if not answer:
                answer = part
                continue
            answer["predictions"] = answer["predictions"] + part["predictions"]
            if answer.get("probabilities") is not None:
                answer["probabilities"] = answer["probabilities"] + part["probabilities"]
        return answer

    def feature_names(self, job_id: str) -> list[str] | None:
        """The names of the features job ``job_id`` was trained on, in their order: an
        uploaded CSV's columns; None when the data had none (arrays, a named set) or
        the dataset was deleted since."""
        dataset = (self.job(job_id).get("spec") or {}).get("dataset") or {}
        if dataset.get("name") != "uploaded" or not dataset.get("id"):
            return None
        try:
            names = self._json("GET", f"/datasets/{dataset['id']}").get("feature_names")
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return list(names) if names else None

    def mlflow(self, id: str) -> JSON | None:
        """The MLflow links of a job or a sweep (run, experiment, compare view), or None
        when the server does not mirror to MLflow."""
        return self.get(id).get("mlflow")

    def mlflow_link(self, id: str) -> str | None:
        """The page to look at in MLflow: a sweep's compare view, a job's run page."""
        return mlflow_link(self.get(id))

    def readiness(self) -> JSON:
        """The server's ``/readyz``: ``{"status": "ready" | "unavailable", "checks": {...}}``
        (the database and Redis; answered, not raised, when unavailable)."""
        try:
            response = self._http.get(self.url.removesuffix("/api/v1") + "/readyz")
        except httpx.TransportError as err:
            raise Unreachable(self.url, _reason(err)) from err
        if response.status_code not in (200, 503):
            raise _api_error(response)
        return response.json()

    # ------------------------------------------------------------------ tokens

    def me(self) -> JSON:
        return self._json("GET", "/me")

    def create_token(self, user: str, *, admin: bool = False, name: str | None = None) -> JSON:
        """A token for ``user`` (admins only); ``token`` in the answer is shown this once."""
        body: JSON = {"user": user, "admin": admin}
        if name is not None:
            body["name"] = name
        return self._json("POST", "/tokens", json=body)

    def tokens(self) -> list[JSON]:
        return list(self._json("GET", "/tokens").get("items") or [])

    def revoke_token(self, token_id: str) -> JSON:
        return self._json("DELETE", f"/tokens/{token_id}")


def mlflow_link(resource: JSON) -> str | None:
    links = resource.get("mlflow") or {}
    if kind_of(resource) == "sweep":
        return links.get("compare_url") or links.get("experiment_url") or links.get("run_url")
    return links.get("run_url") or links.get("experiment_url")


def metric_rows(body: JSON) -> list[JSON]:
    """The API's metrics answer (``{"job_id", "epochs": [{"epoch", "metrics"}]}``) as rows."""
    return [{**row["metrics"], "epoch": row["epoch"]} for row in body.get("epochs") or []]


def rows_to_table(rows: list[JSON]) -> dict[str, list[Any]]:
    """Rows (dicts) -> columns (lists of equal length, None where a row lacks the key)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return {c: [row.get(c) for row in rows] for c in columns}


def _reason(err: httpx.TransportError) -> str:
    text = str(err) or type(err).__name__
    return f"{type(err).__name__}: {text}" if type(err).__name__ not in text else text


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return min(10.0, max(0.0, float(response.headers.get("Retry-After", default))))
    except ValueError:
        return default


def _api_error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return ApiError(
            response.status_code,
            str(error.get("code") or f"http_{response.status_code}"),
            str(error.get("message") or response.reason_phrase),
            [d for d in error.get("details") or [] if isinstance(d, dict)],
        )
    text = response.text.strip()[:500] or response.reason_phrase
    return ApiError(response.status_code, f"http_{response.status_code}", text)
