"""A cached forecast notices readings stored late into the span it was fitted on (a
store-and-forward agent's backlog, sent after newer readings); session 48's hunt."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgewise.server.routes import forecast as route
from tests.server.conftest import Env, build_env, build_postgres_env
from tests.server.test_forecast_route import HOUR, _get, fits  # noqa: F401

DAYS = 10
GAP = range(100, 130)  # hours of the history the agent held back, then sent late


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_env(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Env]:
    """The app on a DuckDB store, or on a PostgreSQL schema of its own."""
    if request.param == "duckdb":
        yield from build_env(data_dir)
    else:
        yield from build_postgres_env(data_dir, request.getfixturevalue("postgres_url"),
                                      "ew_fc48_")


def _send(env: Env, hours: list[int], end: int, seq0: int, metric: str = "load_kw") -> None:
    """Hourly readings of a daily cycle at the given hours (0: ``DAYS`` days before ``end``)."""
    n0 = DAYS * 24 - 1
    batch = [{"ts": end - HOUR * (n0 - h), "seq": seq0 + i,
              "metrics": {metric: 20 + 5 * np.sin(2 * np.pi * h / 24) + 0.1 * (h % 3)}}
             for i, h in enumerate(hours)]
    r = env.send(batch)
    assert r.status_code == 200 and r.json()["accepted"] == len(hours), r.text


@pytest.mark.parametrize("bucketed", [False, True])
def test_backlog_sent_late_refits_the_cached_forecast(any_env: Env, fits: list[int],  # noqa: F811
                                                      bucketed: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a backlog stored after the fit, inside its span (30 hours in the middle of 10
    days, no reading after the last), refits the next request, with its readings in the
    history (it was answered from the cache, without them, until TTL_S passed), as stored
    or averaged into buckets (whose span, of many readings, is counted once a RECOUNT_S);
    and that a reading of another metric alone does not."""
    if bucketed:
        monkeypatch.setattr(route, "MAX_READINGS", 100)
    end = (int(time.time()) // (3 * HOUR) - 8) * 3 * HOUR
    every = range(DAYS * 24)
    _send(any_env, [h for h in every if h not in GAP], end, 1)
    first = _get(any_env, metric="load_kw", horizon=4).json()
    assert first["history"]["bucket_s"] == (3 * HOUR if bucketed else None), first
    _send(any_env, [5], end, 10_000, metric="temp")  # another metric: no refit
    assert _get(any_env, metric="load_kw", horizon=4).json()["cached"] is True
    assert fits == [4]
    _send(any_env, list(GAP), end, 20_000)  # the backlog, late
    if bucketed:  # a large span is counted once a RECOUNT_S: not yet
        assert _get(any_env, metric="load_kw", horizon=4).json()["cached"] is True
        monkeypatch.setattr(route, "RECOUNT_S", 0.0)
    second = _get(any_env, metric="load_kw", horizon=4).json()
    assert second["cached"] is False and fits == [4, 4], second
    # the 30 hours more, or the buckets of 3 h they fill (9 of them with none before)
    added = 9 if bucketed else len(GAP)
    assert second["history"]["readings"] == first["history"]["readings"] + added, second
    third = _get(any_env, metric="load_kw", horizon=4).json()
    assert third["cached"] is True and fits == [4, 4]


def test_count_metric_counts_one_metric_in_a_span(any_env: Env) -> None:
    """Check the store's count of one metric's readings in [start, end), on both stores."""
    end = 1_700_000_000 - 1_700_000_000 % HOUR
    _send(any_env, [0, 1, 2, 3, 9], end, 1)
    _send(any_env, [2], end, 100, metric="temp")
    t0 = (end - HOUR * (DAYS * 24 - 1)) * 10**9
    s = any_env.store
    assert s.count_metric(any_env.device, "load_kw") == 5
    assert s.count_metric(any_env.device, "load_kw", t0 + HOUR * 10**9, t0 + 9 * HOUR * 10**9) == 3
    assert s.count_metric(any_env.device, "temp", None, t0 + 3 * HOUR * 10**9) == 1
    assert s.count_metric("nobody", "load_kw") == 0
