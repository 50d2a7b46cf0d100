"""Both backends refuse alike what one of them could not store or query (store hunt)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgewise.errors import StoreError
from edgewise.store import open_store
from edgewise.store.base import Alert
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


_TEXT_CALLS: list[tuple[str, str, Any]] = [
    ("query", "device_id", lambda s, bad: s.query(bad)),
    ("query", "metric", lambda s, bad: s.query("d", bad)),
    ("query_many", "device_ids[1]", lambda s, bad: s.query_many(["d", bad])),
    ("times_before", "metric", lambda s, bad: s.times_before("d", bad, 10)),
    ("seq_readings", "metrics[0]", lambda s, bad: s.seq_readings("d", [bad], [1], 0, 10)),
    ("Cannot look up seqs", "device_id", lambda s, bad: s.stored_seqs(bad, [1])),
    ("has_device_data", "device_id", lambda s, bad: s.has_device_data(bad)),
    ("trimmed_before", "device_id", lambda s, bad: s.trimmed_before(bad)),
    ("recheck_seq_watermark", "device_id", lambda s, bad: s.recheck_seq_watermark(bad)),
    ("recheck_seq_gaps", "device_id", lambda s, bad: s.recheck_seq_gaps(bad)),
    ("delete_device", "device_id", lambda s, bad: s.delete_device(bad)),
    ("delete_before", "device_id", lambda s, bad: s.delete_before(0, bad)),
    ("prune_alert_events", "device_id", lambda s, bad: s.prune_alert_events(0, bad)),
    ("conflicts", "device_id", lambda s, bad: s.conflicts(bad)),
    ("list_alerts", "device_id", lambda s, bad: s.list_alerts(bad)),
    ("get_alert", "alert_id", lambda s, bad: s.get_alert(bad)),
    ("absorbed", "alert_id", lambda s, bad: s.absorbed(bad)),
    ("Changing an alert", "alert_id", lambda s, bad: s.update_alert(bad, note="x")),
    ("acknowledge_alert", "alert_id", lambda s, bad: s.acknowledge_alert(bad, by="ops")),
    ("merge_alert", "alert_id", lambda s, bad: s.merge_alert(bad, "a1")),
]


@pytest.mark.parametrize("bad", ["d\x00", "d\ud800"], ids=["nul", "surrogate"])
def test_unstorable_text_arguments_are_refused_alike(store_url: str, bad: str) -> None:
    """Asked with a NUL, PostgreSQL failed (StoreError) where DuckDB answered "none" (an
    empty list, False, 0); with a lone surrogate PostgreSQL raised a raw UnicodeEncodeError.
    Both now refuse it, naming the call and the argument, and stay usable."""
    store = open_store(store_url)
    try:
        store.append([Reading("d", "t", 1, 1.0, seq=1)])
        store.add_alert(Alert("d", 0, 1, 0.5, id="a1"))
        for call, arg, fn in _TEXT_CALLS:
            with pytest.raises(StoreError) as info:
                fn(store, bad)
            assert str(info.value).startswith(f"{call}: {arg} must "), str(info.value)
            assert repr(bad) in str(info.value)
        assert store.query("d") == [("t", 1, 1.0)] and store.seq_watermark("d") == 1
    finally:
        store.close()


def test_names_past_the_byte_limit_are_refused_alike(store_url: str) -> None:
    """A 3,000-character metric was stored by DuckDB; PostgreSQL failed the whole batch
    ("index row size 3024 exceeds btree version 4 maximum 2704"). Both refuse a name of
    more than 1,024 bytes of UTF-8 up front, naming the field, its size and the limit."""
    store = open_store(store_url)
    try:
        ok = Reading("d", "t", 1, 1.0, seq=1)
        cases = [("metric", Reading("d", "m" * 1025, 2, 1.0)),
                 ("device_id", Reading("é" * 513, "t", 2, 1.0))]  # 1,026 bytes
        for field, reading in cases:
            with pytest.raises(StoreError, match=f"{field} must be at most 1,024 bytes of "
                               r"UTF-8. Got 1,02[56] bytes instead") as info:
                store.append([ok, reading])
            assert "\n" not in str(info.value) and len(str(info.value)) < 300
        with pytest.raises(StoreError, match="device id must be at most 1,024 bytes"):
            store.append([ok], seqs={"x" * 1025: [1]})
        assert store.count_readings() == 0 and store.seq_watermark("d") == 0
        # the limit itself, in both fields at once (PostgreSQL indexes them together)
        long_dev, long_metric = "é" * 512, "m" * 1024
        assert store.append([Reading(long_dev, long_metric, 1, 1.0)]).stored == 1
        assert store.query(long_dev, long_metric) == [(long_metric, 1, 1.0)]
        with pytest.raises(StoreError, match="device_id must be at most 1,024 bytes"):
            store.add_alert(Alert("x" * 1025, 0, 1, 0.5))
    finally:
        store.close()


def test_numpy_numbers_are_stored_as_python_numbers(store_url: str) -> None:
    """check_readings refused a numpy int64 time with "ts_ns must be an int64 ... Got
    np.int64(5) instead"; any integral time and seq and any real value are taken now,
    as int and float. A bool is still refused."""
    store = open_store(store_url)
    try:
        r = store.append([Reading("d", "t", np.int64(5), np.float32(0.5), seq=np.uint16(1)),
                          Reading("d", "u", np.int32(6), np.int64(3))],
                         seqs={"d": [np.int64(2)]})
        assert (r.stored, r.watermarks) == (2, {"d": 2})
        assert store.query("d") == [("t", 5, 0.5), ("u", 6, 3.0)]
        assert store.append([Reading("d", "t", 5, 0.5)]).duplicates == 1
        assert store.stored_seqs("d", [np.int64(1)]) == {1}
        for bad in (Reading("d", "t", True, 1.0), Reading("d", "t", 7, np.bool_(True)),
                    Reading("d", "t", np.float64(7.0), 1.0)):
            with pytest.raises(StoreError, match="must be"):
                store.append([bad])
    finally:
        store.close()


def test_negative_limit_is_one_clear_error(store_url: str) -> None:
    """A negative limit was each backend's own error (DuckDB's three-line "Binder Error:
    LIMIT/OFFSET cannot be negative", PostgreSQL's "LIMIT must not be negative"), or
    for query_many none at all."""
    store = open_store(store_url)
    try:
        store.append([Reading("d", "t", i, float(i)) for i in range(3)])
        for fn in (lambda: store.query("d", limit=-1),
                   lambda: store.query("d", step_ns=2, limit=-1),
                   lambda: store.query_many(["d"], limit=-1),
                   lambda: store.list_alerts(limit=-1),
                   lambda: store.conflicts(limit=-1)):
            with pytest.raises(StoreError) as info:
                fn()
            assert str(info.value) == ("limit must be None (no limit) or a number of rows "
                                       ">= 0. Got -1 instead.")
        assert store.query("d", limit=0) == [] and store.query_many(["d"], limit=0) == {"d": []}
    finally:
        store.close()


def test_a_cut_past_int64_time_takes_every_reading(store_url: str) -> None:
    """delete_before(10**30) was "bigint out of range" on PostgreSQL (recording the cut);
    the cut is clamped to int64: every reading goes, the last int64 time included."""
    store = open_store(store_url)
    try:
        store.append([Reading("d", "t", 0, 1.0), Reading("d", "t", 2**63 - 1, 2.0),
                      Reading("e", "t", -(2**63), 3.0)])
        assert store.delete_before(-(10**30)) == 0 and store.trimmed_before("d") is None
        assert store.delete_before(10**30, "d") == 2
        assert store.trimmed_before("d") == 2**63 - 1 and store.query("e") != []
        assert store.delete_before(10**30) == 1 and store.count_readings() == 0
        assert store.prune_alert_events(10**30) == 0
    finally:
        store.close()
