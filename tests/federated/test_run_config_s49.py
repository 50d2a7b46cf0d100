"""A run config number that is no number (``dp-clip = "abc"``, a device's ``lr``) is
refused by the ServerApp in one line naming the key, its value and what it must be, before
any device is asked anything, and written to ``error.json``: it was Python's "could not
convert string to float: 'abc'", naming neither (or a device's failure, for a device's
key)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgewise.errors import InvalidParameterError
from edgewise.federated import server_app as sa
from edgewise.federated.deploy import RUN_DEFAULTS
from tests.federated.test_federated_hunt_s48b import _Grid
from tests.federated.test_hunt_s34 import _task_identity  # noqa: F401 (autouse fixture)

_BAD: list[tuple[str, Any, str]] = [
    ("dp-clip", "abc", "a number; give a number (its default: 1.0)"),
    ("dp-noise", "one", "a number; give a number (its default: 0.0)"),
    ("dp-delta", [1e-5], "a number; give a number (its default: 1e-05)"),
    ("num-server-rounds", "two", "a whole number; give a whole number (its default: 2)"),
    ("num-nodes", "2.5", "a whole number; give a whole number (its default: 3)"),
    ("round-timeout", "1m", "a number; give a number (its default: 120.0)"),
    ("lr", "fast", "a number; give a number (its default: 0.003)"),  # a device's key
    ("batch-size", "x", "a whole number; give a whole number (its default: 32)"),
]


@pytest.mark.parametrize(("key", "value", "must"), _BAD)
def test_the_server_app_names_a_run_config_number_that_is_none(
        tmp_path: Path, key: str, value: Any, must: str) -> None:
    out = tmp_path / "out"
    rc = {**RUN_DEFAULTS, "num-nodes": 2, "min-available-nodes": 2, "out-dir": str(out),
          "num-server-rounds": 1, "strategy": "fedavg", "evaluate": False,
          "dp-noise": 1.0, key: value}
    grid = _Grid(rc)
    said = f"The run config's {key!r} is {value!r}, which is not {must}."
    with pytest.raises(InvalidParameterError) as err:
        sa.main(grid, type("Ctx", (), {"run_config": rc})())
    assert str(err.value) == said
    assert (err.value.field, err.value.value) == (key, value)
    assert json.loads((out / "error.json").read_text()) == {
        "error": said, "type": "InvalidParameterError"}
    assert grid.sent == 0  # no device was asked anything
    assert not (out / "result.json").exists() and not (tmp_path / "registry").exists()


def test_numbers_given_as_text_still_run_as_before() -> None:
    """A number written as text ("0.5", "3") is read as it was (float / int)."""
    rc = {"dp-clip": "0.5", "num-server-rounds": "3", "beta": 0}
    assert sa._run_number(rc, "dp-clip", 1.0) == 0.5
    assert sa._run_number(rc, "num-server-rounds", 2) == 3
    assert isinstance(sa._run_number(rc, "num-server-rounds", 2), int)
    assert sa._run_number(rc, "beta", 0.0) == 0.0 and sa._run_number({}, "lr", 0.003) == 0.003
