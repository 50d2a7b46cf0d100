"""``edgewise serve`` on a data dir whose last admin token was revoked: it makes and prints no
new one (the hunt saw ``admin token (shown once): ew_...`` and a new ``first-admin``), and
says, in one line, the command that makes one."""

from __future__ import annotations

import shlex
from pathlib import Path

from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.security import Security

load_commands()


def test_serve_after_the_last_admin_was_revoked_makes_no_token(
        gateway_factory, tmp_path: Path) -> None:
    data_dir = tmp_path / "ew"
    cli = CliRunner(mix_stderr=False)
    for args in (["token", "create", "--role", "admin", "--name", "ops"],
                 ["token", "revoke", "ops"]):
        res = cli.invoke(app, [*args, "--data-dir", str(data_dir)])
        assert res.exit_code == 0, res.output + res.stderr
    gw = gateway_factory(data_dir=data_dir).start()
    assert gw.stop() == 0
    log = gw.log.read_text()
    assert "admin token (shown once" not in log and "ew_" not in log, log
    [line] = [x for x in log.splitlines() if "admin token" in x]
    assert line.startswith("no admin token (one is made only at a data dir's first start)")
    sec = Security(data_dir)
    assert sec.list_tokens() == []
    assert [e.actor for e in sec.audit_log(1000) if e.action == "token.create"] == ["cli"]
    sec.close()
    # the command the line names is the CLI's own and makes a working admin token
    command = shlex.split(line.split("with: ", 1)[1].replace("NAME", "alice"))
    assert command[0] == "edgewise"
    res = cli.invoke(app, command[1:])
    assert res.exit_code == 0, res.output + res.stderr
    sec = Security(data_dir)
    assert sec.authenticate_token(res.stdout.strip()).role == "admin"
    assert [t.name for t in sec.list_tokens()] == ["alice"]
    sec.close()
