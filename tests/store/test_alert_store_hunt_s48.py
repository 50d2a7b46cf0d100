"""Alert store follow-ups (hunt s48), on DuckDB and PostgreSQL: a repeated identical
verdict (a client's retry) writes no second ``alert.labelled`` event, and
``Store.absorbed`` reads a merged alert tree in one query, in the same order."""

from __future__ import annotations

from typing import Any

from edgewise.store import open_store
from edgewise.store.base import Alert

T0 = 1_700_000_000 * 10**9
S = 10**9


def _events(store: Any) -> list[tuple[str, str]]:
    return [(e.alert_id, e.event) for e in store.alert_events()]


def test_a_repeated_identical_verdict_writes_no_second_labelled_event(store_url: str) -> None:
    """Three identical label writes give one ``alert.acknowledged`` and one
    ``alert.labelled``; a changed note, label or labeller each gives one more."""
    store = open_store(store_url)
    try:
        a = store.add_alert(Alert("pump-1", T0, T0 + S, 0.9))
        verdict = {"label": "false_alarm", "labelled_by": "ops", "note": "cleaned"}
        for _ in range(3):
            store.acknowledge_alert(a.id, "ops", **verdict)
        assert _events(store) == [(a.id, "alert.acknowledged"), (a.id, "alert.labelled")]
        store.acknowledge_alert(a.id, "ops", **{**verdict, "note": "cleaned twice"})
        store.acknowledge_alert(a.id, "ops", **{**verdict, "note": "cleaned twice"})
        store.acknowledge_alert(a.id, "ops", **{**verdict, "note": "cleaned twice",
                                                "label": "true_alarm"})
        store.acknowledge_alert(a.id, "lab", **{**verdict, "note": "cleaned twice",
                                                "label": "true_alarm", "labelled_by": "lab"})
        got = store.alert_events()
        assert [e.event for e in got] == ["alert.acknowledged"] + ["alert.labelled"] * 4
        assert got[-1].detail == {"label": "true_alarm", "labelled_by": "lab",
                                  "note": "cleaned twice"}
        # a verdict that acknowledges an open alert already holding it still says so
        b = store.add_alert(Alert("pump-1", T0 + 5 * S, T0 + 6 * S, 0.9, **verdict))
        store.acknowledge_alert(b.id, "ops", **verdict)
        assert _events(store)[-2:] == [(b.id, "alert.acknowledged"), (b.id, "alert.labelled")]
    finally:
        store.close()


def test_absorbed_reads_the_merged_tree_in_one_query_in_the_same_order(
        store_url: str) -> None:
    """``absorbed`` of a live alert with 60 merged alerts (flat, as merges leave them, and
    a chain as older stores hold) reads once and lists them in the order it always did:
    the alerts merged straight into it, oldest first, then those under each, last first."""
    store = open_store(store_url)
    try:
        live = store.add_alert(Alert("d", T0, T0 + 1, 0.9, id="live", created_ns=T0))

        def add(i: int, into: str) -> str:
            return store.add_alert(Alert("d", T0 + i * S, T0 + i * S + 1, 0.9, id=f"m{i:03d}",
                                         created_ns=T0 + i, merged_into=into)).id

        flat = [add(i, live.id) for i in range(1, 59)]
        # a chain under m001 and one under m058 (an older store's merges of merged alerts)
        deep1, deep2 = add(100, "m001"), add(101, "m058")
        deeper = add(102, deep1)
        other = store.add_alert(Alert("d", T0, T0 + 1, 0.9, id="other", created_ns=T0))
        add(103, other.id)
        reads = 0
        read = store._read

        def counting(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
            nonlocal reads
            reads += 1
            return read(sql, params)

        store._read = counting  # type: ignore[method-assign]
        got = store.absorbed(live.id)
        assert reads <= 2, f"absorbed took {reads} queries for 61 merged alerts"
        assert got == [*flat, deep2, deep1, deeper]
        assert store.absorbed(deep1) == [deeper] and store.absorbed(deeper) == []
        assert store.absorbed(other.id) == ["m103"]
    finally:
        store.close()
