"""Spec files: JSON or YAML by content, a job or a sweep by keys, errors that say where."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.errors import SpecFileError
from client.specfile import load_spec, parse_spec_text, spec_kind

REPO = Path(__file__).resolve().parents[3]
JOB = {
    "dataset": {"name": "moons"},
    "architecture": {"layers": [{"units": 8, "activation": "relu"}]},
    "hyperparameters": {"learning_rate": 0.1, "epochs": 3},
}
SWEEP = {
    "base": JOB,
    "method": "grid",
    "parameters": {"hyperparameters.learning_rate": {"values": [0.01, 0.1]}},
}
JOB_YAML = """\
# a job, in YAML
dataset: {name: moons}
architecture:
  layers:
    - units: 8
      activation: relu
hyperparameters:
  learning_rate: 0.1
  epochs: 3
"""
SWEEP_YAML = """\
base:
  dataset: {name: moons}
  architecture: {layers: [{units: 8, activation: relu}]}
  hyperparameters: {learning_rate: 0.1, epochs: 3}
method: grid
parameters:
  hyperparameters.learning_rate: {values: [0.01, 0.1]}
"""


@pytest.mark.parametrize(
    ("text", "kind", "spec"),
    [
        (json.dumps(JOB), "job", JOB),
        (json.dumps(SWEEP, indent=2), "sweep", SWEEP),
        (JOB_YAML, "job", JOB),
        (SWEEP_YAML, "sweep", SWEEP),
        ("\ufeff  " + json.dumps(JOB), "job", JOB),
    ],
)
def test_json_or_yaml_job_or_sweep_by_content(
    tmp_path: Path, text: str, kind: str, spec: dict
) -> None:
    # the file's name says nothing: a YAML file may be called .json and the other way round
    path = tmp_path / "spec.txt"
    path.write_text(text)
    assert load_spec(path) == (kind, spec)


def test_the_examples_are_recognised() -> None:
    assert load_spec(REPO / "examples" / "job.json")[0] == "job"
    assert load_spec(REPO / "examples" / "lr_sweep.json")[0] == "sweep"


def test_a_sweep_without_base_is_still_a_sweep_and_a_job_with_parameters_a_job() -> None:
    # the server names what is missing; the client only has to send it to the right place
    assert spec_kind({"method": "grid", "parameters": {}}) == "sweep"
    assert spec_kind({**JOB, "parameters": "x"}) == "job"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"dataset": {"name": "moons",}}', "not valid JSON at line 1, column 30"),
        ("dataset: [moons\nepochs: 3\n", "not valid YAML at line"),
        ("- a\n- b\n", "a spec is a mapping (an object), not list"),
        ("   \n", "is empty"),
        ('{"name": "x", "epochs": 3}', "neither a job"),
    ],
)
def test_errors_say_what_and_where(text: str, message: str) -> None:
    with pytest.raises(SpecFileError) as caught:
        spec_kind(parse_spec_text(text, "f.json"))
    assert message in str(caught.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(SpecFileError, match="cannot read"):
        load_spec(tmp_path / "missing.json")
    binary = tmp_path / "b.json"
    binary.write_bytes(b"\xff\xfe\x00{")
    with pytest.raises(SpecFileError, match="not UTF-8"):
        load_spec(binary)


def test_yaml_reads_off_and_yes_as_the_words_written() -> None:
    """YAML 1.2 booleans: ``packing: off`` is "off" (YAML 1.1 made it false, which the
    API refused while its message said "off" was allowed); true / false stay booleans."""
    spec = parse_spec_text(
        "name: s\nbase: {dataset: {name: moons}}\npacking: off\nreuse: false\n"
        "note: yes\nflag: True\n"
    )
    assert spec["packing"] == "off" and spec["note"] == "yes"
    assert spec["reuse"] is False and spec["flag"] is True
