"""``edgewise alerts list|show|ack|label`` against a real gateway app served over HTTP.

The app is the real one (real DuckDB store, Security and Pipeline) under uvicorn on a free
port; a seq-gap alert is raised by real telemetry (seqs 1 and 3, then the gateway's own gap
check past its grace period), an anomaly alert is added through the store. Every check is
made over the API afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.store.base import Alert
from tests.conftest import REPO, free_port
from tests.server.conftest import Env, build_env, serve_in_thread

load_commands()


class Gateway:
    """A served app, its URL and a CLI runner pointed at it (``edgewise COMMAND``, with the
    ``ROLE`` token by default: the alerts commands here; other command groups that talk to
    the gateway's API subclass it)."""

    COMMAND = "alerts"
    ROLE = "operator"

    def __init__(self, env: Env, url: str) -> None:
        self.env, self.url = env, url
        self.runner = CliRunner(mix_stderr=False)

    def cli(self, *args: str, role: str | None = "", **env: str | None) -> Any:
        """Run ``edgewise COMMAND ARGS`` with the ``role`` token (default ``ROLE``; None:
        no token) in EDGEWISE_TOKEN."""
        role = self.ROLE if role == "" else role
        environ: dict[str, str | None] = {
            "EDGEWISE_GATEWAY_URL": self.url, "EDGEWISE_CA_FILE": None,
            "EDGEWISE_TOKEN": self.env.tokens[role] if role else None, **env}
        return self.runner.invoke(app, [self.COMMAND, *args], env=environ)

    def api(self, method: str, path: str, role: str = "admin", **kw: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, headers=self.env.auth(role), timeout=10,
                             **kw)


@pytest.fixture
def gw(data_dir: Path) -> Iterator[Gateway]:
    gen = build_env(data_dir)
    env = next(gen)
    try:
        with serve_in_thread(env.client.app) as port:
            yield Gateway(env, f"http://127.0.0.1:{port}")
    finally:
        gen.close()


def _seq_gap(gw: Gateway) -> dict[str, Any]:
    """Send seqs 1 and 3 over HTTP; the seq-gap alert the gateway raises for seq 2."""
    t0 = int(time.time()) - 60
    for i, seq in enumerate((1, 3)):
        r = httpx.post(f"{gw.url}/v1/telemetry", headers=gw.env.device_headers(), timeout=10,
                       json={"ts": t0 + i, "seq": seq, "metrics": {"temp_c": 20.0}})
        assert r.status_code == 200, r.text
    # the gateway's gap check, as its gap thread runs it, once the grace period is over
    (raised,) = gw.env.pipeline.check_gaps(now=time.monotonic() + 3600)
    (alert,) = gw.api("GET", "/v1/alerts?kind=seq_gap").json()
    assert alert["id"] == raised.id
    return alert


def _anomaly(gw: Gateway, start_s: int, **kw: Any) -> Alert:
    return gw.env.store.add_alert(Alert(
        gw.env.device, start_s * 10**9, (start_s + 3) * 10**9, 0.97,
        drivers={"temp_c": 0.6, "rpm": 0.25, "vib": 0.1, "hum": 0.05},
        message="Anomalous temp_c (60%).", **kw))


def _one_line_error(result: Any, code: int = 1) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_list_shows_a_real_seq_gap_alert_as_a_table_and_as_the_apis_json(gw: Gateway) -> None:
    gap = _seq_gap(gw)
    anomaly = _anomaly(gw, int(time.time()) - 30)
    r = gw.cli("list", role="viewer")
    assert r.exit_code == 0, r.stderr
    assert gap["id"][:8] in r.stdout and anomaly.id[:8] in r.stdout
    assert "seq_gap" in r.stdout and "pump-1" in r.stdout and "open" in r.stdout
    assert "temp_c 60%, rpm 25%, vib 10%" in r.stdout and "hum" not in r.stdout  # top 3
    assert "0.97" in r.stdout and "2 alerts" in r.stdout

    r = gw.cli("list", "--json", role="viewer")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout) == gw.api("GET", "/v1/alerts").json()
    r = gw.cli("list", "--json", "--status", "open", "--device", "pump-1", "--limit", "1",
               role="viewer")
    assert r.exit_code == 0, r.stderr
    newest = gw.api("GET", "/v1/alerts?limit=1").json()  # newest first, as the API lists
    assert json.loads(r.stdout) == newest and newest[0]["id"] in (gap["id"], anomaly.id)
    r = gw.cli("list", "--device", "pump-9", role="viewer")
    assert r.exit_code == 0 and r.stdout.strip() == "no alerts matching device=pump-9"


def test_list_follows_the_link_header_up_to_the_limit(gw: Gateway,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from edgewise.cli import alerts as cli_alerts

    t0 = int(time.time()) - 600
    made = [_anomaly(gw, t0 + 10 * i).id for i in range(7)]
    monkeypatch.setattr(cli_alerts, "PAGE", 2)  # pages of 2: four pages for seven alerts
    r = gw.cli("list", "--json", "--limit", "100", role="viewer")
    assert r.exit_code == 0, r.stderr
    assert [a["id"] for a in json.loads(r.stdout)] == made[::-1]
    r = gw.cli("list", "--json", "--limit", "5", role="viewer")
    assert [a["id"] for a in json.loads(r.stdout)] == made[::-1][:5]


def test_show_prints_the_alert_and_its_json(gw: Gateway) -> None:
    a = _anomaly(gw, int(time.time()) - 30)
    r = gw.cli("show", a.id, role="viewer")
    assert r.exit_code == 0, r.stderr
    assert f"id:          {a.id}" in r.stdout and "Anomalous temp_c (60%)." in r.stdout
    r = gw.cli("show", a.id[:8], "--json", role="viewer")  # a unique prefix, as listed
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout) == gw.api("GET", f"/v1/alerts/{a.id}").json()


def test_ack_acknowledges_over_the_api(gw: Gateway) -> None:
    gap = _seq_gap(gw)
    r = gw.cli("ack", gap["id"][:8])
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == f"alert {gap['id']} acknowledged by test-operator"
    after = gw.api("GET", f"/v1/alerts/{gap['id']}").json()
    assert (after["status"], after["acked_by"]) == ("acknowledged", "test-operator")
    audit = gw.api("GET", "/v1/audit").json()
    assert [e["target"] for e in audit if e["action"] == "alert.ack"] == [gap["id"]]


def test_label_with_a_note_is_stored_and_audited(gw: Gateway) -> None:
    a = _anomaly(gw, int(time.time()) - 30)
    r = gw.cli("label", a.id, "true_alarm", "--note", "bearing worn")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith(f"alert {a.id} labelled true_alarm by test-operator "
                               "(note: bearing worn); its span is labelled anomaly")
    after = gw.api("GET", f"/v1/alerts/{a.id}").json()
    assert (after["label"], after["note"], after["status"]) == (
        "true_alarm", "bearing worn", "acknowledged")
    audit = gw.api("GET", "/v1/audit").json()
    (entry,) = [e for e in audit if e["action"] == "alert.label"]
    assert entry["target"] == a.id and entry["detail"]["label"] == "true_alarm"
    assert entry["actor"] == gw.env.actor("operator")
    assert gw.api("GET", "/v1/audit/verify").json()["ok"] is True

    r = gw.cli("label", a.id, "maybe")  # refused by the CLI before anything is sent
    assert r.exit_code == 2 and "true_alarm" in r.stderr


def test_a_viewer_token_cannot_ack_one_line_naming_the_role(gw: Gateway) -> None:
    gap = _seq_gap(gw)
    line = _one_line_error(gw.cli("ack", gap["id"], role="viewer"))
    assert "has role 'viewer'" in line and "operator" in line and "EDGEWISE_TOKEN" in line
    assert gw.api("GET", f"/v1/alerts/{gap['id']}").json()["status"] == "open"


def test_no_token_or_a_wrong_one_names_edgewise_token(gw: Gateway) -> None:
    line = _one_line_error(gw.cli("list", role=None), code=2)
    assert "EDGEWISE_TOKEN" in line
    line = _one_line_error(gw.cli("list", role=None, EDGEWISE_TOKEN="ew_not-a-token"))
    assert "refused the API token" in line and "EDGEWISE_TOKEN" in line
    assert "ew_not-a-token" not in line  # the token is never printed


def test_an_unreachable_gateway_names_its_url(gw: Gateway) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = _one_line_error(gw.cli("list", "--gateway", url))
    assert f"cannot reach the gateway at {url}" in line and "--gateway" in line
    line = _one_line_error(gw.cli("list", EDGEWISE_GATEWAY_URL="gw.local:8080"), code=2)
    assert "http://" in line and "gw.local:8080" in line
    # the installed command's way out (edgewise.cli.main): one line, exit 1, no traceback
    p = subprocess.run([sys.executable, "-m", "edgewise", "alerts", "ack", "abc", "--gateway",
                        url], capture_output=True, text=True, timeout=120, check=False,
                       env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin",
                            "EDGEWISE_TOKEN": "t"})
    assert p.returncode == 1 and p.stdout == "", (p.returncode, p.stdout, p.stderr)
    assert p.stderr.startswith(f"error: cannot reach the gateway at {url} ")
    assert len(p.stderr.splitlines()) == 1, p.stderr


def test_an_unknown_id_and_api_refusals_are_one_line(gw: Gateway) -> None:
    a = _anomaly(gw, int(time.time()) - 30)
    for args in (["show", "f" * 32], ["ack", "0123abcd"], ["label", "nope", "false_alarm"]):
        line = _one_line_error(gw.cli(*args))
        assert f"no alert {args[1]!r}" in line, line
    line = _one_line_error(gw.cli("label", a.id, "false_alarm", "--note", "x" * 2001))
    assert "HTTP 422" in line and "note" in line  # the problem's detail, on one line
    line = _one_line_error(gw.cli("list", "--since", "yesterday-ish", role="viewer"))
    assert "HTTP 422" in line and "since" in line
    # a merged alert: the API's 409 detail names the alert to act on instead
    b = _anomaly(gw, int(time.time()) - 20)
    gw.env.store.merge_alert(b.id, a.id, end_ns=b.end_ns)
    line = _one_line_error(gw.cli("ack", b.id))
    assert "HTTP 409 (merged_alert)" in line and f"acknowledge or label {a.id!r}" in line
    assert gw.api("GET", f"/v1/alerts/{a.id}").json()["status"] == "open"


def test_kind_is_one_of_the_alert_kinds(gw: Gateway) -> None:
    """--kind takes the kinds alerts have (as --status its statuses); a typo is refused
    before anything is sent, not answered "no alerts matching"."""
    gap = _seq_gap(gw)
    r = gw.cli("list", "--kind", "seqgap", role="viewer")
    assert r.exit_code == 2 and r.stdout == "", (r.stdout, r.stderr)
    assert all(word in r.stderr for word in ("seqgap", "anomaly", "seq_gap")), r.stderr
    r = gw.cli("list", "--json", "--kind", "seq_gap", role="viewer")
    assert r.exit_code == 0, r.stderr
    assert [a["id"] for a in json.loads(r.stdout)] == [gap["id"]]
    r = gw.cli("list", "--kind", "anomaly", role="viewer")
    assert r.exit_code == 0 and r.stdout.strip() == "no alerts matching kind=anomaly"
    from edgewise.alerts import KINDS
    from edgewise.cli.alerts import Kind

    assert tuple(Kind) == KINDS  # the CLI's own copy (it does not load the detectors)


def test_a_prefix_under_4_characters_is_refused_saying_so(gw: Gateway) -> None:
    a = _anomaly(gw, int(time.time()) - 30)
    line = _one_line_error(gw.cli("show", a.id[:3], role="viewer"))
    assert f"no alert {a.id[:3]!r}" in line and "at least 4 characters" in line, line
    r = gw.cli("show", a.id[:4], "--json", role="viewer")  # 4 are enough
    assert r.exit_code == 0 and json.loads(r.stdout)["id"] == a.id, r.stderr


def test_dot_ids_are_refused_in_one_line_before_anything_is_sent(gw: Gateway) -> None:
    a = _anomaly(gw, int(time.time()) - 30)
    for dots in (".", ".."):  # dot segments of the URL: never sent
        for args in (["show", dots], ["ack", dots], ["label", dots, "true_alarm"]):
            line = _one_line_error(gw.cli(*args), code=2)
            assert line == ("error: ALERT_ID must be an alert's id, as 'edgewise alerts "
                            f"list' shows it. Got {dots!r} instead."), line
    assert gw.api("GET", f"/v1/alerts/{a.id}").json()["status"] == "open"


def test_https_checks_the_certificate_and_trusts_a_ca_file(gw: Gateway, tmp_path: Path) -> None:
    """A self-signed gateway is refused in one line suggesting --ca-file; with it, it works."""
    from edgewise.config import Settings
    from edgewise.server.app import uvicorn_ssl_kwargs
    from tests.conftest import self_signed_cert

    a = _anomaly(gw, int(time.time()) - 30)
    cert, key = self_signed_cert(tmp_path)
    tls = uvicorn_ssl_kwargs(Settings(tls_cert=str(cert), tls_key=str(key)))
    with serve_in_thread(gw.env.client.app, **tls) as port:
        url = f"https://127.0.0.1:{port}"
        line = _one_line_error(gw.cli("list", EDGEWISE_GATEWAY_URL=url))
        assert f"the gateway at {url} presented a certificate" in line and "--ca-file" in line
        r = gw.cli("list", "--json", "--ca-file", str(cert), EDGEWISE_GATEWAY_URL=url)
        assert r.exit_code == 0, r.stderr
        assert [x["id"] for x in json.loads(r.stdout)] == [a.id]
        line = _one_line_error(gw.cli("list", "--ca-file", str(tmp_path / "nope.pem"),
                                      EDGEWISE_GATEWAY_URL=url), code=2)
        assert "--ca-file" in line and "nope.pem" in line
