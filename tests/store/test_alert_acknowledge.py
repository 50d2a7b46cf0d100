"""AlertManager.acknowledge on both stores: the first acknowledgement stays, also when two
acknowledge at once, and a merged alert is refused, naming the alert that covers it.

A bug hunt found it reading the alert, checking its status, then writing unconditionally
(two callers each told they acknowledged), and writing onto an alert a merge had taken out
of the list. The store's side (``acknowledge_alert``) is in the contract suite,
:func:`edgewise.checks.check_store_acknowledge_alert`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.alerts import AlertManager
from edgewise.errors import InvalidParameterError
from edgewise.store import open_store
from edgewise.store.base import Alert, Store
from tests.store.test_alert_merge_hunt import _BOTH, T0, _url

S = 10**9


@pytest.fixture(params=_BOTH)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store of each backend, closed afterwards."""
    opened = open_store(_url(request.param, tmp_path, request))
    yield opened
    opened.close()


def test_two_acknowledging_at_once_are_told_the_first(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Check two callers acknowledging one open alert, each reading it before either
    writes (held together where they read), get the same acked_by, the stored one."""
    a = store.add_alert(Alert("pump", T0, T0 + S, 0.9))
    am = AlertManager(store)
    cond, arrived = threading.Condition(), [0]
    real = store.get_alert

    def arrive(wait: bool) -> None:
        with cond:
            arrived[0] += 1
            cond.notify_all()
            if wait:
                cond.wait_for(lambda: arrived[0] >= 2, timeout=10)

    def get_alert(alert_id: str) -> Alert:
        out = real(alert_id)
        arrive(wait=True)  # until the other has read it too, or is done
        return out

    monkeypatch.setattr(store, "get_alert", get_alert)
    told: dict[str, str | None] = {}

    def ack(name: str) -> None:
        try:
            told[name] = am.acknowledge(a.id, by=name).acked_by
        finally:
            arrive(wait=False)

    threads = [threading.Thread(target=ack, args=(n,)) for n in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stored = real(a.id).acked_by
    assert len(told) == 2 and set(told.values()) == {stored}, (
        f"told {told}; stored {stored!r}")


def test_a_merged_alert_is_not_acknowledged(store: Store) -> None:
    """Check acknowledging an alert merged into another raises, naming that one, and
    writes nothing (the acknowledgement belongs on the alert that is listed)."""
    a = store.add_alert(Alert("pump", T0, T0 + S, 0.9))
    b = store.add_alert(Alert("pump", T0 + 5 * S, T0 + 6 * S, 0.9))
    store.merge_alert(b.id, into=a.id, end_ns=T0 + 6 * S)
    with pytest.raises(InvalidParameterError, match=f"merged into alert '{a.id}'"):
        AlertManager(store).acknowledge(b.id, by="ops")
    assert [(x.status, x.acked_by) for x in map(store.get_alert, (a.id, b.id))] == [
        ("open", None), ("open", None)]
    assert AlertManager(store).acknowledge(a.id, by="ops").acked_by == "ops"
