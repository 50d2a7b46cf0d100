"""CNNRegressor leaves torch's process-wide thread count as it found it."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.models.cnn import CNNRegressor

torch = pytest.importorskip("torch")


def test_fit_and_predict_restore_the_process_thread_count() -> None:
    """Check fit and predict run on ``n_threads`` and then give torch back the thread count
    it had (they set it for the whole process and left it there), also when fit fails."""
    rng = np.random.default_rng(0)
    seq = rng.normal(size=(64, 5, 2)).astype(np.float32)
    before = torch.get_num_threads()
    other = 2 if before != 2 else 3
    torch.set_num_threads(other)
    try:
        net = CNNRegressor(epochs=1, batch_size=32, n_threads=1).fit(
            seq, np.zeros((64, 1)), rng.normal(size=64))
        assert torch.get_num_threads() == other
        net.predict(seq, np.zeros((64, 1)))
        assert torch.get_num_threads() == other
        with pytest.raises((ValueError, IndexError, RuntimeError)):  # 3 targets, 64 rows
            CNNRegressor(epochs=1, n_threads=1).fit(seq, np.zeros((64, 1)), np.zeros(3))
        assert torch.get_num_threads() == other
    finally:
        torch.set_num_threads(before)


def _data(n: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    seq = rng.normal(size=(n, 10, 3)).astype(np.float32)
    return seq, rng.normal(size=(n, 2)), seq[:, -3:, 0].mean(axis=1) * 10 + 50


def test_predict_refuses_windows_and_side_columns_unlike_training() -> None:
    """Check predict names the shape it needs for windows of another length, another
    number of sensors, or another number of side columns (before: other window lengths and
    side widths gave numbers, side broadcast against the training mean; other sensors a bare
    torch RuntimeError)."""
    from edgewise.errors import InvalidParameterError

    seq, side, y = _data()
    net = CNNRegressor(epochs=1, random_state=0).fit(seq, side, y)
    assert net.predict(seq[:2], side[:2]).shape == (2,)
    for bad_seq, bad_side, words in [
            (seq[:2, :4], side[:2], r"windows of 10 rows of 3 sensors.*Got shape \(2, 4, 3\)"),
            (seq[:2, :, :2], side[:2], r"shape \(n, 10, 3\)\. Got shape \(2, 10, 2\)"),
            (seq[:2], side[:2, :1], r"needs 2 side column\(s\), as in training\. Got.*\(2, 1\)"),
            (seq[:2], side[:3], r"side as a 2-D array with a row per window \(2 rows\)"),
            (seq[:2, :, 0], side[:2], r"seq as a 3-D array")]:
        with pytest.raises(InvalidParameterError, match=words):
            net.predict(bad_seq, bad_side)


def test_fit_refuses_a_nan_target_naming_its_row() -> None:
    """Check a NaN target (or window value) is refused naming its row, not trained into a
    network whose every weight and prediction is NaN; an empty fit is named too."""
    from edgewise.errors import InvalidParameterError

    seq, side, y = _data()
    y[5] = np.nan
    with pytest.raises(InvalidParameterError, match=r"y row 5 is not \(1 of 64 rows"):
        CNNRegressor(epochs=1).fit(seq, side, y)
    seq[7, 2, 1] = np.inf
    with pytest.raises(InvalidParameterError, match=r"seq row 7 is not"):
        CNNRegressor(epochs=1).fit(seq, side, np.zeros(64))
    with pytest.raises(InvalidParameterError, match=r"at least one \(0 windows\)"):
        CNNRegressor(epochs=1).fit(seq[:0], side[:0], y[:0])
