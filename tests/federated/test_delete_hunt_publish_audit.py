"""A federated run's model release is in the audit log.

``register_global_model`` (called by the Flower ServerApp at the end of a run) published
and signed a release with no audit entry, while ``edgewise registry publish``/``rollout``
record theirs: the audit log did not show who put a model in front of the fleet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgewise.federated.publish import register_global_model
from edgewise.security import Security


def test_a_federated_release_is_audited(data_dir: Path, tmp_path: Path) -> None:
    """Check publishing and signing a global model writes model.publish and model.rollout
    entries by 'federated', with the details the CLI records, and the chain still holds; a
    directory without an audit log (a run's own output folder) gets none made."""
    register_global_model({"w": np.ones(2)}, tmp_path / "out", "fed-ae", {})
    assert not (tmp_path / "out" / "security.sqlite").exists()
    Security(data_dir).close()  # a gateway's data directory: it has an audit log
    e = register_global_model({"w": np.zeros(3, dtype=np.float32)}, data_dir, "fed-ae",
                              {"rounds": 2}, target="group:line-a")
    sec = Security(data_dir)
    try:
        entries = [(a.actor, a.action, a.target, a.detail) for a in sec.audit_log()
                   if a.action.startswith("model.")]
        assert sorted(entries) == sorted([
            ("federated", "model.publish", "fed-ae",
             {"version": "1", "sha256": e["sha256"], "size": e["size"],
              "format": "npz-state-dict"}),
            ("federated", "model.rollout", "group:line-a",
             {"name": "fed-ae", "version": "1", "release": e["release"], "kind": "release"}),
        ])
        assert sec.verify_audit().ok
    finally:
        sec.close()


def test_a_federated_release_with_the_audit_log_held_publishes_nothing(
        data_dir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Check that with another writer holding the audit log past its busy timeout (a CLI in
    another process), a federated run's publish fails with nothing published or signed
    (it published and signed, then failed to audit: a release in front of the fleet with no
    entry); once the log is free it is published, released and audited."""
    import sqlite3

    import pytest

    from edgewise.registry import Registry

    Security(data_dir).close()
    real_init = Security.__init__

    def quick(self: Security, *a: object, **k: object) -> None:
        real_init(self, *a, **k)  # type: ignore[arg-type]
        self._db.execute("PRAGMA busy_timeout=100")

    monkeypatch.setattr(Security, "__init__", quick)
    other = sqlite3.connect(data_dir / "security.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError):
            register_global_model({"w": np.ones(2)}, data_dir, "fed-ae", {},
                                  target="group:line-a")
    finally:
        other.execute("ROLLBACK")
        other.close()
    reg = Registry(data_dir)
    try:
        assert reg.versions("fed-ae") == [] and reg.releases() == []
    finally:
        reg.close()
    e = register_global_model({"w": np.ones(2)}, data_dir, "fed-ae", {}, target="group:line-a")
    sec = Security(data_dir)
    try:
        assert [a.action for a in reversed(sec.audit_log()) if a.action.startswith("model.")
                ] == ["model.publish", "model.rollout"] and e["version"] == "1"
    finally:
        sec.close()
