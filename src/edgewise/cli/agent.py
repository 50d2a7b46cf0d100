"""``edgewise agent``: run the edge agent (local detection, store-and-forward, signed updates)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from edgewise.cli._app import NonBlankPath, app, fail


@app.command("agent")
def agent_cmd(
    gateway: Annotated[str, typer.Option(help=(
        "Gateway base URL, e.g. https://gw:8443 ('edgewise serve --tls-cert'). Plain "
        "http:// sends the device secret in clear: the agent warns unless the host is "
        "loopback."))],
    device: Annotated[str, typer.Option(help="This device's id.")],
    secret_file: Annotated[Path, typer.Option(help="File holding the device secret.")],
    source: Annotated[str, typer.Option(help="sim, csv:PATH or stdin.")] = "sim",
    state_dir: Annotated[Path, typer.Option(
        envvar="EDGEWISE_AGENT_DIR", help="Outbox, models and state.",
        click_type=NonBlankPath("a folder for the outbox, models and state, e.g. "
                                "edgewise-agent"))] = Path("edgewise-agent"),
    trust_key: Annotated[list[Path], typer.Option(
        help="Registry public key file (signing_key.pub); repeatable. The installed model "
        "runs only if one of them signed it (checked at each start). None: no updates, and "
        "the built-in detector runs.")] = [],  # noqa: B006
    group: Annotated[list[str], typer.Option(
        help="Group whose releases this device accepts; repeatable (the gateway offers it "
        "those of the groups set with 'edgewise device add/groups --group').")] = [],  # noqa: B006
    rate: Annotated[float, typer.Option(help="Readings per second (sim, csv).")] = 1.0,
    max_mb: Annotated[float, typer.Option(help="Outbox bound in MB (drop newest when full).")]
    = 256.0,
    limit: Annotated[int, typer.Option(help="Stop after N readings (0: run forever).")] = 0,
    update_interval: Annotated[float, typer.Option(help="Seconds between update checks.")] = 30.0,
    flush_timeout: Annotated[float, typer.Option(
        help="When the source ends, seconds to keep sending before exiting (the rest stays "
        "buffered).")] = 60.0,
    ca_file: Annotated[str, typer.Option(
        "--ca-file", envvar="EDGEWISE_CA_FILE", show_envvar=True, show_default=False,
        help="PEM CA bundle to check an https:// gateway's certificate with (a self-signed "
        "gateway, 'edgewise serve --tls-cert': its certificate); default: the system's "
        "CAs. Refused with an http:// gateway, which has no certificate to check.")] = "",
) -> None:
    """Run the agent until interrupted (or until --limit readings, then flush).

    Readings still unacknowledged when it ends are said in one line: an error (exit 1)
    where the gateway refused them (HTTP 401: the secret), else a warning (they stay in the
    outbox and the next run sends them). An http:// gateway on a host that is not loopback
    is warned about at start: the device secret and readings travel in clear."""
    import math
    import os
    import sqlite3

    from edgewise.edge.agent import Agent, check_source, load_trusted_key
    from edgewise.errors import ConfigError, PayloadError

    secret = _read_secret(secret_file)
    max_bytes = int(max_mb * 1024 * 1024) if math.isfinite(max_mb) and max_mb > 0 else 0
    if max_bytes < 1:
        raise fail(f"--max-mb must be a number of megabytes above 0 (the outbox bound; default "
                   f"256). Got {max_mb!r} instead.")
    _check_numbers(rate=rate, limit=limit, update_interval=update_interval,
                   flush_timeout=flush_timeout)
    from edgewise.telemetry import validate_device_id

    try:
        validate_device_id(device)
    except PayloadError as exc:
        raise fail(f"--device {device!r} is not a device id: it must be {exc.allowed}.") from None
    groups = _check_groups(group)
    _check_gateway(gateway)
    if ca_file and not gateway.startswith("https://"):
        raise fail(f"--ca-file (EDGEWISE_CA_FILE) checks an https:// gateway's certificate; "
                   f"the gateway {gateway!r} is plain http://, which has none: give its "
                   f"https:// URL, or leave --ca-file out.")
    verify = _tls_verify(ca_file)
    # every argument is checked before the state dir is made: a refused start leaves none
    keys: dict[str, bytes] = {}
    try:
        check_source(source)
        for k in trust_key:
            keys.update(load_trusted_key(k))
    except ValueError as exc:
        raise fail(str(exc)) from None
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"--state-dir {str(state_dir)!r} cannot be made: "
                   f"{exc.strerror or exc}.") from None
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise fail(f"--state-dir {str(state_dir)!r} is not writable; the agent keeps its "
                   "outbox and models there.")
    if (warning := _plain_http_warning(gateway)) is not None:
        typer.echo(warning, err=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        agent = Agent(gateway, device, secret, state_dir,
                      trusted_keys=keys, groups=groups, max_bytes=max_bytes,
                      update_interval_s=update_interval, verify=verify)
    except ConfigError as exc:  # the state dir belongs to another device
        raise fail(str(exc)) from None
    except (sqlite3.Error, OSError) as exc:  # read-only, full, or not ours to open
        raise fail(f"--state-dir {str(state_dir)!r} cannot be used: "
                   f"{getattr(exc, 'strerror', None) or exc} (its outbox.sqlite and models/ "
                   "must be readable and writable).") from None
    watch = _SendWatch()
    agent_log = logging.getLogger("edgewise.agent")
    agent_log.addHandler(watch)
    # a service manager's stop (systemd, docker: SIGTERM) ends the agent as Ctrl-C does,
    # so run() saves the local detectors' state on its way out (a plain SIGTERM killed it
    # where it stood: what the detectors learned since the last periodic save was lost)
    sigterm = _stop_on_sigterm()
    try:
        agent.run(source, rate_hz=rate, limit=limit or None, flush_timeout_s=flush_timeout)
    except KeyboardInterrupt:
        agent.stop()
        return  # stopped on purpose: what is buffered is sent by the next run
    except (OSError, ValueError) as exc:
        # the source refused mid-run (a UTF-16 file, a FIFO or folder put in its place):
        # one line naming it, what is buffered kept for the next run, no traceback
        agent.stop()
        raise fail(str(exc)) from None
    finally:
        agent_log.removeHandler(watch)
        if sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)
    _say_undelivered(agent, watch, flush_timeout)


def _stop_on_sigterm() -> Any:
    """Have SIGTERM raise :class:`KeyboardInterrupt` in this (the main) thread, as Ctrl-C
    does; return the handler it had, or ``None`` where signals cannot be set (not the
    main thread)."""
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, stop)


class _SendWatch(logging.Handler):
    """Keeps the agent's last failed send (its ``send_failed``, ``gateway_unreachable`` or
    ``gateway_certificate_unverified`` log event, of the sender: the readings' fate), to say
    why readings were not delivered. The update loop's events (``"loop": "updates"``) are
    not kept: its answers are not the readings' (a 401 to the model check was logged as the
    gateway being unreachable and, kept last, turned a refused secret's exit 1 into a
    warning and exit 0).

    >>> w = _SendWatch()
    >>> def said(event):
    ...     w.emit(logging.makeLogRecord({"msg": __import__("json").dumps(event)}))
    >>> said({"event": "send_failed", "status": 401})
    >>> said({"event": "gateway_unreachable", "loop": "updates", "detail": "HTTP 401"})
    >>> w.last
    {'event': 'send_failed', 'status': 401}
    """

    EVENTS = ("send_failed", "gateway_unreachable", "gateway_certificate_unverified")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.last: dict[str, Any] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        """Keep ``record`` if it is one of :data:`EVENTS` met by the sender; never raise."""
        import json

        try:
            event = json.loads(record.getMessage())
        except (ValueError, TypeError):
            return
        if (isinstance(event, dict) and event.get("event") in self.EVENTS
                and event.get("loop", "sender") == "sender"):
            self.last = event


def _say_undelivered(agent: Any, watch: _SendWatch, flush_timeout: float) -> None:
    """After a run that ended (the source's end or --limit, then the flush): if readings
    are still unacknowledged, say how many and why in one line. A gateway that refused
    them (a wrong secret: HTTP 401, or another refusal) ends the command with exit 1, as
    every refusal by the gateway does; an unreachable gateway leaves them buffered for the
    next run (store-and-forward), said in a warning."""
    try:
        left = len(agent.outbox)
    except Exception:  # the outbox cannot say: nothing to add to what the log said
        return
    if not left:
        return
    where = f"they stay in the outbox {str(agent.outbox.path)!r}"
    last = watch.last or {}
    status = last.get("status") if last.get("event") == "send_failed" else None
    detail = _problem_detail(str(last.get("detail") or ""))
    if status in (401, 403):
        raise fail(f"{left} readings not delivered: the gateway {agent.gateway} refused this "
                   f"device's credentials (HTTP {status}{': ' + detail if detail else ''}); "
                   f"{where}. Check that --secret-file holds the secret 'edgewise device add' "
                   f"printed for {agent.device_id!r} and that the device is still registered.",
                   code=1)
    if isinstance(status, int) and 400 <= status < 500 and status not in (413, 429):
        raise fail(f"{left} readings not delivered: the gateway {agent.gateway} refused them "
                   f"(HTTP {status}{': ' + detail if detail else ''}); {where}.", code=1)
    if last.get("event") == "gateway_certificate_unverified":
        why = "its TLS certificate did not verify (pass it, or its CA, with --ca-file)"
    elif last.get("event") == "gateway_unreachable":
        why = f"it could not be reached ({detail or 'no answer'})"
    elif status is not None:
        why = f"it answered HTTP {status}{': ' + detail if detail else ''}"
    else:
        why = f"it did not acknowledge them within --flush-timeout {flush_timeout:g} s"
    typer.echo(f"warning: {left} readings not delivered to the gateway {agent.gateway} yet: "
               f"{why}; {where} and are sent by the next run.", err=True)


def _problem_detail(text: str) -> str:
    """The ``detail`` of a gateway's problem JSON answer, else ``text`` as it is.

    >>> _problem_detail('{"title": "Unauthorized", "detail": "bad credentials"}')
    'bad credentials'
    >>> _problem_detail("[Errno 111] Connection refused")
    '[Errno 111] Connection refused'
    """
    import json

    try:
        problem = json.loads(text)
    except ValueError:
        return text.strip()
    if isinstance(problem, dict) and (problem.get("detail") or problem.get("title")):
        return str(problem.get("detail") or problem.get("title")).strip()
    return text.strip()


def _check_numbers(*, rate: float, limit: int, update_interval: float,
                   flush_timeout: float) -> None:
    """Refuse, in one line, numbers that would make the agent run wild: a rate of 0 or NaN
    read 'no pause' and buffered 529,000 readings a minute.

    >>> _check_numbers(rate=1.0, limit=0, update_interval=30.0, flush_timeout=60.0)
    >>> _check_numbers(rate=float("nan"), limit=0, update_interval=30.0, flush_timeout=60.0)
    Traceback (most recent call last):
    ...
    click.exceptions.Exit: 2
    """
    import math

    checks = [
        ("--rate", rate, rate > 0 and math.isfinite(rate), "readings per second above 0"),
        ("--limit", limit, limit >= 0, "a number of readings, 0 or more (0: run forever)"),
        ("--update-interval", update_interval, update_interval > 0 and math.isfinite(
            update_interval), "seconds above 0"),
        ("--flush-timeout", flush_timeout, flush_timeout >= 0 and not math.isnan(
            flush_timeout), "seconds, 0 or more"),
    ]
    for flag, value, ok, allowed in checks:
        if not ok:
            raise fail(f"{flag} must be {allowed}. Got {value!r} instead.")


def _check_groups(groups: list[str]) -> tuple[str, ...]:
    """The ``--group`` values, each checked by the gateway's own rule for a group name
    (:func:`edgewise.security.credentials.check_groups`), or a one-line refusal naming the
    value: ``line-a `` (a trailing blank or CR from a config file) was taken, and then every
    release for the group refused as ``wrong_device`` for ever.

    >>> _check_groups(["line-a", "line-b"])
    ('line-a', 'line-b')
    >>> _check_groups(["line-a "])
    Traceback (most recent call last):
    ...
    click.exceptions.Exit: 2
    """
    from edgewise.errors import InvalidParameterError
    from edgewise.security.credentials import check_groups

    try:
        check_groups(groups)
    except InvalidParameterError as exc:
        raise fail(f"--group: {exc}") from None
    return tuple(groups)


def _read_secret(path: Path) -> str:
    """The device secret in ``path``, or a one-line refusal: a missing, unreadable, empty or
    non-ASCII file would otherwise be a traceback, or a secret every request fails with
    (401 for ever).

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "secret"
    >>> _ = p.write_text("s3cr3t\\n")
    >>> _read_secret(p)
    's3cr3t'
    >>> _ = p.write_text("")
    >>> _read_secret(p)
    Traceback (most recent call last):
    ...
    click.exceptions.Exit: 2
    """
    where = f"--secret-file: Secret file {str(path)!r}"
    want = ("the secret 'edgewise device add' printed for this device, on one line")
    if path.is_dir():
        raise fail(f"{where} is a directory; give the file in it that holds {want}.")
    if not path.exists():
        raise fail(f"{where} does not exist; it must hold {want}.")
    if not path.is_file():
        raise fail(f"{where} is not a regular file; it must hold {want}.")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise fail(f"{where} cannot be read ({exc.strerror or exc}); it must hold "
                   f"{want}.") from None
    try:
        secret = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise fail(f"{where} is not a device secret: it holds bytes that are not ASCII "
                   f"text; it must hold {want}.") from None
    if not secret:
        raise fail(f"{where} is empty; it must hold {want}.")
    if not secret.isprintable() or any(c.isspace() for c in secret):
        raise fail(f"{where} is not a device secret: it holds blanks or control "
                   f"characters; it must hold {want}.")
    return secret


def _check_gateway(gateway: str) -> None:
    """Refuse, in one line, a ``--gateway`` that is not an http(s) URL with a host.

    >>> _check_gateway("http://gw:8080")
    >>> _check_gateway("http://gw:80800")
    Traceback (most recent call last):
    ...
    click.exceptions.Exit: 2
    >>> _check_gateway("http://")
    Traceback (most recent call last):
    ...
    click.exceptions.Exit: 2
    """
    import httpx

    if not gateway.startswith(("http://", "https://")):
        raise fail(f"--gateway must be the gateway's http:// or https:// URL (e.g. "
                   f"https://gw:8443). Got {gateway!r} instead.")
    try:
        url = httpx.URL(gateway)
        host, port = url.host, url.port
    except (httpx.InvalidURL, ValueError):
        host, port = "", None
    if not host:
        raise fail(f"--gateway must be a URL with a host (e.g. https://gw:8443). Got "
                   f"{gateway!r} instead.")
    if port is not None and not 1 <= port <= 65535:
        # httpx takes :99999 and the socket wraps it (to 34463): the agent sent its secret to
        # another port, or logged "unreachable" for ever
        raise fail(f"--gateway must have a port 1-65535 (e.g. https://gw:8443). Got "
                   f"{gateway!r}, port {port}.")


def _plain_http_warning(gateway: str) -> str | None:
    """The warning for a plain ``http://`` gateway on a host that is not loopback (the
    device secret, sent with every request, and the readings travel in clear); ``None``
    for ``https://`` or a loopback host.

    >>> _plain_http_warning("http://127.0.0.1:8080") is None
    True
    >>> _plain_http_warning("https://gw:8443") is None
    True
    >>> print(_plain_http_warning("http://gw:8080"))
    warning: the gateway http://gw:8080 is plain HTTP to a host that is not loopback: the device secret (sent with every request) and the readings travel in clear, for anyone on the network to read. Use its https:// URL ('edgewise serve --tls-cert'; --ca-file for a self-signed certificate).
    """  # noqa: E501
    import httpx

    from edgewise.config import is_loopback

    if not gateway.startswith("http://"):
        return None
    try:
        host = httpx.URL(gateway).host
    except (httpx.InvalidURL, ValueError):
        return None  # refused by _check_gateway already
    if is_loopback(host):
        return None
    return (f"warning: the gateway {gateway} is plain HTTP to a host that is not loopback: "
            f"the device secret (sent with every request) and the readings travel in "
            f"clear, for anyone on the network to read. Use its https:// URL ('edgewise "
            f"serve --tls-cert'; --ca-file for a self-signed certificate).")


def _tls_verify(ca_file: str) -> Any:
    """What checks an https:// gateway's certificate: True (the system's CAs), or an SSL
    context of the ``--ca-file`` bundle; a file that is no readable PEM CA bundle is
    refused in one line."""
    if not ca_file:
        return True
    import ssl

    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise fail(f"--ca-file (EDGEWISE_CA_FILE) must be a readable PEM CA bundle (for a "
                   f"self-signed gateway: its certificate). Got {ca_file!r}: "
                   f"{getattr(exc, 'strerror', None) or exc}.") from None
