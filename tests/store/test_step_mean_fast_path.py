"""The scaled fast path of a bucket's mean (DuckDB: one HUGEINT sum per bucket) is
correctly rounded too, and hands over to the general split where it cannot be exact."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import pytest

from edgewise.store import open_store
from edgewise.store._sql import SQLStoreMixin
from edgewise.telemetry import Reading
from tests.store.conftest import BACKENDS

PARAMS = [pytest.param(b, marks=[pytest.mark.postgres] if b == "postgres" else [])
          for b in BACKENDS]
T0 = 1_700_000_000 * 10**9


@pytest.fixture(params=PARAMS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "duckdb":
        return f"duckdb://{tmp_path / 'store.duckdb'}"
    return request.getfixturevalue("pg_schema_url")


def _want(groups: list[list[float]]) -> list[tuple[str, int, float]]:
    return [("m", T0 + g * 100, float(sum(map(Fraction, vals)) / len(vals)))
            for g, vals in enumerate(groups)]


@pytest.mark.parametrize("case", ["sensor", "wide", "huge", "fallback"])
def test_bucket_means_are_correctly_rounded_on_both_paths(
        store_url: str, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(hash(case) & 0xFFFF)
    make = {
        "sensor": lambda: round(rng.gauss(50, 20), rng.randint(0, 4)),
        # 1e-6 to 1e9, both signs, zeros: 50 binary orders, still one scale
        "wide": lambda: rng.choice((0.0, 1.0, -1.0)) * rng.random() * 10.0 ** rng.randint(-6, 9),
        # near the top of the doubles: the scale is below 1 (k < 0)
        "huge": lambda: rng.uniform(-1, 1) * 1.7e308,
        # a subnormal and a huge reading in one query: the fast path cannot scale them
        "fallback": lambda: rng.choice((5e-324 * rng.randint(1, 99), 1e300, rng.random())),
    }[case]
    groups = [[make() for _ in range(rng.randint(1, 60))] for _ in range(80)]
    if case != "huge":
        groups.append([1e9 - 0.5] * 60)  # sums past 2**63 once scaled: the wide column
    store = open_store(store_url)
    calls: list[str] = []
    real = SQLStoreMixin._step_sql
    monkeypatch.setattr(SQLStoreMixin, "_step_sql",
                        lambda self, *a: calls.append("general") or real(self, *a))
    try:
        store.append([Reading("mean-1", "m", T0 + g * 100 + i, v)
                      for g, vals in enumerate(groups) for i, v in enumerate(vals)])
        rows = store.query("mean-1", step_ns=100)
        want = _want(groups)
        bad = [(g, got, exp) for g, got, exp in zip(groups, rows, want, strict=True)
               if got != exp]
        assert len(rows) == len(want) and not bad, bad[:2]
        assert store.query_many(["mean-1"], step_ns=100) == {"mean-1": rows}
        assert store.query("mean-1", step_ns=100, limit=3) == rows[:3]
        if store_url.startswith("duckdb"):  # which path served it
            assert bool(calls) == (case == "fallback"), (case, calls)
    finally:
        store.close()
