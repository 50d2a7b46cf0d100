"""The C export of ContextLikelihood clamps its repeat suppression as Python does.

Python clamps the suppression to 2**53 readings before casting it to an integer (a
``suppress_rate`` of 1e20 cast past int64 and turned the suppression off); the C cast the
same product to ``int64_t`` unclamped, which is undefined (the sanitizer aborts on it), and
a ``suppress`` past int64 was written as a literal no C compiler takes.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgewise.detect.context_likelihood import ContextLikelihood
from edgewise.edge import export
from tests.edge.test_export_nonfinite import SCORE_TOL, _host

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def _spiky(n: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = np.sin(np.arange(n) / 20) + 0.05 * rng.standard_normal(n)
    x[1200::150] += 8.0  # a spike every 150 readings: the suppression decides the alarms
    return x


@needs_gcc
@pytest.mark.parametrize("params", [{"suppress_rate": 1e20}, {"suppress": 10**30}],
                         ids=["suppress_rate", "suppress"])
def test_c_suppression_past_int64_is_clamped_as_in_python(params, tmp_path) -> None:
    x = _spiky()
    py = ContextLikelihood(**params).score_many(x)
    c = _host(export(ContextLikelihood(**params), "c", name="clik_supp"), tmp_path, x)
    assert (py >= 0.5).sum() <= 2  # the first alarm, then suppressed for good
    np.testing.assert_allclose(c, py, atol=SCORE_TOL)
