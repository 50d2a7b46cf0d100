"""A glitch after the warm-up no longer blinds a stream's level detector.

One 65535 error code in a 20 +- 0.5 stream was learned as it was: the seen range and the
running deviation took it, and every later spike below 65535 (a 20 sd pressure surge)
went unalerted (the first surge after it: 4 of 4 seeds missed, through the pipeline). A
reading the cleaner flags as a spike is now learned held to one width beyond the seen
range (``learnable``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgewise.config import Settings
from edgewise.detect import ContextLikelihood, StateAware
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store

T0 = 1_700_000_000


def _alerted_at(tmp_path, values: np.ndarray, at: list[int], every_s: float) -> list[bool]:
    store = open_store(f"duckdb:///{tmp_path / 'p.duckdb'}")
    pipe = Pipeline(store, Settings(data_dir=tmp_path), gap_grace_s=0.0, detect_async=False)
    try:
        msgs = [("pump-1", json.dumps({"ts": T0 + i * every_s, "metrics": {"p": float(v)},
                                       "seq": i + 1}).encode())
                for i, v in enumerate(values)]
        for k in range(0, len(msgs), 100):
            pipe.ingest_many(msgs[k:k + 100], via="http")
        pipe.flush()
        alerts = store.list_alerts(kind="anomaly", limit=1000)
        return [any(a.start_ns <= int((T0 + i * every_s) * 1e9) <= a.end_ns for a in alerts)
                for i in at]
    finally:
        pipe.close()
        store.close()


@pytest.mark.parametrize("every_s", [1.0, 60.0])
def test_a_spike_after_a_glitch_is_alerted(tmp_path, every_s: float) -> None:
    x = 20 + np.random.default_rng(0).normal(0, 0.5, 1000)
    x[500] = 65535.0  # an error code, after the warm-up
    x[800] = 30.0  # a 20 sd surge, bigger than anything before but the glitch
    assert _alerted_at(tmp_path, x, [500, 800], every_s) == [True, True]


def test_learnable_holds_a_glitch_to_one_width_beyond_the_range() -> None:
    det = ContextLikelihood()
    det.score_many(20 + np.random.default_rng(1).normal(0, 0.5, 400))
    held = det.learnable(65535.0)
    assert 20 < held < 30, held
    assert det.learnable(-999.0) > 10
    assert det.learnable(20.3) == 20.3  # inside the range: as it is
    # a counter, the warm-up and a two-state stream learn the reading as it is
    fresh = ContextLikelihood()
    fresh.score_many(np.full(10, 20.0))
    assert fresh.learnable(65535.0) == 65535.0
    flag = StateAware()
    for v in [0.0, 1.0] * 50:
        flag.learn_one({"m": v})
    assert flag.learnable(5.0) == 5.0
