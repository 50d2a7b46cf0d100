"""What the docs say of a newer ``normal`` inside an older ``anomaly`` as windows regrow.

README and ``window_labels`` said the ``normal`` stays the answer of the re-cut window
holding most of it "as the history grows"; with the default window (history / 100) the
older ``anomaly`` takes that window again once windows are over twice the labelled span.
They now say when it holds; these tests check that they say so and that it is so.
"""

from __future__ import annotations

import re
from types import SimpleNamespace as L

import numpy as np
import pytest

from edgewise.label.windows import window_labels, windows_from_series
from edgewise.label.workflow import window_length
from tests.conftest import REPO

MIN = 60 * 10**9
#: an alert over readings 2000-4999 called a true alarm; later a person called readings
#: 3000-3099 (100 readings) normal
ALERT = L(id=1, device_id="p", start_ns=2000 * MIN, end_ns=5000 * MIN, label="anomaly")
NORMAL = L(id=2, device_id="p", start_ns=3000 * MIN, end_ns=3100 * MIN, label="normal")


def _answer(n: int, window: int | None = None) -> int:
    """The answer (1 anomaly, 0 normal) of the window of ``n`` readings' default cut that
    holds most of the ``normal`` label."""
    ts = np.arange(n, dtype=np.int64) * MIN
    x = np.random.default_rng(0).normal(20, 0.3, n)
    ws = windows_from_series(x, ts, "p", length=window_length(n, window))
    y, _ = window_labels(ws, [ALERT, NORMAL])
    overlap = (np.minimum(ws.end_ns, NORMAL.end_ns)
               - np.maximum(ws.start_ns, NORMAL.start_ns))
    return int(y[int(np.argmax(overlap))])


@pytest.mark.parametrize(("n", "window", "answer"), [
    (10_000, None, 0),    # windows of 100: no longer than the labelled span
    (21_000, None, 1),    # windows of 210: over twice its span, the alert's again
    (21_000, 100, 0),     # a --window no longer than the span keeps it
])
def test_the_normal_holds_while_windows_are_no_longer_than_it(
        n: int, window: int | None, answer: int) -> None:
    """Check the bounds the docs give: kept with windows no longer than the labelled span,
    lost with windows over twice as long (the default past 20,000 readings), kept again
    with a --window no longer than the span."""
    assert _answer(n, window) == answer


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_readme_and_docstring_say_when_the_newer_normal_holds() -> None:
    """Check neither README nor ``window_labels`` claims the ``normal`` stays the re-cut
    window's answer however the history grows, and both give the bounds."""
    readme = _flat((REPO / "README.md").read_text())
    doc = _flat(window_labels.__doc__ or "")
    for text in (readme, doc):
        assert "holding most of it as the history grows" not in text
        assert "holds most of it when the history grows" not in text
        assert "covers at least half of that window" in text
        assert "no longer than the labelled span" in text
        assert "10,000" in text and "20,000" in text
