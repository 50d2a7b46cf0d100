"""CNNRegressor.fit leaves torch's process-wide random state as it found it: it seeded
the global generator with ``random_state`` and left it there, so every torch draw after
a fit (another model's weights, dropout, a user's own sampling) repeated the same
numbers."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgewise.models.cnn import CNNRegressor  # noqa: E402


def _tiny_fit(random_state: int) -> CNNRegressor:
    rng = np.random.default_rng(0)
    return CNNRegressor(channels=2, hidden=2, epochs=1, batch_size=8,
                        random_state=random_state).fit(
        rng.normal(size=(16, 4, 2)), rng.normal(size=(16, 1)), rng.normal(size=16))


def test_fit_restores_torch_random_state() -> None:
    """Check the draws after a fit are those the process would have made without it."""
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    _tiny_fit(0)
    assert torch.equal(torch.rand(5), expected)


def test_fit_is_still_reproducible() -> None:
    """Check two fits with one random_state give the same predictions."""
    rng = np.random.default_rng(1)
    seq, side = rng.normal(size=(6, 4, 2)), rng.normal(size=(6, 1))
    a, b = _tiny_fit(7), _tiny_fit(7)
    assert np.array_equal(a.predict(seq, side), b.predict(seq, side))
