"""A single glitch in the warm-up (a reading of 100 in a 20 +- 0.5 stream) fixes the range
and the symbol grid for good and blinds the detector; ``glitch_gap`` leaves it out."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from edgewise.detect.context_likelihood import ContextLikelihood
from edgewise.edge.export_detectors import export_context_likelihood_c
from edgewise.errors import ExportError, InvalidParameterError


def _stream(seed: int, glitch: float | None, shift: bool) -> np.ndarray:
    """20 +- 0.5, a glitch at reading 100 (inside every member's warm-up), and a +12 sd
    fault at reading 2000: one spike, or a level shift from there on."""
    x = 20 + 0.5 * np.random.default_rng(seed).standard_normal(3000)
    if glitch is not None:
        x[100] = glitch
    if shift:
        x[2000:] += 6.0
    else:
        x[2000] = 26.0
    return x


def _found(glitch: float | None, **kw: float) -> int:
    return sum(
        ContextLikelihood(**kw).score_many(_stream(seed, glitch, shift))[2000:2100].max() >= 0.9
        for seed in range(4) for shift in (False, True))


@pytest.mark.parametrize("glitch", [100.0, -999.0])
def test_a_warmup_glitch_no_longer_blinds_the_detector(glitch: float) -> None:
    """Check the faults missed after a glitch (0 of 8 after a 100; 4 of 8 after -999) are
    found with glitch_gap=5 as often as in the stream without the glitch (8 of 8; 7
    before escalations, when the eighth spike fell inside the repeat suppression of an
    earlier false alarm)."""
    clean = _found(None)
    assert clean == 8
    assert _found(glitch) <= 4
    assert _found(glitch, glitch_gap=5.0) == clean


def test_the_default_keeps_every_warmup_value() -> None:
    """Check the default (glitch_gap=0) and a gap the glitch does not clear score as the
    old rule did: the glitch stays in the range (NAB's early lone spikes recur)."""
    x = _stream(0, 100.0, shift=True)
    old = ContextLikelihood().score_many(x)
    assert old[2000:2100].max() < 0.9
    np.testing.assert_array_equal(ContextLikelihood(glitch_gap=1000.0).score_many(x), old)


def test_the_glitch_is_left_out_of_range_and_mean() -> None:
    """Check the state after the warm-up: the range is the rest's, and the mean too."""
    x = _stream(1, 100.0, shift=False)[:400]
    det = ContextLikelihood(glitch_gap=5.0, warmup_spread=0, warmup=300)
    det.score_many(x[:300])
    rest = np.delete(x[:300], 100)
    assert det.state_[0, 1] == rest.min() and det.state_[0, 2] == rest.max()
    assert det.state_[0, 3] == pytest.approx(rest.mean(), rel=1e-12)


def test_replay_equals_one_at_a_time_and_survives_a_pickle() -> None:
    """Check score_many = the score_one/learn_one loop with the rule on, and a detector
    pickled inside its warm-up resumes with the same scores."""
    x = _stream(2, -999.0, shift=True)
    loop = ContextLikelihood(glitch_gap=5.0)
    one = np.array([(loop.score_one({"v": v}), loop.learn_one({"v": v}))[0] for v in x])
    np.testing.assert_array_equal(ContextLikelihood(glitch_gap=5.0).score_many(x), one)
    det = ContextLikelihood(glitch_gap=5.0)
    det.score_many(x[:150])
    again = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(again.score_many(x[150:]), det.score_many(x[150:]))


def test_a_pickle_from_before_the_rule_loads_with_it_off() -> None:
    """Check a state saved before the rule (no warm-up seconds, 22 parameters) resumes,
    inside its warm-up, as the old rule would: the glitch stays in the range."""
    x = _stream(0, 100.0, shift=True)
    old = ContextLikelihood()
    old.score_many(x[:150])
    old.state_ = np.delete(old.state_, [26, 27], axis=1)
    old._p = old._p[:22]
    del old.__dict__["glitch_gap"]
    restored = pickle.loads(pickle.dumps(old))
    assert restored.glitch_gap == 0.0
    np.testing.assert_array_equal(restored.score_many(x[150:]),
                                  ContextLikelihood().score_many(x)[150:])


def test_bad_gap_and_c_export_are_refused() -> None:
    """Check a negative gap is refused by name, and the C export (which has no such rule)
    refuses a detector with it on but exports the default."""
    with pytest.raises(InvalidParameterError, match="glitch_gap"):
        ContextLikelihood(glitch_gap=-1.0)
    with pytest.raises(ExportError, match=r"glitch_gap=5\.0"):
        export_context_likelihood_c(ContextLikelihood(glitch_gap=5.0))
    assert export_context_likelihood_c(ContextLikelihood()).kind == "detector"
