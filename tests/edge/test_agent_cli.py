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
    (("--group", "line-a "), "--group: Group name 'line-a ' is not valid: it must be"),
    (("--group", "line-a", "--group", "line-b\r"), "Group name 'line-b\\r' is not valid"),
])
def test_bad_settings_fail_with_one_line(tmp_path, args, message):
    """Check each bad setting exits 2 with one line naming it (--max-mb -5 used to be accepted
    and drop every reading; a bad --source raised a traceback once running; a --group with
    a trailing blank or CR was taken, then every release for the group refused for ever)."""
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


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfesecret", "is not a device secret: it holds bytes that are not ASCII text"),
    (b"", "is empty"),
    (b"  \n\n", "is empty"),
    (b"abc def\n", "is not a device secret: it holds blanks or control characters"),
])
def test_a_secret_file_that_holds_no_secret_fails_at_start(tmp_path, content, message):
    """Check a secret file that is not text, empty or two words fails at start with one line
    (a non-UTF-8 file raised a traceback; an empty one ran, every request answered 401)."""
    secret = tmp_path / "bad_secret"
    secret.write_bytes(content)
    res = _run(tmp_path, "--secret-file", str(secret))
    assert res.exit_code == 2, res.stdout + res.stderr
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert f"Secret file {str(secret)!r} {message}" in res.stderr


@pytest.mark.parametrize("url", ["http://", "https://", "http:///v1"])
def test_a_gateway_url_without_a_host_fails_at_start(tmp_path, url):
    """Check --gateway with no host fails at start with one line (it ran, every request
    failing)."""
    res = _run(tmp_path, "--gateway", url)
    assert res.exit_code == 2, res.stdout + res.stderr
    assert res.stderr.count("\n") == 1 and "--gateway must be a URL with a host" in res.stderr


def test_a_self_signed_gateway_is_reached_with_ca_file(data_dir, tmp_path, caplog):
    """Check the agent reaches a gateway serving a self-signed certificate ('edgewise serve
    --tls-cert') with --ca-file; without it, a warning names the certificate problem and
    --ca-file (the agent had no such option, and logged each failure only at INFO as
    gateway_unreachable); a --ca-file that is no CA bundle fails at start in one line."""
    from edgewise.config import Settings
    from edgewise.server.app import uvicorn_ssl_kwargs
    from tests.conftest import self_signed_cert
    from tests.server.conftest import build_env, serve_in_thread

    caplog.set_level(logging.INFO, "edgewise.agent")
    cert, key = self_signed_cert(tmp_path)
    env = build_env(data_dir)
    gw = next(env)
    try:
        secret = tmp_path / "secret"
        secret.write_text(gw.secret)
        tls = uvicorn_ssl_kwargs(Settings(tls_cert=str(cert), tls_key=str(key)))
        with serve_in_thread(gw.client.app, **tls) as port:
            def run(*extra: str):
                return CliRunner(mix_stderr=False).invoke(app, [
                    "agent", "--gateway", f"https://127.0.0.1:{port}", "--device", gw.device,
                    "--secret-file", str(secret), "--state-dir", str(tmp_path / "state"),
                    "--limit", "3", "--rate", "100", *extra])

            res = run("--flush-timeout", "1")
            assert res.exit_code == 0, res.stderr
            warned = [json.loads(r.getMessage()) for r in caplog.records
                      if "gateway_certificate_unverified" in r.getMessage()]
            assert warned and warned[0]["buffered"] >= 1
            assert "--ca-file" in warned[0]["detail"]
            assert "CERTIFICATE_VERIFY_FAILED" in warned[0]["detail"]
            assert gw.store.query(gw.device, "temp_c") == []
            res = run("--flush-timeout", "30", "--ca-file", str(cert))
            assert res.exit_code == 0, res.stderr
            assert len(gw.store.query(gw.device, "temp_c")) == 6
        res = run("--ca-file", str(tmp_path / "nope.pem"))
        assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.stderr
        assert "--ca-file" in res.stderr and "nope.pem" in res.stderr
    finally:
        env.close()
