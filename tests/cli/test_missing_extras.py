"""A command that needs an optional package missing from the install ends in one ``error:``
line naming the package and the ``pip install`` that brings it, exit 2, not a
ModuleNotFoundError traceback (federate demo and bench federated: flwr; train rul and bench
cmapss: lightgbm, bench cmapss only after 54 s of work; bench detect and detect --detector
river-hst: river). The package is blocked in the child process (``sys.modules[name] =
None``), so these run on a machine that has it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import click
import pytest
import typer

import edgewise.cli as cli

REPO = Path(__file__).resolve().parents[2]
#: Runs ``edgewise ARGS...`` with the comma-separated packages of argv[1] unimportable.
BLOCKED = ("import sys\n"
           "for name in sys.argv[1].split(','):\n"
           "    sys.modules[name] = None\n"
           "sys.argv = ['edgewise', *sys.argv[2:]]\n"
           "from edgewise.cli import main\n"
           "main()\n")


def _edgewise(blocked: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", BLOCKED, blocked, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _one_error(got: subprocess.CompletedProcess[str]) -> str:
    assert got.returncode == 2, got.stderr[-2000:]
    assert "Traceback" not in got.stderr, got.stderr[-2000:]
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1, got.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize(("blocked", "args", "install"), [
    ("flwr", ["federate", "demo"], "pip install 'edgewise[federated]'"),
    ("flwr", ["bench", "federated"], "pip install 'edgewise[federated]'"),
    ("lightgbm", ["train", "rul", "--data", "runs.csv", "--out", "m.rul"],
     "pip install 'edgewise[rul]'"),
    ("lightgbm", ["bench", "cmapss", "--data", "."], "pip install 'edgewise[rul]'"),
    ("river", ["bench", "detect", "--points", "2000", "--one-points", "200", "--repeats", "1"],
     "pip install river"),
])
def test_a_command_needing_a_missing_package_says_which_before_any_work(
        tmp_path: Path, blocked: str, args: list[str], install: str) -> None:
    """Check each command that always needs an optional package refuses, before any work,
    in one line naming the command, the package and the install command."""
    (tmp_path / "runs.csv").write_text("unit,cycle,s1\n1,1,0.5\n")
    t0 = time.perf_counter()
    line = _one_error(_edgewise(blocked, *args, cwd=tmp_path))
    assert line == (f"error: edgewise {' '.join(args[:2])} needs the '{blocked}' package, "
                    f"which is not installed: {install}")
    assert time.perf_counter() - t0 < 60  # bench cmapss failed after 54 s of work
    assert not (tmp_path / "m.rul").exists()


def test_bench_cmapss_refuses_before_reading_real_data(shared_data: Path, tmp_path: Path) -> None:
    """Check bench cmapss on the real C-MAPSS folder says LightGBM is missing at once."""
    t0 = time.perf_counter()
    line = _one_error(_edgewise("lightgbm", "bench", "cmapss", "--data",
                                str(shared_data / "cmapss"), "--seeds", "1", cwd=tmp_path))
    assert "'lightgbm' package" in line and "pip install 'edgewise[rul]'" in line
    assert time.perf_counter() - t0 < 30


def test_detect_with_river_hst_names_river(tmp_path: Path) -> None:
    """Check ``detect --detector river-hst`` without River (caught where it is imported)
    ends in one line naming river and ``pip install river``, writing nothing."""
    rows = "".join(f"2024-01-01T00:{i:02d}:00Z,{i % 7}\n" for i in range(50))
    (tmp_path / "m.csv").write_text("timestamp,value\n" + rows)
    line = _one_error(_edgewise("river", "detect", "m.csv", "--detector", "river-hst",
                                "--out", "scored.csv", cwd=tmp_path))
    assert line.startswith("error: edgewise detect needs the 'river' package, which cannot "
                           "be imported (")
    assert line.endswith("): pip install river")
    assert not (tmp_path / "scored.csv").exists()


def test_help_needs_no_optional_package(tmp_path: Path) -> None:
    """Check ``--help`` of such a command still works without its package."""
    got = _edgewise("lightgbm", "bench", "cmapss", "--help", cwd=tmp_path)
    assert got.returncode == 0 and "--data" in got.stdout, got.stderr[-2000:]


def test_other_import_errors_are_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a missing package that is no optional one (a broken install, a bug) keeps its
    traceback: only the known extras are turned into one line."""
    def broken(**_: object) -> None:
        raise ModuleNotFoundError("No module named 'numpy'", name="numpy")

    monkeypatch.setattr(cli, "app", broken)
    monkeypatch.setattr(sys, "argv", ["edgewise", "status"])
    with pytest.raises(ModuleNotFoundError, match="numpy"):
        cli.main()


def test_an_adapters_own_import_error_is_traced_to_the_package() -> None:
    """Check an ImportError raised ``from None`` over the real one (River's adapter) is
    traced to the package through its context."""
    try:
        try:
            import river_not_here  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            raise ImportError("River detectors need the 'river' package") from None
    except ImportError as exc:
        assert cli.missing_package(exc) is None  # not an optional package's name
    try:
        try:
            raise ModuleNotFoundError("No module named 'river'", name="river")
        except ImportError:
            raise ImportError("River detectors need the 'river' package") from None
    except ImportError as exc:
        found = cli.missing_package(exc)
        assert found is not None and found.name == "river"


def test_the_table_follows_pyproject_extras() -> None:
    """Check every package of an extra (but all and dev) maps to that extra's install, and
    the dev-only river and statsmodels are installed by name."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    want = {}
    for extra, reqs in extras.items():
        if extra in ("all", "dev"):
            continue
        for req in reqs:
            name = req.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip()
            want[name.replace("-", "_")] = f"pip install 'edgewise[{extra}]'"
    dev = {r.split(">")[0].split("=")[0].strip() for r in extras["dev"]}
    assert {"river", "statsmodels"} <= dev
    want |= {"river": "pip install river", "statsmodels": "pip install statsmodels"}
    assert cli.OPTIONAL == want


def test_every_checked_command_exists() -> None:
    """Check each command of NEEDS is a real command (a renamed one would go unchecked)."""
    cli.load_commands()
    root = typer.main.get_command(cli.app)
    for words, package in cli.NEEDS.items():
        cmd: click.Command = root
        for word in words:
            assert isinstance(cmd, click.Group) and word in cmd.commands, words
            cmd = cmd.commands[word]
        assert package in cli.OPTIONAL
