"""``GET /v1/devices/{id}/readings.csv``: a device's whole history as CSV, streamed, read
from the store in bounded slices (made small here so that every history spans many).

The tests that store nothing share one app (``module_env``); the others have their own."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.server import readings_csv
from edgewise.server.readings_csv import metric_rows
from edgewise.tables import find_time_column, read_table
from edgewise.telemetry import Reading
from tests.server.conftest import Env, problem

T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
S = 10**9


@pytest.fixture
def small_slices(monkeypatch: pytest.MonkeyPatch) -> int:
    """Slices of 7 rows, whatever the number of metrics."""
    monkeypatch.setattr(readings_csv, "SLICE_ROWS", 7)
    monkeypatch.setattr(readings_csv, "MIN_SLICE_ROWS", 7)
    monkeypatch.setattr(readings_csv, "CHUNK_ROWS", 5)
    return 7


def _get(env: Env, role: str | None = "viewer", device: str | None = None,
         **params: Any) -> Any:
    headers = env.auth(role) if role else {}
    return env.client.get(f"/v1/devices/{device or env.device}/readings.csv", params=params,
                          headers=headers)


def _rows(resp: Any) -> list[list[str]]:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "text/csv; charset=utf-8"
    return list(csv.reader(io.StringIO(resp.text)))


def _spy_limits(env: Env, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record the ``limit`` of every ``store.query`` the export makes."""
    limits: list[Any] = []
    real = env.store.query

    def query(*args: Any, **kw: Any) -> Any:
        limits.append(args[5] if len(args) > 5 else kw.get("limit"))
        return real(*args, **kw)

    monkeypatch.setattr(env.store, "query", query)
    return limits


def test_long_is_every_stored_row_once_across_many_slices(
        env: Env, small_slices: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three metrics sampled at the same timestamps (so each timestamp is shared by rows on
    both sides of every slice boundary) over 20 slices each: the long CSV is exactly
    store.query of everything, in its order, and no query read more than a slice."""
    env.store.append([Reading(env.device, m, T0 + i * S // 3, i * 0.25 + k)
                      for i in range(140) for k, m in enumerate(("a", "b", "c"))])
    everything = env.store.query(env.device)
    assert len(everything) == 420
    limits = _spy_limits(env, monkeypatch)
    rows = _rows(_get(env, format="long", time_format="epoch_ns"))
    assert rows[0] == ["time", "metric", "value"]
    assert [(m, int(t), float(v)) for t, m, v in rows[1:]] == everything
    assert len(limits) > 3 * 140 // small_slices and set(limits) == {small_slices}


def test_wide_merges_metrics_sampled_at_different_times(env: Env, small_slices: int) -> None:
    """'a' every second, 'b' every 3 s half a second later, 'c' at a's times 0 and 30:
    one row per timestamp in time order, an empty cell where a metric has no reading."""
    env.store.append([Reading(env.device, "a", T0 + i * S, float(i)) for i in range(40)]
                     + [Reading(env.device, "b", T0 + i * 3 * S + S // 2, -float(i))
                        for i in range(12)]
                     + [Reading(env.device, "c", T0 + i * S, 100.0 + i) for i in (0, 30)])
    rows = _rows(_get(env, time_format="epoch_ns"))
    assert rows[0] == ["time", "a", "b", "c"]
    got = {int(r[0]): r[1:] for r in rows[1:]}
    assert [int(r[0]) for r in rows[1:]] == sorted(got)  # time order, each time once
    expected: dict[int, list[str]] = {}
    for m, t, v in env.store.query(env.device):
        expected.setdefault(t, ["", "", ""])["abc".index(m)] = repr(v)
    assert got == expected and len(got) == 40 + 12
    assert got[T0] == ["0.0", "", "100.0"] and got[T0 + S // 2] == ["", "-0.0", ""]
    assert got[T0 + 30 * S] == ["30.0", "", "130.0"]


def test_times_keep_the_stores_nanoseconds(env: Env) -> None:
    env.store.append([Reading(env.device, "a", T0 + 123_456_789, 1.5),
                      Reading(env.device, "a", T0 + 5 * S, 2.0)])
    rows = _rows(_get(env))
    assert rows[1:] == [["2026-01-01T00:00:00.123456789Z", "1.5"],
                        ["2026-01-01T00:00:05.000000000Z", "2.0"]]
    rows = _rows(_get(env, time_format="epoch_s", format="long"))
    assert rows[1:] == [["1767225600.123456789", "a", "1.5"], ["1767225605", "a", "2.0"]]


def test_step_buckets_match_the_json_route_across_slices(env: Env, small_slices: int) -> None:
    """Means per 60 s bucket (a range start inside a bucket included), 20 buckets per
    metric over three slices each: the same points as the JSON route's."""
    env.store.append([Reading(env.device, m, T0 + i * S, float(i) * (k + 1))
                      for i in range(1200) for k, m in enumerate(("a", "b"))])
    params = {"step": "60s", "start": str(T0 // S + 30), "end": str(T0 // S + 1190)}
    body = env.client.get(f"/v1/devices/{env.device}/readings", params=params,
                          headers=env.auth("viewer")).json()
    rows = _rows(_get(env, format="long", time_format="epoch_ns", **params))
    got: dict[str, dict[str, list[float]]] = {}
    for t, m, v in rows[1:]:
        s = got.setdefault(m, {"t": [], "v": []})
        s["t"].append(int(t) / 1e9)
        s["v"].append(float(v))
    assert got == body["series"] and len(got["a"]["t"]) == 20
    assert got["a"]["v"][0] == sum(range(30, 60)) / 30  # the first bucket from 'start' on
    wide = _rows(_get(env, **params))
    assert wide[0] == ["time", "a", "b"] and len(wide) == 21
    assert wide[1] == ["2026-01-01T00:00:00.000000000Z", "44.5", "89.0"]


def test_metric_and_empty_ranges(env: Env) -> None:
    env.store.append([Reading(env.device, m, T0 + i * S, 1.0) for i in range(3)
                      for m in ("a", "b")])
    assert _rows(_get(env, metric="b", format="long"))[1][1:] == ["b", "1.0"]
    assert _rows(_get(env, metric="b"))[0] == ["time", "b"]
    # nothing in range: the header only; a metric asked for keeps its column
    assert _rows(_get(env, start=str(T0 // S + 60))) == [["time"]]
    assert _rows(_get(env, start=str(T0 // S + 60), metric="a")) == [["time", "a"]]
    # a metric the device never had is no empty CSV but a 404 naming its metrics
    body = problem(_get(env, metric="nope", format="long"), 404)
    assert (body["field"], body["value"], body["reason"]) == ("metric", "nope",
                                                              "unknown_metric")
    assert "its metrics: 'a', 'b'" in body["detail"]


def test_metric_given_twice_is_a_422_naming_it(env: Env) -> None:
    """Check ``?metric=a&metric=b`` is refused naming ``metric``, not answered with the
    last one alone as if the first had not been asked for."""
    env.store.append([Reading(env.device, m, T0, 1.0) for m in ("a", "b")])
    resp = env.client.get(f"/v1/devices/{env.device}/readings.csv?metric=a&metric=b",
                          headers=env.auth("viewer"))
    body = problem(resp, 422)
    assert (body["field"], body["value"], body["reason"]) == ("metric", "'a', 'b'",
                                                              "repeated_parameter")


@pytest.mark.parametrize("params, field, reason", [
    ({"step": "5x"}, "step", "bad_duration"),
    ({"step": "0s"}, "step", "bad_duration"),
    ({"start": "yesterday"}, "start", "bad_time"),
    ({"end": "2024-01-31T12:00:00"}, "end", "bad_time"),  # no offset: ambiguous
    ({"start": "1700000100", "end": "1700000000"}, "end", "bad_range"),
    ({"format": "xml"}, "format", "invalid"),
    ({"time_format": "iso"}, "time_format", "invalid"),
])
def test_bad_query_parameters_are_named(module_env: Env, params: dict, field: str,
                                        reason: str) -> None:
    env = module_env
    body = problem(_get(env, **params), 422)
    assert (body["field"], body["reason"]) == (field, reason)
    assert body["value"] == params[field]


def test_viewer_reads_without_a_token_or_unknown_device_refused(env: Env) -> None:
    env.store.append([Reading(env.device, "a", T0, 1.0)])
    resp = _get(env, role="viewer")
    assert resp.status_code == 200 and resp.text.startswith("time,a\n")
    assert resp.headers["content-disposition"] == 'attachment; filename="pump-1.csv"'
    assert resp.headers["x-content-type-options"] == "nosniff"  # the app's headers, streamed
    assert resp.headers["cache-control"] == "no-store"
    docs = env.client.get("/docs")
    assert "content-security-policy" not in docs.headers  # Swagger UI's inline script
    assert docs.headers["cache-control"] == "no-store"
    problem(_get(env, role=None), 401)
    assert problem(_get(env, device="pump-9"), 404)["reason"] == "unknown_device"
    resp = env.client.get(f"/v1/devices/{env.device}/readings.csv",
                          headers=env.device_headers())  # a device secret reads nothing
    problem(resp, 403)


def test_openapi_describes_the_csv(module_env: Env) -> None:
    env = module_env
    op = env.client.get("/openapi.json").json()["paths"][
        "/v1/devices/{device_id}/readings.csv"]["get"]
    assert "bounded slices" in op["description"] and "format=wide" in op["description"]
    assert list(op["responses"]["200"]["content"]) == ["text/csv"]
    assert {"401", "403", "404", "422"} <= set(op["responses"])
    names = {p["name"] for p in op["parameters"]}
    assert names == {"device_id", "metric", "start", "end", "step", "format", "time_format"}


@pytest.mark.parametrize("form, step", [("long", None), ("wide", None), ("wide", "2s")])
def test_a_device_deleted_during_its_export_breaks_the_stream(
        env: Env, small_slices: int, monkeypatch: pytest.MonkeyPatch, form: str,
        step: str | None) -> None:
    """The device is deleted after the export's third slice: the stream fails (the
    server cuts the connection) instead of ending as a whole CSV of what was read; a
    device still there exports whole, also a registered one with no readings at all."""
    from edgewise.errors import StoreError

    env.store.append([Reading(env.device, m, T0 + i * S, float(i))
                      for m in ("a", "b") for i in range(60)])
    whole = _get(env, format=form, step=step)
    assert whole.status_code == 200 and len(whole.text.splitlines()) > 30
    real, calls = env.store.query, []

    def query(*args: Any, **kw: Any) -> Any:
        calls.append(args)
        if len(calls) == 3:
            env.store.delete_device(env.device)
        return real(*args, **kw)

    monkeypatch.setattr(env.store, "query", query)
    with pytest.raises(RuntimeError, match="response already started") as info:
        _get(env, format=form, step=step)  # the test client's word for a cut stream
    assert isinstance(info.value.__cause__, StoreError)
    assert "deleted while its readings were exported" in str(info.value.__cause__)
    assert len(calls) >= 3
    monkeypatch.setattr(env.store, "query", real)
    assert _rows(_get(env, format=form)) == [["time", "metric", "value"] if form == "long"
                                             else ["time"]]


class _ListStore:
    """``query`` over a list as the stores answer it (sorted by metric then time, the
    first ``limit``), duplicates of one (metric, time) included, which no real store
    keeps; the order of rows sharing a time differs from one call to the next, as a
    database's may."""

    def __init__(self, rows: list[tuple[str, int, float]]) -> None:
        self.rows, self.calls = rows, 0

    def query(self, device_id: str, metric: str | None, start_ns: int | None,
              end_ns: int | None, step_ns: int | None, limit: int | None) -> list[Any]:
        self.calls += 1
        out = [r for r in self.rows if (metric is None or r[0] == metric)
               and (start_ns is None or r[1] >= start_ns) and (end_ns is None or r[1] < end_ns)]
        out.sort(key=lambda r: (r[0], r[1], r[2] * (-1) ** self.calls))
        return out[:limit] if limit is not None else out


def _run(rows: list[tuple[int, float]]) -> list[tuple[str, int, float]]:
    return [("m", t, v) for t, v in rows]


@pytest.mark.parametrize("slice_rows", [2, 3, 5, 8])
def test_slices_cut_inside_runs_of_one_timestamp_lose_and_double_nothing(
        slice_rows: int) -> None:
    """Runs of rows at one timestamp longer than a slice, and cut by slice boundaries
    anywhere: every row comes exactly once, in time order."""
    rows = _run([(1, 1.0), (2, 2.0), (2, 2.5), (2, 2.75)] + [(3, 3.0 + i / 10) for i in range(9)]
                + [(4, 4.0), (5, 5.0), (5, 5.5), (6, 6.0)])
    store = _ListStore(rows)
    got = list(metric_rows(store, "d", "m", slice_rows=slice_rows))
    assert sorted(got) == sorted((t, v) for _m, t, v in rows)
    assert [t for t, _v in got] == sorted(t for t, _v in got)


def test_wide_of_duplicates_writes_each_value() -> None:
    store = _ListStore([*_run([(1, 1.0), (1, 1.5), (2, 2.0)]), ("n", 1, 9.0)])
    text = b"".join(readings_csv.csv_chunks(store, "d", ["m", "n"], slice_rows=2,
                                            time_format="epoch_ns")).decode()
    lines = text.splitlines()
    assert lines[0] == "time,m,n" and lines[-1] == "2,2.0,"
    assert sorted(lines[1:3]) == ["1,1.0,9.0", "1,1.5,"] or sorted(lines[1:3]) == [
        "1,1.0,", "1,1.5,9.0"]


def _stream(text_chunks: Iterator[bytes]) -> str:
    return b"".join(text_chunks).decode()


def test_memory_is_one_slice_per_metric_however_long_the_history() -> None:
    """The chunks are made lazily: taking the header reads one slice per metric, not the
    history."""
    rows = [(m, t, float(t)) for m in ("a", "b") for t in range(1000)]
    store = _ListStore(rows)
    chunks = readings_csv.csv_chunks(store, "d", ["a", "b"], slice_rows=10)
    assert next(chunks) == b"time,a,b\n" and store.calls == 2
    rest = _stream(chunks)
    assert rest.count("\n") == 1000 and store.calls > 200


def test_wide_time_column_moves_aside_for_a_metric_named_time(tmp_path: Path) -> None:
    """The clock column stays ``time`` (what ``detect`` and ``quality`` read as the
    clock); a metric named ``time`` is written as ``time_``, and ``time__`` when a metric
    is named ``time_`` already; one a CSV reader takes for an earlier column (spaces around
    a name do not count) gets a ``_`` too."""
    from edgewise.server.readings_csv import csv_chunks
    from edgewise.store import open_store
    from edgewise.store.base import Reading

    store = open_store("duckdb://:memory:")
    try:
        store.append([Reading("p", "time", 1_000_000_000, 5.0),
                      Reading("p", "temp", 1_000_000_000, 20.5),
                      Reading("q", "time", 1_000_000_000, 5.0),
                      Reading("q", "time_", 1_000_000_000, 6.0),
                      Reading("q", "time ", 1_000_000_000, 7.0)])
        text = b"".join(csv_chunks(store, "p", ["temp", "time"],
                                   time_format="epoch_s")).decode()
        both = b"".join(csv_chunks(store, "q", ["time", "time ", "time_"],
                                   time_format="epoch_s")).decode()
    finally:
        store.close()
    header, row = text.splitlines()
    assert header == "time,temp,time_"
    assert row == "1,20.5,5.0"
    header, row = both.splitlines()
    assert header == "time,time__,time _,time_"
    assert row == "1,5.0,7.0,6.0"
    (tmp_path / "q.csv").write_text(both)  # as detect and quality read it: 'time' the clock
    df = read_table(tmp_path / "q.csv")
    assert find_time_column(df) == "time" and list(df["time_"]) == [6.0]


@pytest.mark.parametrize("metric", ["timestamp", "Timestamp", "date", "ts", "target", "label"])
def test_a_metric_named_like_a_clock_or_a_label_keeps_time_the_clock(
        tmp_path: Path, metric: str) -> None:
    """A metric named like a clock (``timestamp`` was taken for the clock before ``time``;
    ``date`` beside ``time`` made a date-and-time pair) or like a label (dropped as no
    metric) is written with ``_`` appended: ``quality`` and ``detect`` read the export's
    ``time`` as the clock and the metric as a metric."""
    from edgewise.server.readings_csv import csv_chunks
    from edgewise.store import open_store
    from edgewise.tables import not_a_metric

    t0 = 1_767_225_600 * 10**9
    store = open_store("duckdb://:memory:")
    try:
        store.append([Reading("p", m, t0 + i * 10**9, v) for i in range(5)
                      for m, v in ((metric, float((i * 7) % 13)), ("temp", 20.0 + i))])
        text = b"".join(csv_chunks(store, "p", sorted([metric, "temp"]))).decode()
    finally:
        store.close()
    (tmp_path / "p.csv").write_text(text)
    df = read_table(tmp_path / "p.csv")
    assert find_time_column(df) == "time"
    column = metric + "_"
    assert column in df.columns and not not_a_metric(column)
    assert list(df[column]) == [float((i * 7) % 13) for i in range(5)]
