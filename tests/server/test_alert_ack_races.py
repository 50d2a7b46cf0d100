"""Acknowledging and labelling an alert while others act on it: one conditional write.

A bug hunt found the ack route reading the alert, checking its status and then writing
unconditionally: two operators acknowledging one alert at once were each told they
acknowledged it (and both audited), an ack racing a label answered two acknowledgers, and
an ack or label racing the gateway's merge of the alert was written onto the alert the
merge took out of the list (200, while the listed alert stayed open and unlabelled).
Also: a 20,000-character unknown id was echoed in full, and ``device=`` (empty) listed
nothing while an empty ``since=`` is no filter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from edgewise.label.store import LabelStore
from edgewise.store.base import Alert
from tests.server.conftest import Env, problem

S = 10**9


def _alert(env: Env, offset_s: int = 0) -> Alert:
    t0 = time.time_ns() - 600 * S + offset_s * S
    return env.store.add_alert(Alert(env.device, t0, t0 + 10 * S, 0.9, drivers={"x": 1.0}))


class _ReadTogether:
    """Holds a request's read of the alert until every request has read it or is done:
    what two HTTP threads under load do (both check before either writes). A request that
    reads nothing before it writes is not held, nor holds another."""

    def __init__(self, env: Env, alert_id: str, requests: int,
                 monkeypatch: pytest.MonkeyPatch) -> None:
        self.cond, self.seen, self.requests = threading.Condition(), 0, requests
        real = env.store.get_alert

        def get_alert(aid: str) -> Alert:
            out = real(aid)
            if aid == alert_id:
                self._arrive(wait=True)
            return out

        monkeypatch.setattr(env.store, "get_alert", get_alert)

    def _arrive(self, wait: bool) -> None:
        with self.cond:
            self.seen += 1
            self.cond.notify_all()
            if wait:
                self.cond.wait_for(lambda: self.seen >= self.requests, timeout=10)

    def run(self, calls: dict[str, Callable[[], Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}

        def one(name: str, call: Callable[[], Any]) -> None:
            try:
                out[name] = call()
            finally:
                self._arrive(wait=False)

        threads = [threading.Thread(target=one, args=kv) for kv in calls.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        return out


def _acks(env: Env, alert_id: str) -> list[str]:
    return [e.actor for e in env.security.audit_log(100)
            if e.action == "alert.ack" and e.target == alert_id]


def test_two_operators_acking_at_once_are_told_one_acknowledger(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Check two acks of one open alert, both reading it before either writes, answer the
    same acked_by (the stored one) and audit one acknowledgement."""
    a = _alert(env)
    second = {"Authorization": f"Bearer {env.security.create_token('operator', 'second-op')}"}
    out = _ReadTogether(env, a.id, 2, monkeypatch).run({
        "one": lambda: env.client.post(f"/v1/alerts/{a.id}/ack", headers=env.auth("operator")),
        "two": lambda: env.client.post(f"/v1/alerts/{a.id}/ack", headers=second),
    })
    assert [out[k].status_code for k in ("one", "two")] == [200, 200]
    stored = env.store.get_alert(a.id).acked_by
    told = {out[k].json()["acked_by"] for k in ("one", "two")}
    assert told == {stored}, f"the two operators were told {sorted(told)}; stored {stored!r}"
    assert len(_acks(env, a.id)) == 1, _acks(env, a.id)


def test_an_ack_racing_a_label_answers_one_acknowledger(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Check an ack and a label of one open alert at once agree on who acknowledged it."""
    a = _alert(env)
    labeller = {"Authorization": f"Bearer {env.security.create_token('operator', 'labeller')}"}
    out = _ReadTogether(env, a.id, 2, monkeypatch).run({
        "ack": lambda: env.client.post(f"/v1/alerts/{a.id}/ack", headers=env.auth("operator")),
        "label": lambda: env.client.post(f"/v1/alerts/{a.id}/label", headers=labeller,
                                         json={"label": "true_alarm"}),
    })
    stored = env.store.get_alert(a.id)
    assert (stored.status, stored.label) == ("acknowledged", "true_alarm")
    told = {out[k].json()["acked_by"] for k in ("ack", "label")}
    assert told == {stored.acked_by}, f"told {sorted(told)}; stored {stored.acked_by!r}"
    assert len(_acks(env, a.id)) == (1 if stored.acked_by == "test-operator" else 0)


def _merge_after_first_touch(env: Env, a: Alert, b: Alert,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway merges ``b`` into ``a`` right after the route's first store call on
    ``b`` returns (its check, or its conditional write)."""
    done: list[int] = []
    for name in ("get_alert", "acknowledge_alert"):
        real = getattr(env.store, name, None)
        if real is None:  # a store from before acknowledge_alert
            continue

        def wrapped(alert_id: str, *args: Any, _real: Any = real, **kw: Any) -> Any:
            out = _real(alert_id, *args, **kw)
            if alert_id == b.id and not done:
                done.append(1)
                env.store.merge_alert(b.id, a.id, end_ns=b.end_ns)
            return out

        monkeypatch.setattr(env.store, name, wrapped)


@pytest.mark.parametrize("action", ["ack", "label"])
def test_a_verdict_racing_a_merge_reaches_the_listed_alert(
    env: Env, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    """Check an ack or label of B, with the merge of B into A landing right after the
    route's first look at B, ends on the listed alert A (written on B first, carried over
    by the merge), not only on B, which is no longer listed."""
    a, b = _alert(env), _alert(env, 50)
    _merge_after_first_touch(env, a, b, monkeypatch)
    kw: dict[str, Any] = {"json": {"label": "false_alarm"}} if action == "label" else {}
    r = env.client.post(f"/v1/alerts/{b.id}/{action}", headers=env.auth("operator"), **kw)
    assert r.status_code in (200, 409), r.text
    listed = env.client.get("/v1/alerts", headers=env.auth("viewer")).json()
    assert [x["id"] for x in listed] == [a.id]
    got = listed[0]["label"] if action == "label" else listed[0]["status"]
    want = "false_alarm" if action == "label" else "acknowledged"
    if r.status_code == 200:
        assert got == want, f"{action} of {b.id} answered 200 but listed alert {a.id} has {got!r}"


@pytest.mark.parametrize("action", ["ack", "label"])
def test_a_merge_just_before_the_write_is_a_409_and_writes_nothing(
    env: Env, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    """Check an ack or label of B whose merge into A lands just before the write answers
    409 merged_alert naming A, as for an alert merged before the request, and writes
    nothing: B and A stay open and unlabelled, no audit entry, no window label."""
    a, b = _alert(env), _alert(env, 50)
    real = env.store.acknowledge_alert

    def merge_first(alert_id: str, *args: Any, **kw: Any) -> Any:
        if alert_id == b.id and env.store.get_alert(b.id).merged_into is None:
            env.store.merge_alert(b.id, a.id, end_ns=b.end_ns)
        return real(alert_id, *args, **kw)

    monkeypatch.setattr(env.store, "acknowledge_alert", merge_first)
    kw: dict[str, Any] = {"json": {"label": "true_alarm"}} if action == "label" else {}
    body = problem(env.client.post(f"/v1/alerts/{b.id}/{action}",
                                   headers=env.auth("operator"), **kw), 409)
    assert body["reason"] == "merged_alert" and body["merged_into"] == a.id, body
    for x in (a.id, b.id):
        got = env.store.get_alert(x)
        assert (got.status, got.acked_by, got.label) == ("open", None, None), got
    assert not [e for e in env.security.audit_log(100) if e.target == b.id]
    assert LabelStore(env.settings.data_dir).history(env.device) == []


def test_racing_acks_over_http_audit_one(env: Env) -> None:
    """Check 4 operators acknowledging one alert at once, over 10 rounds, are always told
    one acknowledger, and each alert gets one alert.ack audit entry."""
    heads = [{"Authorization": f"Bearer {env.security.create_token('operator', f'op{i}')}"}
             for i in range(4)]
    for _ in range(10):
        a = _alert(env)
        barrier, answers = threading.Barrier(4), []

        def ack(h: dict[str, str], aid: str = a.id, bar: Any = barrier,
                got: list[Any] = answers) -> None:
            bar.wait(10)
            got.append(env.client.post(f"/v1/alerts/{aid}/ack", headers=h).json()["acked_by"])

        threads = [threading.Thread(target=ack, args=(h,)) for h in heads]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(set(answers)) == 1 and len(answers) == 4, answers
        assert len(_acks(env, a.id)) == 1, _acks(env, a.id)


def test_an_unknown_long_id_is_not_echoed_in_full(env: Env) -> None:
    """Check a 20,000-character unknown alert id is cut in the 404 (as a bad cursor is)."""
    long = "a" * 20_000
    for r in (env.client.get(f"/v1/alerts/{long}", headers=env.auth("viewer")),
              env.client.post(f"/v1/alerts/{long}/ack", headers=env.auth("operator"))):
        body = problem(r, 404)
        assert len(r.content) < 2000, len(r.content)
        assert body["value"] == "a" * 40 + "... (20000 characters)", body["value"]
        assert body["reason"] == "unknown_alert"
    short = problem(env.client.get("/v1/alerts/nope", headers=env.auth("viewer")), 404)
    assert short["value"] == "nope" and "'nope'" in short["detail"]


def test_an_empty_filter_is_no_filter(env: Env) -> None:
    """Check device=, kind= and status= (empty) list every alert, as since= and cursor= do."""
    ids = {_alert(env, k).id for k in range(3)}
    for q in ("device=", "kind=", "status=", "since=", "cursor=", "device=&kind=&status="):
        r = env.client.get(f"/v1/alerts?{q}", headers=env.auth("viewer"))
        assert r.status_code == 200, (q, r.text)
        assert {x["id"] for x in r.json()} == ids, q
    r = env.client.get("/v1/alerts?device=other", headers=env.auth("viewer"))
    assert r.json() == []
