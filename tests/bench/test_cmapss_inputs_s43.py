"""Hunt s43 on `edgewise bench cmapss`'s input files: every file read and checked before
the first fit, and no NaN in its JSON.

Before: a ``RUL_`` line of ``nan``, ``n/a`` or ``-40`` gave NaN figures (JSON with the
``NaN`` token, which is no JSON) or a wrong score, exit 0; a truncated ``.gz`` test file
gave ``error: aborted`` (an EOFError Click took for Ctrl-D) and one that is no gzip a
``gzip.BadGzipFile`` traceback, each only after the whole fit (25-50 s a seed), since the
test files were read after it. The synthetic folders here are C-MAPSS-shaped (26 numbers a
line); the fit is replaced by a stand-in that must not run, so each check takes no fit.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import edgewise.bench.cmapss as cmapss
from edgewise.cli import main
from edgewise.errors import InvalidParameterError, QualityError
from edgewise.models.rul import RULModel

TRUTH = ["112", "98", "69", "82", "91"]


class Fitted(Exception):
    """Raised by the stand-in fit: the files were not all checked before fitting."""


def _no_fit(*a: object, **k: object) -> None:
    raise Fitted


def _rows(units: int, cycles: int, seed: int) -> bytes:
    """``units`` C-MAPSS-shaped histories of ``cycles`` rows: unit, cycle, 3 settings and 21
    sensors, space-separated as NASA's files are."""
    rng = np.random.default_rng(seed)
    lines = []
    for unit in range(1, units + 1):
        for cycle in range(1, cycles + 1):
            cells = [unit, cycle, *np.round(rng.normal(size=24), 4)]
            lines.append(" ".join(str(c) for c in cells))
    return ("\n".join(lines) + "\n").encode()


def _folder(tmp_path: Path, truth: list[str] = TRUTH, test_gz: bytes | None = None) -> Path:
    """A FD001 folder: 3 training units, 5 test units (plain, or ``test_gz`` written as
    ``test_FD001.txt.gz``) and the true RULs ``truth``, one a line."""
    d = tmp_path / "cmapss"
    d.mkdir(parents=True)
    (d / "train_FD001.txt").write_bytes(_rows(3, 40, 0))
    if test_gz is None:
        (d / "test_FD001.txt").write_bytes(_rows(5, 20, 1))
    else:
        (d / "test_FD001.txt.gz").write_bytes(test_gz)
    (d / "RUL_FD001.txt").write_text("\n".join(truth) + "\n")
    return d


def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
         *args: str) -> tuple[int, str, str]:
    """``edgewise ARGS`` in this process through the console script's ``main``: its exit
    code, stdout and stderr."""
    monkeypatch.setattr(sys, "argv", ["edgewise", *args])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("bad", ["nan", "n/a", "-40", "inf", "12 7"])
def test_a_bad_true_rul_is_one_error_line_before_the_fit(
        bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Check a RUL_ line that is no finite number >= 0 is refused in one `error:` line
    naming the file, the line and the value, exit 2, with no fit. Failed before: the fit
    ran (here the stand-in raised), then NaN figures or a score against -40, exit 0."""
    d = _folder(tmp_path, truth=[*TRUTH[:2], bad, *TRUTH[3:]])
    monkeypatch.setattr(RULModel, "fit", _no_fit)
    code, out, err = _run(monkeypatch, capsys, "bench", "cmapss", "--data", str(d),
                          "--seeds", "1", "--json")
    path = str(d / "RUL_FD001.txt")
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert err.strip() == (f"error: --data: C-MAPSS file {path!r} line 3 must be one true "
                           f"RUL, a finite number >= 0 (cycles). Got {bad!r} instead.")


def _truncated(body: bytes) -> bytes:
    packed = gzip.compress(body)
    return packed[: len(packed) // 2]


@pytest.mark.parametrize("damage", [_truncated, lambda body: b"not gzip at all\n"],
                         ids=["truncated", "not-gzip"])
def test_a_damaged_gzip_test_file_is_said_as_train_rul_says_it_before_the_fit(
        damage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Check a truncated or non-gzip test_FD001.txt.gz is one `error: --data:` line naming
    the file, word for word what `train rul --data` says of the same file, exit 2, with no
    fit. Failed before: the fit ran first, then `error: aborted` (exit 1) or a
    gzip.BadGzipFile traceback."""
    d = _folder(tmp_path, test_gz=damage(_rows(5, 20, 1)))
    monkeypatch.setattr(RULModel, "fit", _no_fit)
    code, _, err = _run(monkeypatch, capsys, "bench", "cmapss", "--data", str(d),
                        "--seeds", "1")
    assert code == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and str(d / "test_FD001.txt.gz") in err
    code_rul, _, err_rul = _run(monkeypatch, capsys, "train", "rul", "--data",
                                str(d / "test_FD001.txt.gz"), "--unit-column", "unit",
                                "--time-column", "cycle", "--out", str(tmp_path / "m.rul"))
    assert code_rul == 2 and err.strip() == err_rul.strip()
    assert "gzip" in err


def test_run_seed_and_run_check_every_file_before_fitting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check the library's entry points (`run_seed`, `run`) read the test and RUL files
    before the fit too: a damaged gzip file is a QualityError naming it, a bad true RUL an
    InvalidParameterError naming its line, and the stand-in fit is never reached."""
    monkeypatch.setattr(RULModel, "fit", _no_fit)
    gz = _folder(tmp_path / "a", test_gz=_truncated(_rows(5, 20, 1)))
    with pytest.raises(QualityError, match=r"test_FD001\.txt\.gz' is a damaged gzip file"):
        cmapss.run_seed(gz, "FD001", seed=0)
    neg = _folder(tmp_path / "b", truth=[*TRUTH[:4], "-1"])
    with pytest.raises(InvalidParameterError, match=r"RUL_FD001\.txt' line 5 .* Got '-1'"):
        cmapss.run(neg, "FD001", seeds=1)


def test_a_test_cell_that_is_no_number_names_its_line_and_column(tmp_path: Path) -> None:
    """Check a test-file cell that is no finite number (a word, nan) is refused naming the
    file, the line, the column and the value, and a well-formed folder loads whole."""
    d = _folder(tmp_path)
    train, test, truth = cmapss.load(d, "FD001")
    assert train.shape == (120, 26) and test.shape == (100, 26)
    assert truth.tolist() == [float(v) for v in TRUTH]
    lines = (d / "test_FD001.txt").read_text().splitlines()
    for cell in ("oops", "nan"):
        cells = lines[6].split()
        cells[7] = cell
        (d / "test_FD001.txt").write_text("\n".join([*lines[:6], " ".join(cells),
                                                     *lines[7:]]) + "\n")
        with pytest.raises(InvalidParameterError) as exc:
            cmapss.load_test(d, "FD001")
        assert str(exc.value) == (
            f"C-MAPSS file {str(d / 'test_FD001.txt')!r} line 7, column 8 (sensor_3) must "
            f"be a finite number. Got {cell!r} instead.")


def test_the_json_has_null_not_nan_for_a_figure_that_is_no_number(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Check `bench cmapss --json` writes strict JSON (``null``) and the text report
    ``n/a`` where a figure is NaN or infinite. Failed before: the ``NaN`` token."""
    nan = float("nan")
    result = cmapss.CmapssResult("FD001", rmse=[nan], score=[float("inf")], coverage=[0.8],
                                 rmse_uncapped=[nan], width=[60.0], fit_s=[1.0])
    monkeypatch.setattr(cmapss, "run", lambda *a, **k: result)
    d = _folder(tmp_path)

    def no_constant(name: str) -> None:
        raise AssertionError(f"{name} is no JSON")

    code, out, _ = _run(monkeypatch, capsys, "bench", "cmapss", "--data", str(d), "--json")
    doc = json.loads(out, parse_constant=no_constant)
    assert code == 0 and doc["rmse"]["mean"] is None and doc["score"]["mean"] is None
    assert doc["rmse_per_seed"] == [None] and doc["coverage"] == 0.8
    code, out, _ = _run(monkeypatch, capsys, "bench", "cmapss", "--data", str(d))
    assert code == 0 and "RMSE          n/a ± 0.00" in out
