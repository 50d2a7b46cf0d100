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
