"""Hunt fixes (session 39, operator CLI arguments): an argument with bytes that are not UTF-8
(``$'pump\\xff'``, read as a lone surrogate) is one ``error:`` line naming the option, exit
2, not a ``UnicodeEncodeError`` traceback (nor a metric stored as ``"a\\udcff"``); a data
dir that cannot be made is one line naming it and why; a gateway URL's password is masked
in every line; ``device add --json`` always has ``groups``."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import edgewise.cli as cli
from edgewise.cli import app, load_commands
from edgewise.registry import Registry
from edgewise.security import Security

load_commands()

BAD = "pump\udcff"  # what Python makes of the argument bytes b"pump\xff"


def _main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
          *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``edgewise ARGS`` through the console script's entry point: (exit code, stderr)."""
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(sys, "argv", ["edgewise", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "d"
    with contextlib.closing(Security(d)) as sec:
        sec.add_device("pump-1")
    (tmp_path / "m.pkl").write_bytes(b"xx")
    return d


@pytest.mark.parametrize(("args", "named"), [
    (["device", "groups", BAD], "DEVICE_ID"),
    (["device", "groups", "pump-1", "--group", BAD], "--group"),
    (["device", "rotate-secret", "--device", BAD], "--device"),
    (["device", "delete", BAD], "DEVICE_ID"),
    (["device", "delete", "pump-1", "--mqtt", "mqtt://h\udcff"], "--mqtt"),
    (["device", "add", BAD], "NAME"),
    (["token", "revoke", BAD], "NAME_OR_ID"),
    (["token", "create", "--role", "viewer", "--name", BAD], "--name"),
    (["registry", "publish", "ewz", "1.0", "{model}", "--trained-on", BAD], "--trained-on"),
    (["registry", "publish", "ewz", "1.0", "{model}", "--metric", "a\udcff=1"], "--metric"),
    (["registry", "publish", BAD, "1.0", "{model}"], "NAME"),
    (["registry", "rollout", "ewz", "1.0", "group:" + BAD], "TARGET"),
    (["registry", "list", "--name", BAD], "--name"),
])
def test_a_non_utf8_argument_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str], data_dir: Path,
                                         args: list[str], named: str) -> None:
    """These ended in UnicodeEncodeError tracebacks (exit 1), or stored the metric."""
    model = str(data_dir.parent / "m.pkl")
    args = [a.replace("{model}", model) for a in args]
    code, err = _main(monkeypatch, capsys, *args, "--data-dir", str(data_dir))
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {named} must be valid UTF-8 text."), err
    assert "0xff" in err, err
    with contextlib.closing(Registry(data_dir)) as reg:
        assert reg.versions() == []  # the metric 'a\udcff' was published


@pytest.mark.parametrize("args", [["show", BAD], ["ack", BAD], ["label", BAD, "false_alarm"],
                                  ["label", "9b1f2c3d", "false_alarm", "--note", BAD],
                                  ["list", "--device", BAD]])
def test_alerts_refuse_a_non_utf8_argument(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str],
                                           args: list[str]) -> None:
    code, err = _main(monkeypatch, capsys, "alerts", *args, "--gateway", "http://127.0.0.1:9",
                      env={"EDGEWISE_TOKEN": "x"})
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "must be valid UTF-8 text" in err, err


def test_an_environment_variable_is_named_with_its_option(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _main(monkeypatch, capsys, "alerts", "list",
                      env={"EDGEWISE_TOKEN": "x", "EDGEWISE_GATEWAY_URL": "http://gw\udcff"})
    assert code == 2, err
    assert err.startswith("error: EDGEWISE_GATEWAY_URL (--gateway) must be valid UTF-8"), err


def test_the_check_works_under_click_runner_too(data_dir: Path) -> None:
    """Commands are also run in-process (tests, scripts): still one line, exit 2."""
    res = CliRunner(mix_stderr=False).invoke(
        app, ["token", "revoke", BAD, "--data-dir", str(data_dir)])
    assert res.exit_code == 2, res.exception
    assert res.stderr.startswith("error: NAME_OR_ID must be valid UTF-8 text."), res.stderr


def _unmakeable(tmp_path: Path, how: str) -> Path:
    afile = tmp_path / "afile"
    afile.write_text("x")
    if how == "file":
        return afile
    if how == "under-file":
        return afile / "sub"
    if os.geteuid() == 0:
        pytest.skip("root may write a 0555 folder")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    return ro / "new"


@pytest.mark.parametrize("how", ["file", "under-file", "read-only-parent"])
@pytest.mark.parametrize("args", [["device", "add", "p2"], ["token", "create", "--role",
                                                            "viewer"]])
def test_a_data_dir_that_cannot_be_made_is_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        how: str, args: list[str]) -> None:
    """FileExistsError, NotADirectoryError and PermissionError tracebacks (exit 1)."""
    where = _unmakeable(tmp_path, how)
    code, err = _main(monkeypatch, capsys, *args, "--data-dir", str(where))
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: The data directory {str(where)!r} cannot be made: "), err


def test_a_registry_folder_that_cannot_be_made_is_a_config_error(tmp_path: Path) -> None:
    from edgewise.errors import ConfigError

    (tmp_path / "registry").write_text("x")
    with pytest.raises(ConfigError, match=r"registry folder .* cannot be made: it is a file"):
        Registry(tmp_path)


def test_a_gateway_password_is_masked(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _main(monkeypatch, capsys, "alerts", "show", "9b1f2c3d", "--gateway",
                      "http://ew:S3cretPW@127.0.0.1:9", "--timeout", "2",
                      env={"EDGEWISE_TOKEN": "x"})
    assert code == 1, err
    assert "S3cretPW" not in err and "ew:***@127.0.0.1:9" in err, err
    code, err = _main(monkeypatch, capsys, "alerts", "list", "--gateway",
                      "ftp://ew:S3cretPW@gw", env={"EDGEWISE_TOKEN": "x"})
    assert code == 2 and "S3cretPW" not in err and "ew:***@gw" in err, err


@pytest.mark.parametrize("groups", [[], ["line-a"]])
def test_device_add_json_always_has_groups(tmp_path: Path, groups: list[str]) -> None:
    args = ["device", "add", "p9", "--data-dir", str(tmp_path / "d"), "--json"]
    for g in groups:
        args += ["--group", g]
    res = CliRunner(mix_stderr=False).invoke(app, args)
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["groups"] == groups


@pytest.mark.parametrize("store", ["bogus", "sqlite:///x.db"])
def test_device_delete_refuses_a_mistyped_store_before_revoking(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], data_dir: Path,
        store: str) -> None:
    """Check ``device delete --store`` with no URL or an unsupported scheme is refused in
    one line, exit 2, with the device still registered (it revoked the credentials first,
    then said the data was kept: exit 1 and the id refused at 'device add')."""
    code, err = _main(monkeypatch, capsys, "device", "delete", "pump-1", "--data-dir",
                      str(data_dir), "--store", store)
    assert code == 2 and err.startswith("error: --store: Store URL"), err
    assert err.count("\n") == 1
    with contextlib.closing(Security(data_dir)) as sec:
        assert sec.has_device("pump-1") and not sec.data_kept("pump-1")
