"""Read-only input (pandas 3's ``Series.to_numpy()`` is read-only) is scored by the same
compiled kernel as any other: numba compiled a second version of each kernel for such an
array (6 s on its first call, in every fresh install and test worker).
"""

from __future__ import annotations

import numpy as np

from edgewise.detect import ContextART, ContextLikelihood
from edgewise.detect import context_likelihood as cl


def _frozen(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


def test_context_likelihood_scores_read_only_input_with_the_writable_kernel() -> None:
    x = np.sin(np.arange(600) / 9.0) + np.random.default_rng(0).normal(0, 0.05, 600)
    for cls, kernel in ((ContextLikelihood, cl._run), (ContextART, cl._run_art)):
        want = cls().score_many(x[:, None])
        before = len(kernel.signatures)
        got = cls().score_many(_frozen(x)[:, None])
        assert np.array_equal(got, want)
        assert len(kernel.signatures) == before, kernel.signatures

