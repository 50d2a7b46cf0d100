"""`edgewise registry publish` and `rollout` are audited like HTTP rollouts, by 'cli' as the
other CLI actions (HTTP rollouts by 'token:<name>': tests/server/test_registry_api.py)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.security import Security

load_commands()


def test_cli_publish_and_rollout_are_audited_by_cli(data_dir: Path, tmp_path: Path) -> None:
    """Check publish and rollout from the CLI each leave one audit entry by 'cli' (they left
    none)."""
    model = tmp_path / "m.pkl"
    model.write_bytes(b"model")
    run = CliRunner(mix_stderr=False)
    for args in (("publish", "ewz", "1.0.0", str(model)),
                 ("rollout", "ewz", "1.0.0", "group:line-a")):
        res = run.invoke(app, ["registry", *args, "--data-dir", str(data_dir)])
        assert res.exit_code == 0, res.stderr
    sec = Security(data_dir)
    got = [(e.actor, e.action, e.target, e.detail) for e in reversed(sec.audit_log())]
    sec.close()
    assert got[0][:3] == ("cli", "model.publish", "ewz")
    assert got[0][3]["version"] == "1.0.0" and got[0][3]["format"] == "pickle"
    assert got[1] == ("cli", "model.rollout", "group:line-a",
                      {"name": "ewz", "version": "1.0.0", "release": 1, "kind": "release"})

