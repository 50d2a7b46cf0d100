"""``edgewise agent`` refuses bad settings at start with one line (never a traceback), and an
outbox that fills up says so in the log, once and then periodically."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.edge.agent import Agent
from edgewise.registry import load_or_create_key

load_commands()


def _run(tmp_path: Path, *args: str):
    secret = tmp_path / "secret"
    secret.write_text("s" * 43)
    return CliRunner(mix_stderr=False).invoke(app, [
        "agent", "--gateway", "http://127.0.0.1:9", "--device", "pump-7", "--secret-file",
        str(secret), "--state-dir", str(tmp_path / "state"), "--limit", "1",
        "--flush-timeout", "0", *args])


def _key_files(tmp_path: Path) -> dict[str, str]:
    load_or_create_key(tmp_path / "reg")
    (tmp_path / "words.pub").write_text("this is not a key\n")
    (tmp_path / "short.pub").write_text("aGVsbG8=\n")
    return {"nosuch.pub": "does not exist",
            str(tmp_path / "words.pub"): "is not a registry public key",
            str(tmp_path / "short.pub"): "is not a registry public key",
            str(tmp_path / "reg" / "signing_key.pem"): "holds a private key"}


@pytest.mark.parametrize("args, message", [
    (("--max-mb", "-5"), "--max-mb must be a number of megabytes above 0"),
    (("--max-mb", "0"), "--max-mb must be a number of megabytes above 0"),
    (("--max-mb", "nan"), "--max-mb must be a number of megabytes above 0"),
    (("--source", "bogus"), "--source must be sim, csv:PATH or stdin. Got 'bogus' instead."),
    (("--source", "csv:/nonexistent.csv"), "'/nonexistent.csv' is not a file"),
    (("--source", "csv:"), "is not a file"),
])
def test_bad_settings_fail_with_one_line(tmp_path, args, message):
    """Check each bad setting exits 2 with one line naming it (--max-mb -5 used to be accepted
    and drop every reading; a bad --source raised a traceback once running)."""
    res = _run(tmp_path, *args)
    assert res.exit_code == 2, res.stdout + res.stderr
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert message in res.stderr


def test_a_trust_key_that_is_not_a_public_key_fails_at_start(tmp_path):
    """Check a --trust-key that is missing, not a key or the private key fails at start with one
    line (a missing file raised a traceback; any other file became a bogus key id)."""
    for path, message in _key_files(tmp_path).items():
        res = _run(tmp_path, "--trust-key", path)
        assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.stderr
        assert f"Trust key file {path!r} {message}" in res.stderr
    good = _run(tmp_path, "--trust-key", str(tmp_path / "reg" / "signing_key.pub"))
    assert good.exit_code == 0, good.stderr


def test_outbox_drops_are_logged_once_then_periodically(tmp_path, caplog):
    """Check a full outbox warns at the first drop with the exact count, not per reading (drops
    were never logged)."""
    caplog.set_level(logging.WARNING, "edgewise.agent")
    agent = Agent("http://127.0.0.1:9", "pump-7", "s", tmp_path / "a", max_bytes=2000)
    seqs = [agent.handle({"temp_c": 20.0 + i % 3}) for i in range(100)]
    kept = sum(s is not None for s in seqs)
    full = [json.loads(r.getMessage()) for r in caplog.records if "outbox_full" in r.getMessage()]
    assert 0 < kept < 100 and agent.outbox.dropped == 100 - kept
    assert len(full) == 1 and full[0]["dropped"] == 1 and full[0]["max_bytes"] == 2000
    agent._drop_logged_at -= 61                       # a minute later it is said again
    agent.handle({"temp_c": 20.0})
    full = [json.loads(r.getMessage()) for r in caplog.records if "outbox_full" in r.getMessage()]
    assert [f["dropped"] for f in full] == [1, 100 - kept + 1]
    with pytest.raises(ValueError, match=r"'max_bytes' parameter of Outbox .* Got -5"):
        Agent("http://127.0.0.1:9", "pump-7", "s", tmp_path / "b", max_bytes=-5)
