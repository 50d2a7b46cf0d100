"""Both backends refuse alike what one of them could not store or query (store hunt)."""

from __future__ import annotations

import pytest

from edgewise.errors import StoreError
from edgewise.store import open_store
from edgewise.telemetry import Reading


@pytest.mark.parametrize(("device", "metric", "shown"), [
    ("d", "temp\x00c", "NUL"), ("d\x00", "t", "NUL"),
    ("d", "t\ud800", "surrogate"), ("pump\udfff", "t", "surrogate"),
])
def test_unstorable_text_is_refused_alike(store_url: str, device: str, metric: str,
                                          shown: str) -> None:
    """NUL was stored by DuckDB and refused by PostgreSQL; a lone surrogate was a StoreError
    on DuckDB and a raw UnicodeEncodeError on PostgreSQL. Both refuse before writing."""
    store = open_store(store_url)
    try:
        with pytest.raises(StoreError, match=shown) as info:
            store.append([Reading("ok", "t", 1, 1.0), Reading(device, metric, 2, 2.0)])
        bad = device if device != "d" else metric
        assert repr(bad) in str(info.value)
        assert store.count_readings() == 0
        with pytest.raises(StoreError, match=shown):  # a seqs key is a device id too
            store.append([Reading("ok", "t", 1, 1.0)], seqs={bad: [1]})
        assert store.count_readings() == 0 and store.seq_watermark("ok") == 0
        assert store.append([Reading("pompe-é", "température", 1, 1.0)]).stored == 1
    finally:
        store.close()


def test_step_of_2_63_or_more_is_refused(store_url: str) -> None:
    """A step_ns of 2**63 was pasted into SQL: the backends disagreed (or failed raw)."""
    store = open_store(store_url)
    try:
        store.append([Reading("d", "m", -5, 1.0)])
        for step in (2**63, 2**64):
            with pytest.raises(StoreError, match=r"\[1, 2\*\*63 - 1\]") as info:
                store.query("d", step_ns=step)
            assert str(step) in str(info.value)
            with pytest.raises(StoreError, match=str(step)):
                store.query_many(["d"], step_ns=step)
        assert store.query("d", step_ns=2**63 - 1) == [("m", -(2**63) + 1, 1.0)]
    finally:
        store.close()


def test_bucket_near_earliest_time_is_clamped(store_url: str) -> None:
    """A reading within one step of -2**63 overflowed the bucket start: the query failed."""
    store = open_store(store_url)
    try:
        store.append([Reading("d", "m", -(2**63), 4.0), Reading("d", "m", 0, 1.0)])
        assert store.query("d", step_ns=7) == [("m", -(2**63), 4.0), ("m", 0, 1.0)]
        assert store.query_many(["d"], step_ns=10**18, limit=1) == {"d": [("m", -(2**63), 4.0)]}
    finally:
        store.close()


def test_mean_is_correctly_rounded_single_and_extremes(store_url: str) -> None:
    """The hunt's cases: ten 0.1 gave 0.09999999999999999 (DuckDB), 1e16+1-1e16 gave 0.0, a
    single 1e-310 0.0 (underflow), three 1.7e308 1.6999999999999997e308."""
    store = open_store(store_url)
    try:
        cases = {"a": [0.1] * 10, "b": [1e16, 1.0, -1e16], "c": [1e-310], "d": [1.7e308] * 3,
                 "e": [8.022650611681835e-17, 521.9248898251512, -24.286686951704837]}
        store.append([Reading("d", m, i, v) for m, vals in cases.items()
                      for i, v in enumerate(vals)])
        got = {m: v for m, _, v in store.query("d", step_ns=100)}
        assert got == {"a": 0.1, "b": 1 / 3, "c": 1e-310, "d": 1.7e308,
                       "e": 165.87940095781548}
    finally:
        store.close()
