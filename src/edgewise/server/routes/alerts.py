"""Alerts: list and filter (viewer), acknowledge and label (operator).

Labels (``true_alarm`` / ``false_alarm``) are what later issues learn from: every label
keeps who gave it and an optional note.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from edgewise.server.deps import Operator, SecurityDep, StoreDep, Viewer
from edgewise.server.problems import Problem
from edgewise.server.query import format_ns, parse_instant

__all__ = ["alert_json", "router"]

router = APIRouter(tags=["alerts"])

STATUSES = ("open", "acknowledged")
AlertId = Annotated[str, Path(description="The alert id.")]


class LabelBody(BaseModel):
    """A person's verdict on an alert."""

    label: Literal["true_alarm", "false_alarm"] = Field(
        description="'true_alarm' (a real problem) or 'false_alarm'."
    )
    note: str | None = Field(default=None, max_length=2000, description="Free text.")


def alert_json(alert: Any) -> dict[str, Any]:
    """An alert as JSON, with RFC 3339 times beside the nanoseconds."""
    d = alert.to_dict()
    d["start"] = format_ns(alert.start_ns)
    d["end"] = format_ns(alert.end_ns)
    d["created"] = format_ns(alert.created_ns) if alert.created_ns else None
    return d


def _get(store: Any, alert_id: str) -> Any:
    try:
        return store.get_alert(alert_id)
    except KeyError:
        raise Problem(
            404, "Unknown alert", f"No alert with id {alert_id!r}.", field="alert_id",
            value=alert_id, allowed="an id listed by GET /v1/alerts", reason="unknown_alert",
        ) from None


@router.get("/v1/alerts", summary="List alerts, newest first (viewer)")
async def list_alerts(
    who: Viewer,
    store: StoreDep,
    device: Annotated[str | None, Query(description="Only this device's alerts.")] = None,
    status: Annotated[str | None, Query(description="'open' or 'acknowledged'.")] = None,
    kind: Annotated[str | None, Query(description="e.g. 'anomaly' or 'seq_gap'.")] = None,
    since: Annotated[
        str | None, Query(description="Only alerts whose span ends at or after this time "
                          "(RFC 3339 or epoch seconds).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="At most this many.")] = 100,
) -> list[dict[str, Any]]:
    if status is not None and status not in STATUSES:
        raise Problem(
            422, "Invalid query parameter",
            f"Query parameter 'status' must be one of {', '.join(STATUSES)}. "
            f"Got {status!r} instead.",
            field="status", value=status, allowed=" or ".join(STATUSES), reason="bad_status",
        )
    since_ns = parse_instant(since, "since")
    alerts = await run_in_threadpool(store.list_alerts, device, status, kind, since_ns, limit)
    return [alert_json(a) for a in alerts]


@router.get("/v1/alerts/{alert_id}", summary="One alert (viewer)")
def get_alert(alert_id: AlertId, who: Viewer, store: StoreDep) -> dict[str, Any]:
    return alert_json(_get(store, alert_id))


@router.post("/v1/alerts/{alert_id}/ack", summary="Acknowledge an alert (operator)")
def ack_alert(
    alert_id: AlertId, who: Operator, store: StoreDep, security: SecurityDep
) -> dict[str, Any]:
    """Mark the alert acknowledged by the caller; acknowledging twice keeps the first."""
    alert = _get(store, alert_id)
    if alert.status == "acknowledged":
        return alert_json(alert)
    alert = store.update_alert(alert_id, status="acknowledged", acked_by=who.name)
    security.audit(f"token:{who.name}", "alert.ack", alert_id, {"device": alert.device_id})
    return alert_json(alert)


@router.post("/v1/alerts/{alert_id}/label", summary="Label an alert true/false alarm (operator)")
def label_alert(
    alert_id: AlertId, body: LabelBody, who: Operator, store: StoreDep, security: SecurityDep
) -> dict[str, Any]:
    """Record the verdict (and note); labelling also acknowledges an open alert."""
    alert = _get(store, alert_id)
    changes: dict[str, Any] = {"label": body.label, "labelled_by": who.name, "note": body.note}
    if alert.status != "acknowledged":
        changes.update(status="acknowledged", acked_by=who.name)
    alert = store.update_alert(alert_id, **changes)
    security.audit(f"token:{who.name}", "alert.label", alert_id,
                   {"device": alert.device_id, "label": body.label})
    return alert_json(alert)
