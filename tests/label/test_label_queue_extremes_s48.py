"""Label queue hunt (s48): readings at the float limit (+-1e308, a "no value" sentinel).

* ``GET /v1/label-queue`` of a device with a metric reaching +-1e308 failed (a 500 under
  this suite's warnings-as-errors; in a gateway numpy's "overflow encountered in reduce"
  RuntimeWarning): windows were scored and described by sums, squares and differences of
  raw readings. With the warning ignored every window scored 0.0 (a ranking of nothing),
  or the queue was refused for non-finite window features. Readings near 1e-300 scored
  0.0 too (under the detector's absolute floor). Each metric is now put in units of its
  magnitude (a power of two: exact) first, so the queue is the same at any scale.
* A chart slot of the queue's context holding two readings of 1e308 averaged to inf,
  which no JSON holds: the request failed.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from edgewise.label.store import LabelStore
from edgewise.label.workflow import predict_with_labels, suggest, train_with_labels
from edgewise.server.routes.labels import _context
from tests.server.conftest import Env

T0 = 1_700_000_000 * 10**9
#: exact scales: a power of two scales a float without rounding (short of under/overflow)
SCALES = (1.0, 2.0**1019, 2.0**-1000)


def _history() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """400 readings of two metrics: ``a`` noise with a spike at 250..252, and +-inf and
    NaN readings; ``b`` a level of 20 with a NaN and an inf."""
    rng = np.random.default_rng(1)
    n = 400
    a = rng.normal(0, 1, n)
    a[250:253] += 9
    X = np.column_stack([a, 20 + rng.normal(0, 0.1, n)])
    X[10, 0], X[20, 0], X[30:35, 0] = np.inf, -np.inf, np.nan
    X[100, 1], X[101, 1] = np.nan, np.inf
    return T0 + np.arange(n) * 10**9, X, ["a", "b"]


def _scaled(X: np.ndarray, scale: float) -> np.ndarray:
    out = X.copy()
    out[:, 0] *= scale  # only ``a``: a metric's scale is its own
    return out


def test_the_queue_is_the_same_for_readings_at_any_scale(tmp_path: Path) -> None:
    """Check the queue of the same readings scaled by 2**1019 (to ~1e308) and by 2**-1000
    (to ~1e-301) is that of the readings themselves, spike first, with no warning. At
    2**1019 it warned of an overflow (then was refused: non-finite features); at 2**-1000
    every window scored 0.0."""
    ts, X, metrics = _history()
    queues = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i, s in enumerate(SCALES):
            queues.append(suggest((ts, _scaled(X, s), metrics), "pump-1",
                                  LabelStore(tmp_path / str(i)), k=6, window=20,
                                  record=False))
    assert queues[0][0]["start_ns"] == T0 + 240 * 10**9 and queues[0][0]["score"] > 0.9
    assert queues[1] == queues[0]
    assert queues[2] == queues[0]


def test_a_label_model_scores_readings_at_the_float_limit(tmp_path: Path) -> None:
    """Check training on readings reaching ~1e308 and predicting with the model give what
    they give for the readings at their own scale, with no warning."""
    ts, X, metrics = _history()
    got = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i, s in enumerate(SCALES[:2]):
            hist = (ts, _scaled(X, s), metrics)
            out = train_with_labels(hist, "pump-1", LabelStore(tmp_path / str(i)),
                                    tmp_path / str(i), window=20)
            got.append(predict_with_labels(hist, out["path"]))
    assert got[1] == got[0]
    assert [w["start_ns"] for w in got[0] if w["alarm"]] == [T0 + 240 * 10**9]


def test_the_label_queue_of_a_metric_at_plus_and_minus_1e308(henv: Env) -> None:
    """Check ``GET /v1/label-queue`` of a device whose ``edge`` reads +-1e308 by turns
    answers 200 (a 500: numpy's overflow warning), the windows as for a device whose
    ``edge`` reads those values scaled by 2**-1000, its chart values the readings sent."""
    now = int(time.time())
    queues = []
    for name, scale in (("sentinel-1", 1.0), ("sentinel-small", 2.0**-1000)):
        device, secret = henv.security.add_device(name)
        batch = [{"ts": now - 300 + i, "seq": i + 1, "metrics": {
            "temp_c": 40 + i % 7, "edge": (1e308 if i % 2 else -1e308) * scale}}
            for i in range(300)]
        assert henv.send(batch, device, secret).json()["accepted"] == 600
        r = henv.client.get("/v1/label-queue", params={"device": name, "k": 3},
                            headers=henv.auth("viewer"))
        assert r.status_code == 200, r.text
        queues.append(r.json()["items"])
    big, small = queues
    assert len(big) == 3
    keys = ("start_ns", "end_ns", "score", "margin", "alarm")
    assert [[it[k] for k in keys] for it in big] == [[it[k] for k in keys] for it in small]
    assert {v for it in big for v in it["context"]["values"]["edge"]} == {1e308, -1e308}


def test_a_chart_slot_of_two_readings_of_1e308_shows_1e308() -> None:
    """Check a chart of the queue's context whose slot holds several readings near the
    float limit shows their mean (it showed inf, which no JSON holds: the request failed),
    and ordinary readings' means as before."""
    at = np.arange(8)
    rows = {"edge": (at, np.array([1e308, 1e308, 1e308, -1e308, -1e308, -1e308, 2.0, 4.0])),
            "temp": (at, np.array([1.5, 2.5, 3.0, 4.0, 0.1, 0.2, 5.0, 5.0]))}
    got = _context(rows, np.arange(600), ["edge", "temp"], 0, 600)["values"]
    assert got["edge"][:5] == [1e308, 0.0, -1e308, 3.0, None]
    assert got["temp"][:4] == [2.0, 3.5, 0.15, 5.0]
