"""A job trained by a real worker process, out through the API: its weights route holds the
network the training ended with, and its predict route answers what the training's own
``TrainResult.predict`` answers (the same computation in this process, bit for bit),
with an uploaded CSV's text labels as the user gave them.

Runs once per database backend (SQLite and PostgreSQL); see ``conftest.stack``.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from services.models import MODELS
from tests.integration.harness import Stack
from tests.integration.test_uploaded_data import as_csv, blobs, reference_fit, spec_on, upload_csv

pytestmark = pytest.mark.integration

API = "/api/v1"


def test_weights_and_predictions_are_the_trainings_own(stack: Stack):
    X, y = blobs(200, seed=5)
    shown = upload_csv(stack, as_csv(X, y), name="clouds-models.csv")
    job = stack.post("/jobs", spec_on({"name": "uploaded", "id": shown["id"]}, epochs=6))
    missing = stack.client.get(f"{API}/jobs/{job['id']}/weights")
    assert missing.status_code in (200, 409)  # 409 until it has finished
    done = stack.wait_job(job["id"])
    assert done.status == "succeeded", done.error
    MODELS.clear()

    reference = reference_fit(spec_on({"name": "arrays", "X": X, "y": y}, epochs=6))
    response = stack.client.get(f"{API}/jobs/{job['id']}/weights")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].endswith(f'filename="job-{job["id"]}.npz"')
    with np.load(io.BytesIO(response.data), allow_pickle=False) as z:
        got = {key: z[key] for key in z.files}
    for i, layer in enumerate(reference.network.layers, start=1):
        assert got[f"W{i}"].tobytes() == layer.params["W"].tobytes()
        assert got[f"b{i}"].tobytes() == layer.params["b"].tobytes()
    assert got["feature_mean"].tolist() == reference.data.feature_mean.tolist()
    assert got["feature_std"].tolist() == reference.data.feature_std.tolist()
    assert got["classes"].tolist() == ["high", "low"]
    assert json.loads(str(got["spec"])) == done.spec

    rows = np.random.default_rng(8).normal(0.0, 4.0, size=(300, 3))
    answer = stack.client.post(f"{API}/jobs/{job['id']}/predict", json={"rows": rows.tolist()})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["predictions"] == reference.predict(rows).tolist()
    assert set(body["predictions"]) == {"high", "low"} and body["classes"] == ["high", "low"]
    standardized = (rows - reference.data.feature_mean) / reference.data.feature_std
    p = reference.network.predict(standardized)  # two classes: one sigmoid unit, P("low")
    assert p.shape == (300, 1)
    assert body["probabilities"] == np.concatenate([1 - p, p], axis=1).tolist()
