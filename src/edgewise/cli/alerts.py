"""``edgewise alerts list|show|ack|label``: alerts of a running gateway, over its HTTP API.

The gateway holds its DuckDB file, so these commands never open the store: they are a thin
client of ``GET /v1/alerts``, ``GET /v1/alerts/{id}``, ``POST /v1/alerts/{id}/ack`` and
``POST /v1/alerts/{id}/label`` with an API token (``EDGEWISE_TOKEN``; ``--token`` works too
but shows in ``ps`` and shell history). Listing needs a *viewer* token, acknowledging and
labelling an *operator* one; the gateway audits what an operator does under the token's
name.

The gateway's address, token and certificate checks are those of every command over the
API (:mod:`edgewise.cli._gateway`): ``--gateway`` / ``EDGEWISE_GATEWAY_URL``, ``--ca-file``
/ ``EDGEWISE_CA_FILE``, and every refusal one line. The table shows ids shortened to 8
characters; ``show``, ``ack`` and ``label`` take a full id or a prefix of one that only one
listed alert has (at least 4 characters of it).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, NoReturn

import typer

from edgewise.cli._app import UTF8_TEXT, Json, app, fail
from edgewise.cli._gateway import (
    DEFAULT_GATEWAY,
    CaFile,
    Gateway,
    GatewayClient,
    Timeout,
    Token,
    one_line,
    quote_segment,
)

__all__ = ["alerts_app"]

alerts_app = typer.Typer(
    help="List, show, acknowledge and label a running gateway's alerts (over its HTTP API; "
         "token from EDGEWISE_TOKEN).",
    no_args_is_help=True,
)
app.add_typer(alerts_app, name="alerts")

#: Alerts asked for per page while listing (the API allows up to 10,000).
PAGE = 500
#: Of the list's table, how many of an alert's drivers are shown.
TOP_DRIVERS = 3
#: The fewest characters of an id taken as a prefix of one (the table shows 8).
MIN_PREFIX = 4

AlertId = Annotated[str, typer.Argument(
    help=f"The alert's id, or a prefix of it (at least {MIN_PREFIX} characters) only one "
         "listed alert has (as the list shows).",
    show_default=False, click_type=UTF8_TEXT)]


class Verdict(StrEnum):
    """A person's verdict on an alert."""

    true_alarm = "true_alarm"
    false_alarm = "false_alarm"


class Status(StrEnum):
    """An alert's status, as the list filters it."""

    open = "open"
    acknowledged = "acknowledged"


class Kind(StrEnum):
    """An alert's kind, as the list filters it (:data:`edgewise.alerts.KINDS`, not
    imported: this thin client leaves the detectors unloaded)."""

    anomaly = "anomaly"
    seq_gap = "seq_gap"


class _Client(GatewayClient):
    """The gateway's HTTP API, with alert ids that may be short.

    >>> _Client("ftp://gw", "t", "", 5.0)  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ...
    click.exceptions.Exit: 2
    """

    token_hint = "'edgewise token create --role viewer' (operator to ack or label)"

    def _unknown(self, alert_id: str) -> tuple[str, str]:
        """How a 404 for ``alert_id`` is told: ``(reason, line)`` for :meth:`call`."""
        line = (f"no alert {one_line(alert_id)!r} on the gateway at {self.shown}; list them "
                "with 'edgewise alerts list'.")
        return "unknown_alert", line

    def alert(self, alert_id: str, method: str = "GET", action: str = "",
              body: dict[str, Any] | None = None) -> dict[str, Any]:
        """``/v1/alerts/{id}{action}``; an id the gateway does not know is taken as a prefix
        of a listed alert's id, used when exactly one has it."""
        if not alert_id.strip() or alert_id in (".", ".."):
            # '.' and '..' would be dot segments of the URL: another route, not this id
            got = "an empty one" if not alert_id.strip() else f"{alert_id!r} instead"
            raise fail("ALERT_ID must be an alert's id, as 'edgewise alerts list' shows it. "
                       f"Got {got}.")
        resp = self.call(method, f"v1/alerts/{quote_segment(alert_id)}{action}", body=body,
                         missing=self._unknown(alert_id), unknown_ok=True)
        if resp is None:  # no alert has this id: a prefix of one?
            full = self._by_prefix(alert_id)
            resp = self.call(method, f"v1/alerts/{quote_segment(full)}{action}", body=body,
                             missing=self._unknown(full))
        alert = self.json(resp)
        if not isinstance(alert, dict):
            raise fail(f"the gateway at {self.shown} answered an alert that is not a JSON "
                       "object; is it an Edgewise gateway?", 1)
        return alert

    def _by_prefix(self, prefix: str) -> str:
        """The id of the one listed alert that starts with ``prefix``; one line otherwise."""
        if len(prefix) < MIN_PREFIX:
            raise fail(f"no alert {one_line(prefix)!r} on the gateway at {self.shown}, and "
                       f"a prefix of an id must be at least {MIN_PREFIX} characters (the "
                       "list shows 8); give more of it.", 1)
        matches: list[str] = []
        url: str | None = "v1/alerts"
        params: dict[str, Any] | None = {"limit": 10_000}
        while url:
            resp = self.call("GET", url, params=params)
            page = self.json(resp)
            matches += [a["id"] for a in page if isinstance(a, dict)
                        and str(a.get("id", "")).startswith(prefix)]
            url, params = self.next_page(resp), None
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise fail(f"ALERT_ID {prefix!r} is the start of {len(matches)} alerts' ids "
                       f"({', '.join(m[:12] + '…' for m in matches[:5])}); give more of it.")
        self._refuse_unknown(prefix)

    def _refuse_unknown(self, prefix: str) -> NoReturn:
        """Refuse an id the gateway does not know that is no live alert's prefix either
        (prefixes are matched against listed alerts only: a merged one is not listed)."""
        raise fail(f"no alert {one_line(prefix)!r} on the gateway at {self.shown}, and no "
                   "live alert's id starts with it (an alert merged into another is not "
                   "listed: give its full id); list them with 'edgewise alerts list'.", 1)


def _drivers(alert: dict[str, Any], top: int = TOP_DRIVERS) -> str:
    """An alert's strongest drivers, e.g. ``temp_c 90%, rpm 10%``.

    >>> _drivers({"drivers": {"a": 0.1, "b": 0.7, "c": 0.2, "d": 0.0}})
    'b 70%, c 20%, a 10%'
    """
    drivers = alert.get("drivers") or {}
    if not isinstance(drivers, dict):
        return ""
    ranked = sorted(((str(k), v) for k, v in drivers.items() if isinstance(v, (int, float))),
                    key=lambda kv: -abs(kv[1]))
    return ", ".join(f"{one_line(k)} {v:.0%}" for k, v in ranked[:top])


def _status(alert: dict[str, Any]) -> str:
    status = one_line(alert.get("status", ""))
    return f"{status} ({one_line(alert['label'])})" if alert.get("label") else status


def _score(alert: dict[str, Any]) -> str:
    score = alert.get("score")
    return f"{score:.2f}" if isinstance(score, (int, float)) else one_line(score)


def _start(alert: dict[str, Any]) -> str:
    """An alert's start to the second, e.g. ``2026-01-31T12:00:05Z`` (UTC, as the API).

    >>> _start({"start": "2026-01-31T12:00:05.250Z"})
    '2026-01-31T12:00:05Z'
    """
    start = one_line(alert.get("start") or "")
    return start[:19] + "Z" if len(start) > 19 and start.endswith("Z") else start


def _table(alerts: list[dict[str, Any]], more: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"{len(alerts)} alert{'s' if len(alerts) != 1 else ''}, newest first"
    table = Table(title=title + (" (more match: raise --limit)" if more else ""))
    for name in ("id", "device", "kind", "status", "start"):
        table.add_column(name, no_wrap=name != "device")
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("drivers")
    table.add_column("message")
    for a in alerts:
        table.add_row(one_line(a.get("id", ""))[:8], one_line(a.get("device_id", "")),
                      one_line(a.get("kind", "")), _status(a), _start(a), _score(a),
                      _drivers(a), one_line(a.get("message", "")))
    console = Console(highlight=False)
    if not console.is_terminal:  # piped: no terminal to fit, so no column is cut short
        console = Console(highlight=False, width=160)
    console.print(table, markup=False)


@alerts_app.command("list")
def alerts_list(
    gateway: Gateway = DEFAULT_GATEWAY,
    token: Token = "",
    ca_file: CaFile = "",
    device: Annotated[str, typer.Option("--device", help="Only this device's alerts.",
                                                    click_type=UTF8_TEXT)] = "",
    status: Annotated[Status | None, typer.Option(
        "--status", show_default=False, help="Only open or only acknowledged alerts.")] = None,
    kind: Annotated[Kind | None, typer.Option(
        "--kind", show_default=False, help="Only anomaly or only seq_gap alerts.")] = None,
    since: Annotated[str, typer.Option("--since", help="Only alerts whose span ends at or "
                                       "after this time (RFC 3339 or epoch seconds).",
                                       click_type=UTF8_TEXT)] = "",
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many alerts "
                                       "(pages of the API are followed up to it).")] = 100,
    as_json: Json = False,
    timeout: Timeout = 10.0,
) -> None:
    """List the gateway's live alerts, newest first (needs a viewer token).

    Example: EDGEWISE_TOKEN=… edgewise alerts list --status open --device pump-7
    """
    params = {k: v for k, v in {"device": device, "status": status.value if status else "",
                                "kind": kind.value if kind else "", "since": since}.items()
              if v}
    params["limit"] = min(limit, PAGE)
    alerts: list[dict[str, Any]] = []
    seen: set[str] = set()
    with _Client(gateway, token, ca_file, timeout) as gw:
        url: str | None = "v1/alerts"
        query: dict[str, Any] | None = params
        while url and len(alerts) < limit:
            resp = gw.call("GET", url, params=query)
            page = gw.json(resp)
            if not isinstance(page, list):
                raise fail(f"the gateway at {gw.shown} answered /v1/alerts with JSON that "
                           "is not a list; is it an Edgewise gateway?", 1)
            alerts += page
            url, query = gw.next_page(resp), None
            if url in seen:  # a gateway that links a page to itself would never end
                break
            seen.add(url or "")
    more = url is not None or len(alerts) > limit
    alerts = alerts[:limit]
    if as_json:
        typer.echo(json.dumps(alerts))
        return
    if not alerts:
        typer.echo("no alerts" + (" matching " + ", ".join(
            f"{k}={v}" for k, v in params.items() if k != "limit") if len(params) > 1 else ""))
        return
    _table(alerts, more)


@alerts_app.command("show")
def alerts_show(
    alert_id: AlertId,
    gateway: Gateway = DEFAULT_GATEWAY,
    token: Token = "",
    ca_file: CaFile = "",
    as_json: Json = False,
    timeout: Timeout = 10.0,
) -> None:
    """Show one alert with its explanation (needs a viewer token).

    Example: edgewise alerts show 9b1f2c3d
    """
    with _Client(gateway, token, ca_file, timeout) as gw:
        alert = gw.alert(alert_id)
    if as_json:
        typer.echo(json.dumps(alert))
        return
    if not isinstance(alert, dict):
        raise fail("the gateway answered an alert that is not a JSON object.", 1)
    rows = [("id", alert.get("id")), ("device", alert.get("device_id")),
            ("kind", alert.get("kind")), ("status", _status(alert)),
            ("start", alert.get("start")), ("end", alert.get("end")),
            ("score", _score(alert)), ("drivers", _drivers(alert, top=8)),
            ("message", alert.get("message")), ("acked by", alert.get("acked_by")),
            ("labelled by", alert.get("labelled_by")), ("note", alert.get("note")),
            ("merged into", alert.get("merged_into"))]
    explanation = alert.get("explanation")
    if isinstance(explanation, dict) and isinstance(explanation.get("top"), list):
        rows.append(("explanation", ", ".join(
            f"{one_line(t.get('name'))} {t.get('value'):+.3g}" for t in explanation["top"]
            if isinstance(t, dict) and isinstance(t.get("value"), (int, float)))))
    elif alert.get("explanation_detail"):
        rows.append(("explanation", alert.get("explanation_detail")))
    for name, value in rows:
        if value not in (None, ""):
            typer.echo(f"{name + ':':13}{one_line(value)}")


@alerts_app.command("ack")
def alerts_ack(
    alert_id: AlertId,
    gateway: Gateway = DEFAULT_GATEWAY,
    token: Token = "",
    ca_file: CaFile = "",
    as_json: Json = False,
    timeout: Timeout = 10.0,
) -> None:
    """Acknowledge an alert (needs an operator token; audited as alert.ack).

    Acknowledging twice keeps the first acknowledgement, which the answer names.
    Example: edgewise alerts ack 9b1f2c3d
    """
    with _Client(gateway, token, ca_file, timeout) as gw:
        alert = gw.alert(alert_id, "POST", "/ack")
    if as_json:
        typer.echo(json.dumps(alert))
        return
    typer.echo(f"alert {one_line(alert.get('id'))} acknowledged by "
               f"{one_line(alert.get('acked_by'))}")


@alerts_app.command("label")
def alerts_label(
    alert_id: AlertId,
    verdict: Annotated[Verdict, typer.Argument(help="true_alarm (a real problem) or "
                                               "false_alarm.", show_default=False)],
    note: Annotated[str | None, typer.Option("--note", help="Free text kept with the "
                                             "verdict (at most 2,000 characters).",
                                             click_type=UTF8_TEXT)] = None,
    gateway: Gateway = DEFAULT_GATEWAY,
    token: Token = "",
    ca_file: CaFile = "",
    as_json: Json = False,
    timeout: Timeout = 10.0,
) -> None:
    """Label an alert a true or false alarm (needs an operator token; audited as
    alert.label). Labelling also acknowledges an open alert and, for an anomaly alert,
    labels its span in the label store.

    Example: edgewise alerts label 9b1f2c3d false_alarm --note "sensor cleaned"
    """
    body: dict[str, Any] = {"label": verdict.value}
    if note is not None:
        body["note"] = note
    with _Client(gateway, token, ca_file, timeout) as gw:
        alert = gw.alert(alert_id, "POST", "/label", body)
    if as_json:
        typer.echo(json.dumps(alert))
        return
    window = alert.get("window_label")
    said = f" (note: {one_line(alert['note'])})" if alert.get("note") else ""
    if isinstance(window, dict):
        said += (f"; its span is labelled {one_line(window.get('label'))} "
                 f"(version {one_line(window.get('version'))})")
    typer.echo(f"alert {one_line(alert.get('id'))} labelled {one_line(alert.get('label'))} "
               f"by {one_line(alert.get('labelled_by'))}{said}")
