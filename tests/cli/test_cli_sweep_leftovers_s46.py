"""Leftovers of the session-46 bad-input sweep of the CLI: answers that took a blank value,
or named the value but not the option, or said the wrong thing. Each is one ``error:`` line
naming the option and its value, exit 2, now."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_cli_sweep_s46 import _one_error_line
from tests.in_process import edgewise_here


@pytest.mark.parametrize("name", [" ", "--", "-", " - ", "\u3000"])
def test_token_create_refuses_a_blank_or_dash_only_name(tmp_path: Path, name: str) -> None:
    # it made the token: 'token list' showed an empty name column, '--' reads as an option end
    r = edgewise_here("token", "create", "--data-dir", str(tmp_path), "--role", "viewer",
                      "--name", name)
    assert r.returncode == 2, r.stdout
    # the rule and its words are Security.create_token's, as POST /v1/tokens answers them
    _one_error_line(r.stderr, "'name'", repr(name), "blank or only dashes")
    assert "ew_" not in r.stdout
    listed = edgewise_here("token", "list", "--data-dir", str(tmp_path), "--json")
    assert listed.returncode == 0 and listed.stdout.strip() in ("", "[]"), listed.stdout


def test_token_create_still_takes_names_with_dashes_and_no_name(tmp_path: Path) -> None:
    for args in (["--name", "ci-bot"], ["--name", "-x-"], []):
        r = edgewise_here("token", "create", "--data-dir", str(tmp_path), "--role", "viewer",
                          *args)
        assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name", [" ", "--", "\u3000"])
def test_post_tokens_refuses_a_blank_or_dash_only_name_naming_the_field(
        tmp_path: Path, name: str) -> None:
    from tests.server.conftest import build_env

    gen = build_env(tmp_path)
    env = next(gen)
    try:
        before = len(env.security.list_tokens())
        r = env.client.post("/v1/tokens", json={"role": "viewer", "name": name},
                            headers=env.auth("admin"))
        assert r.status_code == 422, r.text
        body = r.json()
        assert (body["field"], body["value"]) == ("name", name)
        assert "not blank or only dashes" in body["allowed"]
        assert len(env.security.list_tokens()) == before
    finally:
        gen.close()


def _csv(tmp_path: Path) -> Path:
    f = tmp_path / "x.csv"
    f.write_text("ts,a,b\n2024-01-01T00:00:00Z,1,2\n2024-01-01T00:01:00Z,1,3\n"
                 "2024-01-01T00:02:00Z,2,3\n")
    return f


def test_detect_unknown_detector_names_the_option(tmp_path: Path) -> None:
    r = edgewise_here("detect", str(_csv(tmp_path)), "--detector", " ")
    assert r.returncode == 2
    _one_error_line(r.stderr, "--detector", "' '", "Unknown detector", "ewzscore")
    assert not (tmp_path / "x_scored.csv").exists()


def test_bench_csv_unknown_detector_names_the_option(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("ts,a,label\n2024-01-01T00:00:00Z,1,0\n"
                                    "2024-01-01T00:01:00Z,2,1\n")
    r = edgewise_here("bench", "csv", str(tmp_path), "--label-column", "label",
                      "--detector", " ")
    assert r.returncode == 2
    _one_error_line(r.stderr, "--detector", "' '", "Unknown detector")


def test_detect_column_not_in_the_file_names_the_option(tmp_path: Path) -> None:
    r = edgewise_here("detect", str(_csv(tmp_path)), "--columns=-1")
    assert r.returncode == 2
    _one_error_line(r.stderr, "--columns", "'-1'", "Columns: 'ts', 'a', 'b'")


@pytest.mark.parametrize("command", ["add", "groups"])
def test_device_blank_group_names_the_option(tmp_path: Path, command: str) -> None:
    if command == "groups":
        assert edgewise_here("device", "add", "p1", "--data-dir", str(tmp_path)).returncode == 0
    r = edgewise_here("device", command, "p1", "--data-dir", str(tmp_path), "--group", "")
    assert r.returncode == 2, r.stdout
    _one_error_line(r.stderr, "--group", "''", "1-64 characters")


def test_rotate_secret_of_an_empty_device_id_says_it_is_empty(tmp_path: Path) -> None:
    assert edgewise_here("device", "add", "p1", "--data-dir", str(tmp_path)).returncode == 0
    for blank in ("", " "):
        r = edgewise_here("device", "rotate-secret", "--device", blank,
                          "--data-dir", str(tmp_path))
        assert r.returncode == 2, r.stdout
        line = _one_error_line(r.stderr, "--device", repr(blank), "empty")
        assert "device add" not in line  # the hint was 'edgewise device add )'


def test_agent_secret_file_that_is_a_directory_says_so(tmp_path: Path) -> None:
    r = edgewise_here("agent", "--gateway", "http://127.0.0.1:9", "--device", "p1",
                      "--secret-file", str(tmp_path), "--state-dir", str(tmp_path / "st"))
    assert r.returncode == 2, r.stdout
    line = _one_error_line(r.stderr, "--secret-file", repr(str(tmp_path)), "is a directory")
    assert "does not exist" not in line


@pytest.mark.parametrize(("option", "env"), [
    ("--store", {"EDGEWISE_STORE": "duckdb:///{d}/other.duckdb"}),
    ("--alert-webhook", {}),
    ("--audit-syslog", {"EDGEWISE_AUDIT_SYSLOG": "udp://127.0.0.1:5514"}),
])
@pytest.mark.parametrize("blank", ["", " "])
def test_serve_refuses_a_blank_store_webhook_or_syslog(tmp_path: Path, option: str,
                                                       env: dict[str, str], blank: str) -> None:
    # '--store ""' silently wrote to the default DuckDB file even with EDGEWISE_STORE set;
    # '--audit-syslog ""' fell back to EDGEWISE_AUDIT_SYSLOG, and ' ' forwarded nothing
    data = tmp_path / "data"
    # --tls-cert alone: the old code stopped there (in one line) rather than start serving
    r = edgewise_here("serve", "--data-dir", str(data), option, blank,
                      "--tls-cert", str(tmp_path / "c.pem"),
                      env={k: v.format(d=tmp_path) for k, v in env.items()})
    assert r.returncode == 2, r.stdout
    _one_error_line(r.stderr, option, repr(blank), "leave the option out")
    assert not (data / "edgewise.duckdb").exists()


def test_serve_empty_environment_variables_still_count_as_unset(tmp_path: Path) -> None:
    # README "Settings": an empty EDGEWISE_* variable is unset; it must not be refused as
    # a blank option (the bad --port stops the start before anything listens)
    r = edgewise_here("serve", "--data-dir", str(tmp_path), "--port", "0",
                      env={"EDGEWISE_STORE": "", "EDGEWISE_AUDIT_SYSLOG": "",
                           "EDGEWISE_ALERT_WEBHOOKS": ""})
    assert r.returncode == 2
    _one_error_line(r.stderr, "--port")
