"""Seqs above a permanent gap are folded into runs (scale hunt, session 41).

A device that lost one message for good has a watermark stuck below it, and the stores
folded only ``1..watermark`` into ``seq_marks``: every later seq stayed one row of
``seqs`` for good (2,000 devices x 2,000 messages with seq 3 lost: 3,994,000 rows; the
open read them all, 0.19 -> 5.64 s, ``held_device_ids`` scanned them at every
``/v1/fleet`` poll, and retention never removes seqs). The seqs above the watermark are
folded into ``seq_runs`` rows ``(device, lo, hi)`` now, one per run, on both backends,
with the same answers for duplicates, gaps and watermarks; a store's rows from before are
folded at its first open.
"""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import parse_qs

import pytest

from edgewise.errors import StoreError
from edgewise.store import open_store


def _count(store: Any, table: str) -> int:
    """Rows of ``table`` (0 where the store has no such table: one made before runs)."""
    try:
        return int(store._read(f"SELECT count(*) FROM {table}", [])[0][0])
    except StoreError:
        return 0


def _seq_rows(store: Any) -> int:
    """Rows the store keeps of stored seqs above the devices' marks."""
    return _count(store, "seqs") + _count(store, "seq_runs")


def _model_runs(seqs: set[int]) -> tuple[int, list[tuple[int, int]]]:
    """(watermark, runs above it) of a set of stored seqs, as plain Python."""
    wm = 0
    while wm + 1 in seqs:
        wm += 1
    runs: list[tuple[int, int]] = []
    for s in sorted(q for q in seqs if q > wm):
        if runs and runs[-1][1] == s - 1:
            runs[-1] = (runs[-1][0], s)
        else:
            runs.append((s, s))
    return wm, runs


def _check(store: Any, model: dict[str, set[int]]) -> None:
    """The store answers exactly what the model holds, device by device."""
    for d, seqs in model.items():
        wm, runs = _model_runs(seqs)
        gaps, prev = [], wm
        for a, b in runs:
            gaps.append((prev + 1, a - 1))
            prev = b
        top = max(seqs, default=0)
        assert store.seq_watermark(d) == wm, d
        assert store.seq_gaps(d) == gaps, d
        asked = set(range(0, top + 3))
        assert store.stored_seqs(d, asked) == seqs & asked, d
    asked_many = {d: range(0, max(s, default=0) + 3) for d, s in model.items()}
    got = store.stored_seqs_many(asked_many)
    assert got == {d: model[d] & set(asked_many[d]) for d in model}


def test_seqs_above_a_lost_one_are_folded_into_runs(store_url: str) -> None:
    """Check that 3 devices x 600 messages, each device missing seq 3 for good (and one
    also 400), leave one run row per run after a close, not a row per message above the
    gap (before: 597 rows of seqs per device, kept for good), and that the store opened
    again answers the same watermarks, gaps and stored seqs."""
    store = open_store(store_url)
    model: dict[str, set[int]] = {f"pump-{i}": set() for i in range(3)}
    for c in range(0, 600, 50):
        batch = {d: [q for q in range(c + 1, c + 51) if q != 3 and (d != "pump-0" or q != 400)]
                 for d in model}
        store.append([], seqs=batch)
        for d, qs in batch.items():
            model[d].update(qs)
    _check(store, model)
    store.close()
    store = open_store(store_url)
    try:
        assert _seq_rows(store) == 4, _seq_rows(store)  # runs 4..600, 4..399, 401..600
        assert _count(store, "seqs") == 0
        _check(store, model)
        assert store.held_device_ids() == set(model)
        r = store.append([], seqs={"pump-1": [3]})  # the lost one, late: the run joins
        model["pump-1"].add(3)
        assert r.watermarks == {"pump-1": 600}
        _check(store, model)
    finally:
        store.close()


def test_answers_stay_exact_across_folds_reopens_and_deletion(store_url: str) -> None:
    """Check that random seqs with holes (re-deliveries, late ones, a device deleted and
    sending again) are answered exactly as a plain set answers them, before and after
    each fold (every COMPACT_EVERY appends, at close, at open), and that after a fold the
    store keeps no seqs rows, only one ``seq_runs`` row per run above each watermark."""
    rng = random.Random(41)
    devices = ["a", "b", "c"]
    model: dict[str, set[int]] = {d: set() for d in devices}
    store = open_store(store_url)
    try:
        for round_ in range(6):
            for _ in range(rng.randint(3, 12)):
                batch = {d: rng.sample(range(1, 160), rng.randint(0, 12)) for d in devices}
                store.append([], seqs=batch)
                for d, qs in batch.items():
                    model[d].update(qs)
            _check(store, model)
            if round_ == 3:  # deleted: its seqs are gone, and it starts again from none
                store.delete_device("b")
                model["b"] = set()
                _check(store, model)
            if round_ % 2:
                store.close()
                store = open_store(store_url)
            else:
                with store._wlock:
                    store._compact_seqs()
            _check(store, model)
            assert _count(store, "seqs") == 0
            runs = sum(len(_model_runs(s)[1]) for s in model.values())
            assert _seq_rows(store) == runs
    finally:
        store.close()


def test_a_store_made_before_runs_is_folded_at_open(store_url: str) -> None:
    """Check that a store holding seqs rows above a gap the old way (no seq_runs table,
    one row per message) has them folded into runs at its first open, and answers as
    before."""
    store = open_store(store_url)
    store.append([], seqs={"old": [1, 2]})
    store.close()
    rows = [("old", q) for q in range(4, 301)] + [("old", 1), ("other", 7)]
    if store_url.startswith("duckdb://"):
        import duckdb

        con = duckdb.connect(store_url.removeprefix("duckdb://"))
        try:
            con.execute("DROP TABLE IF EXISTS seq_runs")
            con.executemany("INSERT INTO seqs VALUES (?, ?)", rows)
        finally:
            con.close()
    else:
        import psycopg

        base, _, query = store_url.partition("?")
        schema = parse_qs(query)["schema"][0]
        with psycopg.connect(base, autocommit=True) as con:
            con.execute(f'SET search_path TO "{schema}"')
            con.execute("DROP TABLE IF EXISTS seq_runs")
            with con.cursor() as cur:
                cur.executemany("INSERT INTO seqs VALUES (%s, %s) ON CONFLICT DO NOTHING", rows)
    store = open_store(store_url)
    try:
        assert _count(store, "seqs") == 0 and _seq_rows(store) == 2  # 4..300 and 7
        _check(store, {"old": {1, 2, *range(4, 301)}, "other": {7}})
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_processes_read_each_others_runs(pg_schema_url: str) -> None:
    """Check that gateway processes sharing a PostgreSQL store answer from the runs
    another one folded (its look-ups of seqs it lacks read seq_runs), and that a fold
    by a process whose state of a device predates that device's deletion elsewhere
    writes none of it back."""
    a = open_store(pg_schema_url)
    b = open_store(pg_schema_url)
    try:
        b.append([], seqs={"d": [1]})
        a.append([], seqs={"d": [2, *range(4, 301)]})
        a.close()  # folds: mark 2, one run 4..300
        assert _count(b, "seqs") == 0 and _count(b, "seq_runs") == 1
        assert b.stored_seqs("d", {3, 4, 150, 300, 301}) == {4, 150, 300}
        b.append([], seqs={"d": [302]})  # b looks its gap 2..301 up: in the mark and run
        assert b.seq_watermark("d") == 2 and b.seq_gaps("d") == [(3, 3), (301, 301)]
        assert b.append([], seqs={"d": [3, 301]}).watermarks == {"d": 302}
        a = open_store(pg_schema_url)  # folds b's rows at open
        assert _count(a, "seqs") == 0 and a.seq_watermark("d") == 302
        a.append([], seqs={"d": [303]})
        b.delete_device("d")
        a.close()  # its fold of d finds the device deleted: nothing written back
        c = open_store(pg_schema_url)
        try:
            assert c.seq_watermark("d") == 0 and not c.has_device_data("d")
        finally:
            c.close()
    finally:
        a.close()
        b.close()
