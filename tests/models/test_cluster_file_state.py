"""A groups file whose checksum is valid but whose state is malformed (rewritten by hand or
by another program with ``write_model_file``): ``state.metrics_`` missing loaded and then
failed with an AttributeError in ``summary()``/``assign()``, ``state.traits_ = []`` failed
at load with an AttributeError. Each field is now checked at load, and a bad one is one
:class:`GroupsFileError` naming the file and the field."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgewise.models import cluster
from edgewise.models.cluster import BehaviourGroups, GroupsFileError, load_groups
from edgewise.models.model_file import read_model_file, write_model_file
from tests.models.test_cluster import device


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    hist = {f"{k}-{i}": device(k, i) for i, k in enumerate(["plain"] * 4 + ["hot"] * 4)}
    path = tmp_path_factory.mktemp("groups") / "g.json"
    BehaviourGroups(random_state=0).fit(hist).save(path)
    return path


def _rewrite(saved: Path, tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """``saved`` with its body changed by ``change``, under a valid checksum."""
    head, body = read_model_file(saved, cluster._MAGIC, GroupsFileError, what="groups model",
                                 version=cluster.FORMAT_VERSION, remedy="-")
    doc = json.loads(body)
    change(doc)
    head.pop("body_sha256")
    out = tmp_path / "tampered.json"
    write_model_file(out, cluster._MAGIC, head, json.dumps(doc).encode())
    return out


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def change(doc: dict[str, Any]) -> None:
        for p in parents:
            doc = doc[p]
        if value is ...:
            del doc[last]
        else:
            doc[last] = value
    return change


@pytest.mark.parametrize(("field", "value", "words"), [
    ("state.metrics_", ..., "must be a list of texts; it is missing"),
    ("state.traits_", [], "must be an object; got list []"),
    ("state.devices_", "pump-1", "must be a list of texts; got str 'pump-1'"),
    ("state.metrics_", [1, 2], "must be a list of texts; got list [1, 2]"),
    ("state.n_groups_", "2", "must be a whole number; got str '2'"),
    ("state.n_groups_", True, "must be a whole number; got bool True"),
    ("state.odd_cut_", None, "must be a number; got NoneType None"),
    ("arrays.Z_", ..., "must be a list of numbers; it is missing"),
    ("labels_", [0], "must be a list of one value per device (8); got 1 values"),
    ("state", [], "must be a JSON object; got list []"),
])
def test_a_malformed_state_is_refused_at_load_naming_the_field(
        saved: Path, tmp_path: Path, field: str, value: Any, words: str) -> None:
    path = _rewrite(saved, tmp_path, _set(field, value))
    with pytest.raises(GroupsFileError) as err:
        load_groups(path).summary()
    assert str(err.value).startswith(
        f"Groups file {str(path)!r} does not hold a groups model this Edgewise can read: its "
        f"field {field!r} {words}"), str(err.value)


def test_a_file_saved_before_devices_were_left_out_still_loads(saved: Path,
                                                               tmp_path: Path) -> None:
    """Check the one state key an earlier release did not save may be absent."""
    path = _rewrite(saved, tmp_path, _set("state.left_out_devices_", ...))
    back = load_groups(path)
    assert back.left_out_devices_ == {} and back.summary() == load_groups(saved).summary()
