"""Alert parity of the two stores: a second alert with an id already stored, and
non-finite scores and drivers, are refused alike on DuckDB and PostgreSQL.

Before: DuckDB stored a second alert with a stored id beside the first (its ``alerts``
table has no key: ``list_alerts`` gave two alerts ``a1``, and ``update_alert('a1')``
changed both), where PostgreSQL refused it with a raw ``duplicate key value violates
unique constraint "alerts_pkey"``. Both stores took a NaN or infinite score (and
drivers): ``GET /v1/alerts`` then answered ``"score": null`` (the dashboard showed 0.00 for
an infinite score) and a webhook body carried ``NaN``/``Infinity``, which is not JSON.
"""

from __future__ import annotations

import math

import pytest

from edgewise.alerts import AlertManager
from edgewise.errors import StoreError
from edgewise.store import open_store
from edgewise.store.base import Alert

S = 10**9
T0 = 1_700_000_000 * S


def test_second_alert_with_a_stored_id_is_refused_naming_it(store_url: str) -> None:
    s = open_store(store_url)
    try:
        first = s.add_alert(Alert("pump-1", T0, T0 + 9 * S, 0.9, id="a1", message="first"))
        seq = s.last_alert_seq()
        with pytest.raises(StoreError) as info:
            s.add_alert(Alert("pump-2", T0 + 20 * S, T0 + 29 * S, 0.5, id="a1",
                              message="second"))
        text = str(info.value)
        assert "'a1'" in text and "stored already" in text, text
        assert "update_alert" in text and "leave id empty" in text, text
        assert "duplicate key" not in text, text  # not the driver's words
        # nothing written: the first alert alone, as it was, and no raise number taken
        assert [(a.id, a.device_id, a.message) for a in s.list_alerts()] == [
            ("a1", "pump-1", "first")]
        assert s.get_alert("a1").to_dict() == first.to_dict()
        assert s.last_alert_seq() == seq
        assert [a.id for _, a in s.raised_alerts(0)] == ["a1"]
        # the store goes on: a new id is stored and numbered next
        b = s.add_alert(Alert("pump-2", T0 + 20 * S, T0 + 29 * S, 0.5))
        assert b.id and b.id != "a1"
        assert s.last_alert_seq() == seq + 1
    finally:
        s.close()


def test_stored_id_is_refused_after_reopening_and_for_a_merged_alert(store_url: str) -> None:
    s = open_store(store_url)
    try:
        a = s.add_alert(Alert("pump-1", T0, T0 + 9 * S, 0.9, id="keep"))
        b = s.add_alert(Alert("pump-1", T0 + 10 * S, T0 + 19 * S, 0.9, id="gone"))
        s.merge_alert(b.id, a.id, end_ns=b.end_ns)  # "gone": stored, no longer listed
    finally:
        s.close()
    s = open_store(store_url)
    try:
        for alert_id in ("keep", "gone"):
            with pytest.raises(StoreError, match=f"'{alert_id}' is stored already"):
                s.add_alert(Alert("pump-1", T0 + 30 * S, T0 + 39 * S, 0.9, id=alert_id))
        assert [x.id for x in s.list_alerts()] == ["keep"]
        assert s.get_alert("gone").merged_into == "keep"
        assert s.last_alert_seq() == 2  # no raise number taken by a refusal
    finally:
        s.close()


def test_gateway_alert_manager_never_trips_on_its_own_ids(store_url: str) -> None:
    """The gateway's path: new alerts get uuids, a late reading merges two, and a
    restarted manager picks up the stored alerts and extends them, with no refusal."""
    s = open_store(store_url)
    try:
        m = AlertManager(s, threshold=0.5, merge_gap_s=10.0, write_every_s=0.0)
        m.observe_many("pump-1", [(T0 + i * S, 0.9, {"t": 1.0}) for i in range(3)])
        m.observe_many("pump-1", [(T0 + 20 * S + i * S, 0.9, {"t": 1.0}) for i in range(3)])
        m.flush()
        assert len(s.list_alerts()) == 2
        # a late reading between them bridges the gap: one alert covers both
        m.observe_many("pump-1", [(T0 + 11 * S, 0.9, {"t": 1.0})])
        m.flush()
        assert len(s.list_alerts()) == 1
        # a restart: a new manager over the same store extends the stored alert
        m2 = AlertManager(s, threshold=0.5, merge_gap_s=10.0, write_every_s=0.0)
        m2.observe_many("pump-1", [(T0 + 25 * S, 0.95, {"t": 1.0})])
        m2.observe_many("pump-1", [(T0 + 60 * S, 0.9, {"t": 1.0})])
        m2.flush()
        live = s.list_alerts()
        assert len(live) == 2
        assert max(a.score for a in live) == pytest.approx(0.95)
        # three alerts raised in all (one merged into another), each id once
        assert s.last_alert_seq() == 3
        first = next(a for a in live if a.start_ns == T0)
        assert len(s.absorbed(first.id)) == 1
    finally:
        s.close()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_score_is_refused_naming_it(store_url: str, bad: float) -> None:
    s = open_store(store_url)
    try:
        with pytest.raises(StoreError) as info:
            s.add_alert(Alert("pump-1", T0, T0 + 9 * S, bad, id="a1"))
        text = str(info.value)
        assert "score must be a finite number" in text and repr(bad) in text, text
        assert "'pump-1'" in text, text
        assert s.list_alerts() == [] and s.last_alert_seq() == 0
        a = s.add_alert(Alert("pump-1", T0, T0 + 9 * S, 0.9, id="a1"))  # the id is free
        with pytest.raises(StoreError, match="score must be a finite number"):
            s.update_alert(a.id, score=bad)
        with pytest.raises(StoreError, match="score must be a finite number"):
            s.acknowledge_alert(a.id, "ops", score=bad)
        assert s.get_alert(a.id).score == 0.9
        assert s.get_alert(a.id).status == "open"
    finally:
        s.close()


@pytest.mark.parametrize("score", [None, "0.9", True])
def test_score_that_is_not_a_number_is_refused(store_url: str, score: object) -> None:
    s = open_store(store_url)
    try:
        with pytest.raises(StoreError, match="score must be a finite number"):
            s.add_alert(Alert("pump-1", T0, T0 + 9 * S, score, id="a1"))  # type: ignore[arg-type]
        assert s.list_alerts() == []
    finally:
        s.close()


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_driver_is_refused_naming_it(store_url: str, bad: float) -> None:
    s = open_store(store_url)
    try:
        with pytest.raises(StoreError) as info:
            s.add_alert(Alert("pump-1", T0, T0 + 9 * S, 0.9, drivers={"temp_c": bad}))
        assert "drivers['temp_c'] must be a finite number" in str(info.value)
        assert s.list_alerts() == []
        a = s.add_alert(Alert("pump-1", T0, T0 + 9 * S, 0.9, drivers={"temp_c": 1.0}))
        with pytest.raises(StoreError, match=r"drivers\['temp_c'\] must be a finite number"):
            s.update_alert(a.id, drivers={"temp_c": bad})
        assert s.get_alert(a.id).drivers == {"temp_c": 1.0}
    finally:
        s.close()
