"""Session 44 hunt of the label loop: model files that unpickle into odd exceptions, and
the feedback model given non-finite window features."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import InvalidParameterError
from edgewise.label.feedback import WindowFeedbackModel
from edgewise.label.fleet_transfer import load_transfer_model
from edgewise.label.windows import WindowSet, windows_from_series
from edgewise.label.workflow import load_model

load_commands()

#: Corrupt model files whose unpickling raised what the loaders did not catch (or, for
#: UnicodeDecodeError, caught by the CLI as a bare "codec can't decode" naming no file).
CORRUPT = {
    # REDUCE with an argument that is not a tuple: TypeError
    "type": b"\x80\x05cbuiltins\nint\nK\x01R.",
    # BYTEARRAY8 of a size past any memory: OverflowError
    "overflow": b"\x80\x05\x96\xff\xff\xff\xff\xff\xff\xff\x7f",
    # SHORT_BINUNICODE of bytes that are not UTF-8: UnicodeDecodeError
    "unicode": b"\x80\x05\x8c\x01\xff.",
}


@pytest.mark.parametrize("what", sorted(CORRUPT))
@pytest.mark.parametrize("loader", [load_transfer_model, load_model])
def test_a_corrupt_model_file_is_refused_naming_it(tmp_path: Path, what: str,
                                                   loader) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / f"{what}.pkl"
    path.write_bytes(CORRUPT[what])
    with pytest.raises(InvalidParameterError, match="is not a readable Edgewise") as exc:
        loader(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("what", sorted(CORRUPT))
def test_predict_transfer_with_a_corrupt_model_is_one_error_line(tmp_path: Path,
                                                                 what: str) -> None:
    path = tmp_path / "m.pkl"
    path.write_bytes(CORRUPT[what])
    (tmp_path / "h.csv").write_text(
        "device_id,timestamp,v\n" + "".join(f"t,{1_700_000_000 + i},{i % 7}\n"
                                            for i in range(40)))
    r = CliRunner(mix_stderr=False).invoke(app, [
        "predict", "transfer", "--device", "t", "--data-dir", str(tmp_path),
        "--csv", str(tmp_path / "h.csv"), "--model", str(path)])
    assert r.exit_code == 2, (r.exit_code, r.exception)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert str(path) in r.stderr and "not a readable Edgewise transfer model" in r.stderr


def test_a_valid_pickle_of_the_wrong_thing_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "int.pkl"
    path.write_bytes(pickle.dumps(3))
    with pytest.raises(InvalidParameterError, match="is not an Edgewise transfer model"):
        load_transfer_model(path)


def _windows() -> WindowSet:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, 3000)
    x[1000:1003] += 6
    x[2000:2003] += 12
    return windows_from_series(x, np.arange(3000) * 10**9, "d1", length=50)


def _labels(n: int) -> np.ndarray:
    return np.where(np.arange(n) % 5 == 0, np.arange(n) % 2, -1)


def test_one_nan_feature_is_refused_not_a_silently_dead_memory() -> None:
    """One NaN feature in one of 60 windows made that feature's median NaN: the pattern
    memory matched none of the 12 windows it matches without it, the classifier was
    dropped, and the device's alarms fell from 7 to 1, with no word of why."""
    ws = _windows()
    y = _labels(len(ws))
    clean = WindowFeedbackModel().fit(ws, y)
    assert int(clean.predict(ws).sum()) == 7 and int(clean._memory(ws)[0].sum()) == 12
    F = ws.features.copy()
    F[5, 0] = np.nan
    bad = WindowSet(ws.device, ws.start_ns, ws.end_ns, ws.scores, F, ws.feature_names)
    with pytest.raises(InvalidParameterError,
                       match=r"Got nan as feature 'c0_level' of window 5 \(device 'd1'\)"):
        WindowFeedbackModel().fit(bad, y)
    with pytest.raises(InvalidParameterError, match="decision_function needs finite"):
        clean.predict(bad)


def test_a_nan_score_is_refused_not_a_window_that_never_alarms() -> None:
    ws = _windows()
    S = ws.scores.copy()
    S[7, 0] = np.nan
    bad = WindowSet(ws.device, ws.start_ns, ws.end_ns, S, ws.features, ws.feature_names)
    with pytest.raises(InvalidParameterError, match="as score 0 of window 7"):
        WindowFeedbackModel().fit(bad, _labels(len(ws)))
