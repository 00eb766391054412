"""What a job's fingerprint holds (services.reuse) and the idempotency key rules."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from services import idempotency, reuse
from services.specs import validate_job
from tests.conftest import XOR_JOB


def normalized(**changes):
    body = copy.deepcopy(XOR_JOB)
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            body[section][field] = value
        else:
            body[section] = value
    return validate_job(body)


def test_the_fingerprint_ignores_what_does_not_change_the_numbers():
    base = reuse.fingerprint(normalized())
    assert reuse.fingerprint(normalized(name="other")) == base
    assert reuse.fingerprint(normalized(experiment="elsewhere")) == base
    assert reuse.fingerprint(normalized(reuse=False)) == base
    assert reuse.fingerprint(normalized(limits={"max_seconds": 60})) == base
    # defaults written out are the same spec as defaults left out
    assert reuse.fingerprint(normalized(hyperparameters__optimizer="sgd")) == base


@pytest.mark.parametrize(
    "change",
    [
        {"hyperparameters__seed": 1},
        {"hyperparameters__learning_rate": 0.25},
        {"hyperparameters__dtype": "float64"},
        {"dataset__seed": 3},
        {"architecture": {"layers": [{"units": 5, "activation": "tanh"}]}},
    ],
)
def test_the_fingerprint_changes_with_what_changes_the_numbers(change):
    assert reuse.fingerprint(normalized(**change)) != reuse.fingerprint(normalized())


def test_the_fingerprint_holds_the_data_hash_the_trainer_and_numpy():
    spec = normalized()
    uploaded = {**spec, "dataset": {"name": "uploaded", "id": "a", "sha256": "0" * 64}}
    same_rows = {**uploaded, "dataset": {**uploaded["dataset"], "id": "b"}}
    other_rows = {**uploaded, "dataset": {**uploaded["dataset"], "sha256": "1" * 64}}
    assert reuse.fingerprint(uploaded) == reuse.fingerprint(same_rows)
    assert reuse.fingerprint(uploaded) != reuse.fingerprint(other_rows)
    payload = reuse.fingerprint_payload(spec)
    assert payload["numpy"] == np.__version__
    assert len(payload["trainer"]) == 64 and payload["trainer"] == reuse.trainer_version()
    assert "name" not in payload["spec"] and "reuse" not in payload["spec"]


def test_idempotency_keys_and_bodies():
    assert idempotency.key_problem("0b6f3c1e-5a4d-4f1e-9c1a-2b3c4d5e6f70") is None
    assert idempotency.key_problem("") and idempotency.key_problem("a b")
    assert idempotency.key_problem("x" * 256) and idempotency.key_problem("é")
    assert idempotency.request_sha256({"a": 1, "b": [1, 2]}) == idempotency.request_sha256(
        {"b": [1, 2], "a": 1}
    )
    assert idempotency.request_sha256({"a": 1}) != idempotency.request_sha256({"a": 2})
