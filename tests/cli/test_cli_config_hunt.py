"""Settings refused in one line before anything is made: `serve --mqtt` a URL that is none
(it made the data dir, store, key and a first admin token, then refused), `--timeout` NaN,
inf or 1e10 (typer's min let them through, to a traceback); and `device delete` reads only
the settings it uses (EDGEWISE_HOST= or EDGEWISE_RATE_LIMIT_PER_S=10s blocked it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.security import Security
from tests.cli.test_cli_refusals_round2 import refused

load_commands()


class Ran(Exception):
    """Raised by a stand-in for the work a refused command must not reach."""


def _must_not_run(*a: object, **k: object) -> None:
    raise Ran


@pytest.mark.parametrize(("url", "says"), [
    ("bogus", ("error: --mqtt (EDGEWISE_MQTT) has value 'bogus'. Use 'embedded' or "
               "mqtt://HOST:PORT (mqtts:// for TLS).")),
    ("mqtt://broker:99999", ("error: --mqtt (EDGEWISE_MQTT) has value "
                             "'mqtt://broker:99999': its port '99999' is not a port. Use a "
                             "number from 1 to 65535")),
])
def test_serve_refuses_a_bad_mqtt_url_before_making_anything(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path, url: str, says: str) -> None:
    import edgewise.gateway.runtime as runtime

    monkeypatch.setattr(runtime.Gateway, "__init__", _must_not_run)
    data = tmp_path / "new"
    line = refused(monkeypatch, capsys, "serve", "--data-dir", str(data), "--mqtt", url)
    assert line.startswith(says), line
    assert not data.exists()
    # from the environment too, named the same
    monkeypatch.setenv("EDGEWISE_MQTT", url)
    assert refused(monkeypatch, capsys, "serve", "--data-dir", str(data)).startswith(says)
    assert not data.exists()


@pytest.mark.parametrize("value", ["nan", "inf", "1e10", "86400.5"])
@pytest.mark.parametrize("command", [("alerts", "list"), ("readings", "export", "p1")])
def test_timeout_must_be_finite_and_at_most_a_day(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        command: tuple[str, ...], value: str) -> None:
    import httpx

    monkeypatch.setattr(httpx, "Client", _must_not_run)  # no request is tried
    monkeypatch.setenv("EDGEWISE_TOKEN", "t0k3n")
    line = refused(monkeypatch, capsys, *command, "--timeout", value)
    assert line == (f"error: --timeout must be a finite number of seconds from 0.1 to 86400. "
                    f"Got {float(value)!r} instead."), line


def test_timeout_of_a_day_is_taken() -> None:
    from edgewise.cli._gateway import GatewayClient

    with GatewayClient("http://127.0.0.1:9", "t0k3n", "", 86400.0) as gw:
        assert gw.http.timeout.read == 86400.0


@pytest.mark.parametrize("env", [{"EDGEWISE_HOST": ""}, {"EDGEWISE_HTTP_PORT": "x"},
                                 {"EDGEWISE_RATE_LIMIT_PER_S": "10s"},
                                 {"EDGEWISE_ALERT_WEBHOOK_TIMEOUT_S": "1e10"}])
def test_device_delete_is_not_blocked_by_a_gateway_setting(tmp_path: Path,
                                                          env: dict[str, str]) -> None:
    data = tmp_path / "d"
    sec = Security(data)
    sec.add_device("p1")
    sec.close()
    res = CliRunner(mix_stderr=False).invoke(
        app, ["device", "delete", "p1", "--data-dir", str(data)], env=env)
    assert res.exit_code == 0, (res.stdout, res.stderr)
    sec = Security(data)
    try:
        assert not sec.has_device("p1")
    finally:
        sec.close()
