"""The detector contract's checks fail a detector that breaks them: check_clone_is_independent
compared two fresh clones, so a detector whose clone shares its learned state passed;
check_bounded_memory started tracemalloc and never read it, so memory kept outside the
serialised state could grow with the stream unseen."""

from __future__ import annotations

from typing import Any

import pytest

from edgewise.detect import EWZScore
from edgewise.detect.base import Detector
from edgewise.detect.checks import check_bounded_memory, check_clone_is_independent

SHARED: list[float] = []  # learned state every Leaky shares


class Leaky(Detector):
    """Its clone (``Leaky()``) learns into the same list as the original."""

    def __init__(self) -> None:
        self.seen_ = SHARED

    def score_one(self, x: Any) -> float:
        return min(len(self.seen_) / 1000.0, 1.0)

    def learn_one(self, x: Any) -> None:
        self.seen_.append(x.get("m0", 0.0))


class Hoarder(Detector):
    """Keeps every reading in a list its serialised state leaves out."""

    def __init__(self) -> None:
        self.n_ = 0
        self._history: list[dict[str, float]] = []

    def score_one(self, x: Any) -> float:
        return 0.5

    def learn_one(self, x: Any) -> None:
        self.n_ += 1
        self._history.append(dict(x))

    def __getstate__(self) -> dict[str, Any]:
        return {"n_": 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.n_, self._history = state["n_"], []


def test_a_clone_sharing_learned_state_fails_the_check() -> None:
    with pytest.raises(AssertionError, match="the clone shares its learned state"):
        check_clone_is_independent(Leaky())


def test_memory_kept_outside_the_state_fails_the_check() -> None:
    with pytest.raises(AssertionError, match="more bytes allocated"):
        check_bounded_memory(Hoarder())


def test_a_sound_detector_passes_both() -> None:
    check_clone_is_independent(EWZScore())
    check_bounded_memory(EWZScore())
