"""`bench groups --store-dir`, `bench forecast --series` and `bench fleet --pumps/--detectors`
refuse bad input in one `error:` line naming the option, before any work (session 43).

Before: `bench groups --fleet-scale 3 --store-dir scale` (a relative folder) failed on an
internal 'duckdb://scale/...part' URL and left an empty folder behind, and a file or
``/proc/nope`` as --store-dir ended in tracebacks; `bench forecast --series` with a typo
blamed --nab, an empty --series ran every series and a repeated one ran twice; `bench fleet
--pumps 99999999999999999999999` ended in an OverflowError traceback (huge counts ran for
minutes, then MemoryError); `bench fleet --detectors river-hst` without River printed its
header, then blamed `Setting 'detector' (EDGEWISE_DETECTOR, --detector)`.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest

from edgewise.errors import ConfigError
from tests.in_process import edgewise_here


def _refused(got, *needles: str) -> str:  # type: ignore[no-untyped-def]
    """The one `error:` line of a refusal (exit 2), holding every needle."""
    assert got.returncode == 2, (got.returncode, got.stderr)
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), got.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in got.stderr
    return lines[0]


# --- bench groups --fleet-scale --store-dir -------------------------------------------------

def test_groups_store_dir_relative_is_built_under_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative --store-dir is the folder of that name in the working directory (fleets
    of 0.05 days here, to keep the test short)."""
    import edgewise.bench.groups as groups

    monkeypatch.setattr(groups, "scale_store",
                        functools.partial(groups.scale_store, days=0.05))
    got = edgewise_here("bench", "groups", "--fleet-scale", "2", "--repeats", "1",
                        "--store-dir", "scale", "--json", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert "duckdb://" not in got.stderr
    assert (tmp_path / "scale" / "groups-scale-2-seed0.duckdb").is_file()


def test_groups_scale_store_takes_a_relative_path(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The library's scale_store builds at a relative path too (not read as a URL host)."""
    from edgewise.bench.groups import scale_store

    monkeypatch.chdir(tmp_path)
    truth = scale_store(Path("rel") / "f.duckdb", 3, days=0.01)
    assert sorted(truth.values()) == ["large", "small", "worn"]
    assert (tmp_path / "rel" / "f.duckdb").is_file()


@pytest.mark.parametrize("kind", ["file", "proc", "empty"])
def test_groups_store_dir_that_cannot_be_a_folder_is_refused_first(tmp_path: Path,
                                                                  kind: str) -> None:
    """A file, an unwritable place or an empty value: one line naming --store-dir and the
    value, and nothing made."""
    afile = tmp_path / "afile"
    afile.write_text("hi\n")
    value = {"file": str(afile), "proc": "/proc/nope", "empty": ""}[kind]
    got = edgewise_here("bench", "groups", "--fleet-scale", "3", "--repeats", "1",
                        "--store-dir", value, cwd=tmp_path)
    _refused(got, "--store-dir", repr(value))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


# --- bench forecast --series ----------------------------------------------------------------

@pytest.fixture()
def nab(tmp_path: Path) -> Path:
    """A NAB root holding two short files of realKnownCause."""
    root = tmp_path / "nab"
    folder = root / "data" / "realKnownCause"
    folder.mkdir(parents=True)
    for name in ("nyc_taxi.csv", "ambient_temperature_system_failure.csv"):
        (folder / name).write_text("timestamp,value\n2014-07-01 00:00:00,1\n"
                                   "2014-07-01 00:30:00,2\n")
    return root


def test_forecast_series_typo_names_series_and_what_is_there(nab: Path) -> None:
    """A mistyped --series under a good NAB root blames --series (not --nab), suggests the
    near file and lists the folder's files."""
    line = _refused(edgewise_here("bench", "forecast", "--nab", str(nab), "--series",
                                  "realKnownCause/nyc_taxy.csv"),
                    "--series", "'realKnownCause/nyc_taxy.csv'",
                    "did you mean 'realKnownCause/nyc_taxi.csv'?",
                    "ambient_temperature_system_failure.csv")
    assert "--nab" not in line


def test_forecast_series_unknown_folder_lists_the_folders(nab: Path) -> None:
    _refused(edgewise_here("bench", "forecast", "--nab", str(nab), "--series", "realFoo/x.csv"),
             "--series", "'realFoo/x.csv'", "realKnownCause")


def test_forecast_without_nab_data_still_blames_nab(tmp_path: Path) -> None:
    """Where --nab holds no NAB file at all, --nab is the one to fix."""
    _refused(edgewise_here("bench", "forecast", "--nab", str(tmp_path), "--series",
                           "realKnownCause/nyc_taxi.csv"), f"--nab {str(tmp_path)!r}")


@pytest.mark.parametrize("value", ["", " , "])
def test_forecast_empty_series_is_refused(nab: Path, value: str) -> None:
    """An empty --series is refused, not read as 'every series'."""
    _refused(edgewise_here("bench", "forecast", "--nab", str(nab), "--series", value),
             "--series must name NAB files", repr(value))


def test_forecast_repeated_series_is_refused(nab: Path) -> None:
    """A series named twice (even spelt differently) is refused, not forecast twice."""
    _refused(edgewise_here("bench", "forecast", "--nab", str(nab), "--series",
                           "realKnownCause/nyc_taxi.csv,realKnownCause//nyc_taxi.csv"),
             "--series", "'realKnownCause/nyc_taxi.csv' twice")


# --- bench fleet --pumps / --detectors ------------------------------------------------------

@pytest.mark.parametrize("pumps, hours, needles", [
    ("99999999999999999999999", "0.001", ("--pumps", "99999999999999999999999", "10000")),
    ("10001", "0.001", ("--pumps must be at most 10000", "10001")),
    ("1000", "2", ("--pumps x --hours", "1000 x 2 = 2000", "at most 1000 pump-hours")),
])
def test_fleet_pumps_beyond_memory_are_refused_before_the_header(
        pumps: str, hours: str, needles: tuple[str, ...]) -> None:
    got = edgewise_here("bench", "fleet", "--pumps", pumps, "--hours", hours)
    _refused(got, *needles)
    assert got.stdout == ""


def test_fleet_library_caps_pumps() -> None:
    from edgewise.bench.fleet import check_fleet_options

    with pytest.raises(ConfigError, match="pumps must be at most 10000"):
        check_fleet_options(["ewzscore"], pumps=10**23, hours=0.001, seed=3,
                            fault_rate_per_h=2.0)
    with pytest.raises(ConfigError, match="pump-hours"):
        check_fleet_options(["ewzscore"], pumps=5000, hours=1.0, seed=3, fault_rate_per_h=2.0)


def test_fleet_detector_without_its_package_names_detectors_before_the_header(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """river-hst without River: one line naming --detectors and pip install river, and no
    header (nothing simulated)."""
    monkeypatch.setitem(sys.modules, "river", None)
    got = edgewise_here("bench", "fleet", "--detectors", "ewzscore,river-hst", "--pumps", "1",
                        "--hours", "0.01")
    line = _refused(got, "--detectors names 'river-hst'", "pip install river", "ewzscore")
    assert "Setting 'detector'" not in line
    assert got.stdout == ""
