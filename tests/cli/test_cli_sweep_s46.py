"""A bad-input sweep of the whole CLI (session 46): the answers that were tracebacks or
silent successes, each one ``error:`` line naming the option, exit 2, now."""

from __future__ import annotations

from pathlib import Path

from tests.in_process import edgewise_here


def _one_error_line(stderr: str, *names: str) -> str:
    """The single ``error:`` line of ``stderr`` (no traceback), which names every one of
    ``names``."""
    assert "Traceback" not in stderr, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def test_keygen_name_not_utf8_is_refused_before_any_key_is_written(tmp_path: Path) -> None:
    # it wrote the private key, then died on the public one (UnicodeEncodeError), and the
    # half pair blocked every later run ("already exists")
    out = tmp_path / "keys"
    r = edgewise_here("federate", "keygen", "--out", str(out), "--name", "pump\udcff")
    assert r.returncode == 2
    _one_error_line(r.stderr, "--name", "UTF-8")
    assert not out.exists() or not any(out.iterdir())


def test_keygen_blank_out_is_refused_not_written_to_the_working_directory(
        tmp_path: Path) -> None:
    for blank in ("", " "):
        r = edgewise_here("federate", "keygen", "--out", blank, cwd=tmp_path)
        assert r.returncode == 2, (blank, r.stdout)
        _one_error_line(r.stderr, "--out")
    assert list(tmp_path.iterdir()) == []


def test_keygen_blank_or_too_long_name_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    r = edgewise_here("federate", "keygen", "--out", str(out), "--name", " ")
    assert r.returncode == 2, r.stdout
    _one_error_line(r.stderr, "--name", "' '")
    r = edgewise_here("federate", "keygen", "--out", str(out), "--name", "k" * 300)
    assert r.returncode == 2, r.stdout
    _one_error_line(r.stderr, "--name", "255")
    assert not out.exists() or not any(out.iterdir())


def test_export_name_too_long_for_a_file_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()  # an existing --out: its files are checked for foreign ones first
    r = edgewise_here("export", "--detector", "ewzscore", "--out", str(out),
                      "--name", "9" * 5000)
    assert r.returncode == 2
    _one_error_line(r.stderr)
    assert list(out.iterdir()) == []


def test_bench_forecast_series_too_long_names_the_option(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    r = edgewise_here("bench", "forecast", "--nab", str(tmp_path), "--series", "9" * 5000)
    assert r.returncode == 2
    _one_error_line(r.stderr, "--series", "255")


def test_path_with_a_name_too_long_names_its_option(tmp_path: Path) -> None:
    # ENAMETOOLONG from any path option was an OSError traceback, exit 1
    long = str(tmp_path / ("a" * 300) / "x")
    r = edgewise_here("audit", "verify", "--data-dir", long)
    assert r.returncode == 2
    _one_error_line(r.stderr, "--data-dir", "300 bytes")
    r = edgewise_here("bench", "csv", long)
    assert r.returncode == 2
    _one_error_line(r.stderr, "300 bytes")


def test_registry_publish_blank_format_is_refused_not_recorded_as_bin(tmp_path: Path) -> None:
    # '--format " "' skipped the suffix check and published a CSV as a 'bin' model
    data = tmp_path / "data"
    data.mkdir()
    model = tmp_path / "readings.csv"
    model.write_text("timestamp,value\n")
    r = edgewise_here("registry", "publish", "m", "1.0", str(model), "--format", " ",
                      "--data-dir", str(data))
    assert r.returncode == 2, r.stdout
    _one_error_line(r.stderr, "--format", "' '")
    r = edgewise_here("registry", "list", "--data-dir", str(data), "--json")
    assert r.returncode == 0 and '"m"' not in r.stdout, r.stdout


def test_device_add_with_a_mistyped_store_is_refused_and_adds_nothing(tmp_path: Path) -> None:
    # it warned that the store could not be checked, then registered the device (exit 0)
    data = tmp_path / "data"
    for typo in (" ", "nan", "/srv/ew/store.duckdb"):
        r = edgewise_here("device", "add", "pump-9", "--store", typo, "--data-dir", str(data))
        assert r.returncode == 2, (typo, r.stdout)
        _one_error_line(r.stderr, "--store", repr(typo))
    if data.is_dir():
        r = edgewise_here("device", "list", "--data-dir", str(data))
        assert "pump-9" not in r.stdout, r.stdout


def test_readings_export_text_not_utf8_is_refused_naming_the_option() -> None:
    # a device id or --metric/--start/--end/--step with a byte that is not UTF-8 (a
    # Latin-1 terminal) was a UnicodeEncodeError traceback, exit 1, where the URL was made
    env = {"EDGEWISE_TOKEN": "ew_not_used"}
    base = ["readings", "export", "pump-1", "--gateway", "http://127.0.0.1:9"]
    r = edgewise_here("readings", "export", "pump\udcff", "--gateway", "http://127.0.0.1:9",
                      env=env)
    assert r.returncode == 2
    _one_error_line(r.stderr, "DEVICE", "UTF-8")
    for option in ("--metric", "--start", "--end", "--step"):
        r = edgewise_here(*base, option, "x\udcff", env=env)
        assert r.returncode == 2, option
        _one_error_line(r.stderr, option, "UTF-8")


def test_quality_device_blank_or_not_utf8_is_refused(tmp_path: Path) -> None:
    # a one-device file was reported (and written to --json) under the id '' or 'p\udcff'
    # (exit 0; the JSON held a lone surrogate), or a traceback where stdout is strict UTF-8
    csv = tmp_path / "r.csv"
    csv.write_text("timestamp,value\n2024-01-01T00:00:00Z,1\n2024-01-01T00:01:00Z,2\n")
    for bad, says in (("", "''"), (" ", "' '"), ("p\udcff", "UTF-8")):
        r = edgewise_here("quality", str(csv), "--device", bad, "--json")
        assert r.returncode == 2, (bad, r.stdout)
        _one_error_line(r.stderr, "--device", says)


def test_gateway_url_with_a_port_out_of_range_is_refused(tmp_path: Path) -> None:
    # httpx takes http://127.0.0.1:99999 and the socket wraps the port (99999 -> 34463):
    # 'alerts list' asked another port; the agent logged "unreachable" for ever, or sent
    # its device secret to whatever listens on the wrapped port
    secret = tmp_path / "secret"
    secret.write_text("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\n")
    for port in ("99999", "0"):
        url = f"http://127.0.0.1:{port}"
        r = edgewise_here("alerts", "list", "--gateway", url, env={"EDGEWISE_TOKEN": "ew_x"})
        assert r.returncode == 2, r.stderr
        _one_error_line(r.stderr, "--gateway", "1-65535", port)
        r = edgewise_here("agent", "--gateway", url, "--device", "pump-1", "--secret-file",
                          str(secret), "--state-dir", str(tmp_path / "state"), "--limit", "1")
        assert r.returncode == 2, r.stderr
        _one_error_line(r.stderr, "--gateway", "1-65535", port)
