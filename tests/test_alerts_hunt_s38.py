"""Alerts hunt, session 38: a store error during a merge (no two listed alerts over one
span, readings counted once), verdicts taken up after a restart in the order given, a
metric that varied before an alert never called constant, a driver share that rounds to 0
left out, and the CLI's word on a merged alert's id prefix."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from edgewise.alerts import AlertManager, merge_drivers
from edgewise.cli import app, load_commands
from edgewise.cli.alerts import _drivers
from edgewise.errors import StoreError
from edgewise.explain.alerts import alert_explanation
from edgewise.store import open_store
from edgewise.store.base import Alert, Store
from tests.server.conftest import build_env, serve_in_thread

load_commands()

S = 10**9
T0 = 1_700_000_000 * S
DAY = 86400 * S


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store("duckdb://:memory:")
    yield s
    s.close()


class Flaky:
    """The store, whose ``merge_alert`` fails the next ``fail`` times (``after``: the
    failing call commits first, then raises, as a connection dropped after the commit)."""

    def __init__(self, real: Store, after: bool = False) -> None:
        self.real, self.after, self.fail, self.skip = real, after, 0, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def merge_alert(self, *a: Any, **k: Any) -> Alert:
        if self.skip:
            self.skip -= 1
        elif self.fail:
            self.fail -= 1
            if self.after:
                self.real.merge_alert(*a, **k)
            raise StoreError("connection dropped")
        return self.real.merge_alert(*a, **k)


def _spans(store: Store) -> list[tuple[int, int, dict[str, float]]]:
    return sorted(((x.start_ns - T0) // S, (x.end_ns - T0) // S, x.drivers)
                  for x in store.list_alerts("p"))


def _two_alerts(am: AlertManager) -> tuple[Alert, Alert]:
    """A: one temp reading at 0 s; B: five rpm readings at 100..104 s."""
    a = am.observe("p", T0, 0.95, {"temp": 1.0})
    b = am.observe("p", T0 + 100 * S, 0.95, {"rpm": 1.0})
    for k in range(1, 5):
        am.observe("p", T0 + (100 + k) * S, 0.95, {"rpm": 1.0})
    assert a is not None and b is not None
    return a, b


def test_a_merge_the_store_refused_is_retried_without_absorbing_twice(store: Store) -> None:
    """A run bridging A and B whose merge_alert fails (and fails again at the flush): the
    store keeps listing A and B as they were, never A widened over B beside B (the old code
    wrote A as 0..104 at the flush); the next reading stores the merge, and the alert counts
    its 8 readings once (the old code absorbed B again: 13 readings, rpm 10 of them)."""
    st = Flaky(store)
    am = AlertManager(st, write_every_s=0.0, merge_gap_s=60)  # type: ignore[arg-type]
    a, b = _two_alerts(am)
    st.fail = 2
    with contextlib.suppress(StoreError):  # the old code raised it out of observe_many
        am.observe_many("p", [(T0 + 50 * S, 0.95, {"temp": 1.0})])
    am.flush(force=True)
    assert _spans(store) == [(0, 0, {"temp": 1.0}), (100, 104, {"rpm": 1.0})]
    am.observe_many("p", [(T0 + 51 * S, 0.95, {"temp": 1.0})])
    am.flush(force=True)
    assert _spans(store) == [(0, 104, {"rpm": 0.625, "temp": 0.375})]
    assert store.get_alert(b.id).merged_into == a.id
    (state,) = am.held_state().values()
    assert state[2] == 8 and state[3] == {"temp": 3.0, "rpm": 5.0}


def test_a_merge_that_raised_after_committing_is_not_merged_twice(store: Store) -> None:
    """The merge committed, then the connection dropped: the flush finds it stored and
    writes the widened span, with no second merge (which the store refuses)."""
    st = Flaky(store, after=True)
    am = AlertManager(st, write_every_s=0.0, merge_gap_s=60)  # type: ignore[arg-type]
    a, b = _two_alerts(am)
    st.fail = 1
    (got,) = am.observe_many("p", [(T0 + 50 * S, 0.95, {"temp": 1.0})])
    assert got.id == a.id
    am.flush(force=True)
    assert _spans(store) == [(0, 104, {"rpm": 0.7143, "temp": 0.2857})]
    assert store.get_alert(b.id).merged_into == a.id
    assert not any(h.pending() for held in am._held.values() for h in held)


def test_a_run_bridging_three_alerts_whose_second_merge_fails(store: Store) -> None:
    """A, B, C bridged at once; B's merge is stored, C's fails: A is listed over A and B
    only (never over C while C is listed) until the flush stores C's merge with the whole
    span."""
    st = Flaky(store)
    am = AlertManager(st, write_every_s=0.0, merge_gap_s=60)  # type: ignore[arg-type]
    a = am.observe("p", T0, 0.95, {"temp": 1.0})
    b = am.observe("p", T0 + 100 * S, 0.95, {"rpm": 1.0})
    c = am.observe("p", T0 + 200 * S, 0.95, {"rpm": 1.0})
    assert a and b and c
    st.skip, st.fail = 1, 1
    am.observe_many("p", [(T0 + k * S, 0.95, {"temp": 1.0}) for k in (50, 150)])
    listed = _spans(store)
    assert [x[:2] for x in listed] == [(0, 100), (200, 200)]
    assert store.get_alert(b.id).merged_into == a.id
    am.flush(force=True)
    assert [x[:2] for x in _spans(store)] == [(0, 200)]
    assert store.get_alert(c.id).merged_into == a.id


def test_a_restart_replays_verdicts_in_the_order_given(store: Store) -> None:
    """Y (newer) labelled a true alarm, then X (older) a false alarm: the bar X set is in
    effect live, and after a restart too (the old code replayed by the alerts' ends, Y's
    true alarm last, and dropped the bar)."""
    t0 = time.time_ns() - 5 * DAY
    am = AlertManager(store, feedback=True, write_every_s=0.0)
    x = am.observe("pump-1", t0, 0.95, {"temp": 1.0})
    y = am.observe("pump-1", t0 + DAY, 0.96, {"temp": 1.0})
    assert x and y
    am.flush(force=True)
    am.label(y.id, "true_alarm", by="ops")
    am.label(x.id, "false_alarm", by="ops")
    probe = t0 + 2 * DAY
    live = am.bar("pump-1", "temp", probe)
    assert live is not None
    assert AlertManager(store, feedback=True).bar("pump-1", "temp", probe) == live


def test_a_restart_orders_a_verdict_a_merge_carried_over_by_when_it_was_given(
        store: Store) -> None:
    """Y labelled a false alarm, then X a true alarm, and X merged into the unlabelled S
    (ending before Y), which takes X's verdict: the true alarm, given last, removes the bar
    live, and after a restart as well (the old code replayed S first: the bar stayed)."""
    t0 = time.time_ns() - 5 * DAY
    add = store.add_alert
    s = add(Alert("pump-1", t0, t0 + 10 * S, 0.95, drivers={"temp": 1.0}))
    x = add(Alert("pump-1", t0 + 20 * S, t0 + 20 * S, 0.95, drivers={"temp": 1.0}))
    y = add(Alert("pump-1", t0 + DAY, t0 + DAY, 0.96, drivers={"temp": 1.0}))
    am = AlertManager(store, feedback=True)
    am.label(y.id, "false_alarm", by="ops")
    assert am.bar("pump-1", "temp", t0 + 2 * DAY) is not None
    am.label(x.id, "true_alarm", by="ops")
    assert am.bar("pump-1", "temp", t0 + 2 * DAY) is None
    merged = store.merge_alert(x.id, s.id, end_ns=t0 + 20 * S)
    assert merged.label == "true_alarm" and merged.end_ns < y.end_ns
    assert AlertManager(store, feedback=True).bar("pump-1", "temp", t0 + 2 * DAY) is None


def test_constant_before_is_decided_from_the_reference_alone() -> None:
    """temp_c varied (sd 0.001) before the alert; its error code 65535 in the alert must not
    make it look constant (the old code named it, judging in units of a spread that held
    the alert's own reading). A metric that truly was constant is still named."""
    rng = np.random.default_rng(1)
    rows: list[tuple[str, int, float]] = []
    for t in range(200):
        rows += [("temp_c", t, 20.0 + 0.001 * rng.normal()), ("flow", t, 5.0 + rng.normal()),
                 ("rpm", t, 0.0)]
    rows += [("temp_c", 200, 65535.0), ("flow", 200, 5.0), ("rpm", 200, 0.0)]
    ex = alert_explanation(rows, 200, 200)
    assert ex.constant_before == [] and ex.top(1)[0][0] == "temp_c"
    rows[-1] = ("rpm", 200, 1500.0)
    assert alert_explanation(rows, 200, 200).constant_before == ["rpm"]


def test_a_driver_whose_share_rounds_to_0_is_left_out(store: Store) -> None:
    """rpm's share 0.00003 rounds to 0: not kept in the drivers, so the CLI never shows
    'rpm 0%' (the old code kept {'rpm': 0.0})."""
    assert merge_drivers({}, {"temp": 0.99, "rpm": 0.00003}) == {"temp": 1.0}
    a = AlertManager(store).observe("pump-1", T0, 0.99, {"temp_c": 0.99, "rpm": 0.00003})
    assert a is not None and a.drivers == {"temp_c": 1.0}
    assert _drivers(a.to_dict()) == "temp_c 100%"


def test_a_merged_alerts_prefix_is_refused_naming_live_alerts_and_the_full_id(
        data_dir: Path) -> None:
    """An id prefix is matched against listed alerts only: a merged alert's prefix is
    refused saying no live alert has it and that a merged alert needs its full id (the old
    line said only "no alert ... on the gateway", which the full id contradicts)."""
    gen = build_env(data_dir)
    env = next(gen)
    try:
        a = env.store.add_alert(Alert(env.device, T0, T0 + 10 * S, 0.95, drivers={"t": 1.0}))
        b = env.store.add_alert(Alert(env.device, T0 + 30 * S, T0 + 40 * S, 0.97))
        env.store.merge_alert(b.id, a.id, end_ns=T0 + 40 * S)
        runner = CliRunner(mix_stderr=False)
        with serve_in_thread(env.client.app) as port:
            environ = {"EDGEWISE_GATEWAY_URL": f"http://127.0.0.1:{port}",
                       "EDGEWISE_CA_FILE": None, "EDGEWISE_TOKEN": env.tokens["viewer"]}
            r = runner.invoke(app, ["alerts", "show", b.id[:6]], env=environ)
            assert r.exit_code == 1 and r.stdout == "", (r.stdout, r.stderr)
            line = r.stderr.strip()
            assert len(r.stderr.splitlines()) == 1 and f"no alert {b.id[:6]!r}" in line
            assert "no live alert's id starts with it" in line and "full id" in line, line
            r = runner.invoke(app, ["alerts", "show", b.id], env=environ)
            assert r.exit_code == 0 and a.id in r.stdout, r.stderr
    finally:
        gen.close()
