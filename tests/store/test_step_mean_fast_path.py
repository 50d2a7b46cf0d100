"""The scaled fast path of a bucket's mean (DuckDB: one HUGEINT sum per bucket) is
correctly rounded too, and hands over to the general split where it cannot be exact."""

from __future__ import annotations

import random
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from edgewise.store import _sql as sql_module
from edgewise.store import open_store
from edgewise.telemetry import Reading

T0 = 1_700_000_000 * 10**9


def _want(groups: list[list[float]]) -> list[tuple[str, int, float]]:
    return [("m", T0 + g * 100, float(sum(map(Fraction, vals)) / len(vals)))
            for g, vals in enumerate(groups)]


@pytest.mark.parametrize("case", ["sensor", "wide", "huge", "fallback"])
def test_bucket_means_are_correctly_rounded_on_both_paths(
        store_url: str, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a seed of its own per case, the same in every process (``hash(case)`` is salted per
    # process: one draw in many made a 'wide' group too wide for one scale, and the
    # general path served it, as it should)
    rng = random.Random(zlib.crc32(case.encode()))
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
    calls = _spy_paths(store, monkeypatch)
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
            want_path = "general" if case == "fallback" else "fast"
            assert calls and set(calls) == {("m", want_path)}, (case, set(calls))
    finally:
        store.close()


def _spy_paths(store: Any, monkeypatch: pytest.MonkeyPatch,
               ran: list[str] | None = None) -> list[tuple[str, str]]:
    """``(metric, path)`` of every bucket row a DuckDB store's ``query`` or ``query_many``
    with ``step_ns`` reads from now on and uses: ``fast`` (a scaled HUGEINT sum; its
    scale ``f`` is set) or ``general`` (the split of ``_step_sql``; ``f`` is NULL); and in
    ``ran``, when given, which statement each read was: ``one`` (one scale for all),
    ``keyed`` (a scale per key) or ``general`` (the split alone)."""
    seen: list[tuple[str, str]] = []
    real = store._read

    def spy(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        rows = real(sql, params)
        kind = ("keyed" if "MATERIALIZED" in sql else "one" if "HUGEINT" in sql
                else "general" if " AS us" in sql else None)
        if kind is not None and ran is not None:
            ran.append(kind)
        if kind == "one" and rows and rows[0][-1] != 0:
            # one scale for all: rows (*keys, metric, b, s1, s2, n, f); f = 0: not used
            seen.extend((r[-6], "fast") for r in rows)
        elif kind in ("keyed", "general"):
            # rows (*keys, metric, b, s1, s2, n, f, same, us, ss)
            seen.extend((r[-9], "general" if r[-4] is None else "fast") for r in rows)
        return rows

    monkeypatch.setattr(store, "_read", spy)
    return seen


def test_a_noisy_metric_takes_the_general_path_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path's scale is chosen per metric (per device and metric in query_many):
    one float-noise reading (5.55e-17 among 0..100) sent every metric of the query to the
    general split (4 metrics, 200k readings, 1 min buckets: 16 -> 127 ms)."""
    rng = random.Random(29)
    groups = {m: [[round(rng.uniform(0, 100), 3) for _ in range(rng.randint(1, 20))]
                  for _ in range(30)] for m in ("a", "b", "c")}
    # near-zero noise ~170 powers of two below 100: no scale fits b's sums in 2**126
    # (5.55e-17, 0.1 + 0.2 - 0.3, does among 50k readings of one metric)
    groups["b"][7][0] = 1e-50
    store = open_store(f"duckdb://{tmp_path / 'store.duckdb'}")
    try:
        store.append([Reading(d, m, T0 + g * 100 + i, v) for d in ("d1", "d2")
                      for m, gs in groups.items() for g, vals in enumerate(gs)
                      for i, v in enumerate(vals)])
        calls = _spy_paths(store, monkeypatch)
        general: list[int] = []
        real_mean = sql_module.exact_mean
        monkeypatch.setattr(sql_module, "exact_mean",
                            lambda *a: general.append(1) or real_mean(*a))
        rows = store.query("d1", step_ns=100)
        want = [(m, T0 + g * 100, float(sum(map(Fraction, vals)) / len(vals)))
                for m, gs in sorted(groups.items()) for g, vals in enumerate(gs)]
        assert rows == want
        assert len(general) == 30, f"{len(general)} buckets took the general split, not b's 30"
        assert set(calls) == {("a", "fast"), ("b", "general"), ("c", "fast")}, set(calls)
        assert len(calls) == len(want)  # each bucket served once
        calls.clear()
        assert store.query("d1", step_ns=100, limit=40) == want[:40]
        many = store.query_many(["d2", "d1"], step_ns=100, limit=70)
        assert many == {"d2": want[:70], "d1": want[:70]}
        assert set(calls) == {("a", "fast"), ("b", "general"), ("c", "fast")}
    finally:
        store.close()


def _means(groups: dict[str, list[list[float]]]) -> list[tuple[str, int, float]]:
    """The correctly rounded means of buckets of 100 ns (``groups``: metric: buckets)."""
    return [(m, T0 + g * 100, float(sum(map(Fraction, vals)) / len(vals)))
            for m, gs in sorted(groups.items()) for g, vals in enumerate(gs)]


def _fleet() -> dict[str, dict[str, list[list[float]]]]:
    """Three devices: d1 with a metric b whose first bucket holds 1e-50 (no scale fits
    b with a or c), d2 with one metric w of values from 1e-200 to 1e200 (no scale fits
    it), d3 of clean sensor values."""
    rng = random.Random(31)

    def clean() -> list[list[float]]:
        return [[round(rng.uniform(0, 100), 3) for _ in range(rng.randint(1, 9))]
                for _ in range(12)]

    fleet = {"d1": {"a": clean(), "b": clean(), "c": clean()},
             "d2": {"w": [[rng.random() * 10.0 ** rng.randint(-200, 200)
                           for _ in range(rng.randint(1, 9))] for _ in range(12)]},
             "d3": {"a": clean(), "b": clean()}}
    fleet["d1"]["b"][0][0] = 1e-50
    return fleet


def _store_fleet(store: Any, fleet: dict[str, dict[str, list[list[float]]]]) -> None:
    store.append([Reading(d, m, T0 + g * 100 + i, v) for d, metrics in fleet.items()
                  for m, gs in metrics.items() for g, vals in enumerate(gs)
                  for i, v in enumerate(vals)])


def test_a_one_scale_bound_to_fail_is_not_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DuckDB decides from each metric's sizes, kept in memory, which statement serves a
    bucket-mean query: a query that holds every reading of its devices skips the one-scale
    statement where it is bound to fail (it ran first and came back empty: 4 metrics of
    50k, one spanning 1e+-200, CPU per query 1 min 90 -> 74 ms, 1 h 32 -> 21 ms), going
    straight to the per-key scales, or to the general split where no key has one; a time
    range that may leave the noise out, or sizes that changed (append, retention), decide
    afresh."""
    fleet = _fleet()
    store = open_store(f"duckdb://{tmp_path / 'store.duckdb'}")
    try:
        _store_fleet(store, fleet)
        ran: list[str] = []
        _spy_paths(store, monkeypatch, ran)

        def check(statements: list[str], got: Any, want: Any) -> None:
            assert got == want
            assert ran == statements, ran
            ran.clear()

        check(["one"], store.query("d3", step_ns=100), _means(fleet["d3"]))
        check(["keyed"], store.query("d1", step_ns=100), _means(fleet["d1"]))
        check(["general"], store.query("d1", "b", step_ns=100),
              _means({"b": fleet["d1"]["b"]}))
        check(["one"], store.query("d1", "a", step_ns=100), _means({"a": fleet["d1"]["a"]}))
        check(["general"], store.query("d2", step_ns=100), _means(fleet["d2"]))
        check(["keyed"], store.query_many(["d3", "d1"], step_ns=100),
              {"d3": _means(fleet["d3"]), "d1": _means(fleet["d1"])})
        # a time range may leave the noise out: one scale is tried first
        check(["one", "keyed"], store.query("d1", step_ns=100, end_ns=T0 + 1100),
              [r for r in _means(fleet["d1"]) if r[1] < T0 + 1100])
        check(["one"], store.query("d1", step_ns=100, start_ns=T0 + 100),
              [r for r in _means(fleet["d1"]) if r[1] >= T0 + 100])
        # an append of noise to d3, then retention of d1's noisy bucket, change the plans
        store.append([Reading("d3", "x", T0, 1e-60)])
        check(["keyed"], store.query("d3", step_ns=100),
              _means({**fleet["d3"], "x": [[1e-60]]}))
        assert store.delete_before(T0 + 100) > 0
        check(["one"], store.query("d1", step_ns=100),
              [r for r in _means(fleet["d1"]) if r[1] >= T0 + 100])
    finally:
        store.close()


@pytest.mark.parametrize("plan", [("one", "keyed"), ("one", "general"), ("keyed",),
                                  ("general",)])
def test_every_plan_gives_the_same_bits(
        store_url: str, plan: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    """Whichever statements a query tries (a plan made from stale sizes included: a
    one-scale statement that fails hands over to the next), the means are the same."""
    fleet = _fleet()
    store = open_store(store_url)
    monkeypatch.setattr(store, "_mean_plan", lambda *a: plan)
    try:
        _store_fleet(store, fleet)
        for d, metrics in fleet.items():
            assert store.query(d, step_ns=100) == _means(metrics), d
            assert store.query(d, next(iter(metrics)), step_ns=100, limit=5) == _means(
                {m: gs for m, gs in metrics.items() if m == next(iter(metrics))})[:5]
        assert store.query_many(list(fleet), step_ns=100) == {
            d: _means(metrics) for d, metrics in fleet.items()}
        assert store.query_many(list(fleet), step_ns=100, limit=7) == {
            d: _means(metrics)[:7] for d, metrics in fleet.items()}
    finally:
        store.close()
