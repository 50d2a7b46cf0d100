"""The gateway opens ``labels.sqlite`` on the first labels request; opening may write it
(its WAL mode, an older file's schema). Another writer holding the file then (an
``edgewise label import``) made GET and POST /v1/labels a 500; now a 503 ``labels_busy``
with ``Retry-After``, as a held label write is, and the next request opens it."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import edgewise.server.routes.labels as label_routes
from edgewise.label.store import LabelStore
from tests.server.conftest import Env


@contextmanager
def _held_rollback_file(path: Path) -> Iterator[None]:
    """``path`` made as a label file not yet in WAL mode (another tool's copy, an older
    one), write-locked by another connection: switching it to WAL must wait."""
    LabelStore(path.parent).close()
    made = sqlite3.connect(path, isolation_level=None)
    assert made.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    made.close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO snapshots VALUES ('s', 0, '[]')")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_label_file_held_at_its_first_open_is_labels_busy(
        env: Env, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """Check the first labels request while another writer holds the file is a 503
    labels_busy naming it, with Retry-After, and the next one (the file free) opens it."""
    # the app's label store waits 0.3 s for another writer, not 10
    monkeypatch.setattr(label_routes, "LabelStore",
                        functools.partial(LabelStore, timeout_s=0.3))
    assert getattr(env.client.app.state, "labels", None) is None
    path = env.settings.data_dir / "labels.sqlite"
    body = {"device_id": env.device, "start": 1700000000, "end": 1700000010,
            "label": "normal"}

    def ask() -> object:
        if method == "get":
            return env.client.get("/v1/labels", headers=env.auth("viewer"))
        return env.client.post("/v1/labels", json=body, headers=env.auth("operator"))

    with _held_rollback_file(path):
        r = ask()
        assert r.status_code == 503, r.text
        assert r.json()["reason"] == "labels_busy"
        assert r.json()["value"] == str(path)
        assert r.headers["Retry-After"] == "10"
        assert getattr(env.client.app.state, "labels", None) is None
    r = ask()
    assert r.status_code == (200 if method == "get" else 201), r.text
    assert env.client.app.state.labels is not None
