"""Control characters in the names and strings of a job or sweep spec are a 422
naming the field, at validation (never a 500 from the database)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from services.specs import validate_job, validate_sweep
from services.specs.base import control_character_error
from services.specs.errors import SpecValidationError
from tests.conftest import XOR_JOB

CONTROLS = ["\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x85", "\u2028", "\u2029"]


def job(**top: Any) -> dict[str, Any]:
    spec = copy.deepcopy(XOR_JOB)
    spec.update(top)
    return spec


def inline_job(labels: list[Any]) -> dict[str, Any]:
    return job(dataset={"name": "arrays", "X": [[0, 0], [0, 1], [1, 0], [1, 1]], "y": labels})


def sweep(**top: Any) -> dict[str, Any]:
    return {
        "name": "lr",
        "experiment": "exp",
        "base": job(),
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.1, 0.5]}},
        **top,
    }


def details_of(fn: Any, data: Any) -> list[dict[str, str]]:
    with pytest.raises(SpecValidationError) as caught:
        fn(data)
    return caught.value.details


@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
def test_a_control_character_in_a_job_name_is_an_error_at_name(char: str) -> None:
    (detail,) = details_of(validate_job, job(name=f"digits{char}64"))
    assert detail["loc"] == "name"
    assert f"U+{ord(char):04X}" in detail["msg"] and "control character" in detail["msg"]


def test_a_label_names_its_index() -> None:
    (detail,) = details_of(validate_job, inline_job(["a", "b", "a", "b\x00"]))
    assert detail["loc"] == "dataset.y.3"


def test_sweep_fields_are_named_with_their_path() -> None:
    cases = {
        "name": sweep(name="lr\x00"),
        "experiment": sweep(experiment="team\x1b[31m"),
        "base.name": sweep(base=job(name="\x7f")),
        "parameters.dataset.name.values.1": sweep(
            parameters={"dataset.name": {"values": ["xor", "moons\n"]}}
        ),
    }
    for loc, data in cases.items():
        (detail,) = details_of(validate_sweep, data)
        assert detail["loc"] == loc, detail


def test_a_key_with_a_control_character_is_named_by_its_parent() -> None:
    data = sweep(parameters={"hyperparameters.learning_rate\x00": {"values": [0.1]}})
    (detail,) = details_of(validate_sweep, data)
    assert detail["loc"] == "parameters"
    assert "key" in detail["msg"] and "\\x00" in detail["msg"]


def test_printable_text_passes() -> None:
    assert validate_job(job(name="dígits – 64 · relu ✓"))["name"] == "dígits – 64 · relu ✓"
    labels = ["chat", "chien", "chat", "猫"]
    assert validate_job(inline_job(labels))["dataset"]["y"] == labels
    assert control_character_error({"a": [1, 2.5, None, True, {"b": "ok"}]}) is None


def test_the_api_answers_422_naming_the_field(client: Any) -> None:
    response = client.post("/api/v1/jobs", json=job(name="nul\x00here"))
    assert response.status_code == 422, response.get_json()
    body = response.get_json()["error"]
    assert body["code"] == "validation_error"
    assert [d["loc"] for d in body["details"]] == ["name"]

    response = client.post("/api/v1/sweeps", json=sweep(base=inline_job(["a", "b", "a", "\u2028"])))
    assert response.status_code == 422, response.get_json()
    assert [d["loc"] for d in response.get_json()["error"]["details"]] == ["base.dataset.y.3"]
