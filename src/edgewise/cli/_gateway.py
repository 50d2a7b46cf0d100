"""A running gateway's HTTP API from the shell: what ``edgewise alerts`` and ``edgewise
readings`` share.

The gateway holds its DuckDB file, so these commands never open the store: they call the
API with a token (``EDGEWISE_TOKEN``; ``--token`` works too but shows in ``ps`` and shell
history). The gateway's address is ``--gateway``, else ``EDGEWISE_GATEWAY_URL``, else
``http://127.0.0.1:8080`` (the gateway's default port). An ``https://`` gateway's
certificate is checked against the system's CAs, or against ``--ca-file``
(``EDGEWISE_CA_FILE``) for a self-signed one.

Every refusal is one line on stderr: exit 2 for what is wrong on this side (no token, a
gateway URL that is not http(s), a CA file that cannot be read), exit 1 for what the gateway
answered or that it could not be reached.

>>> one_line("Alert 'x'\\nwas\\tmerged\\x1b[2J")
"Alert 'x' was merged [2J"
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from edgewise.cli._app import UTF8_TEXT, fail
from edgewise.config import MAX_WAIT_S, Settings, shown_url

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

__all__ = ["DEFAULT_GATEWAY", "MAX_TIMEOUT_S", "CaFile", "Gateway", "GatewayClient", "Timeout",
           "Token", "check_mqtt_option", "check_timeout", "one_line", "problem_reason",
           "quote_segment"]

#: Where the gateway listens when nothing says otherwise (its default HTTP port).
DEFAULT_GATEWAY = f"http://127.0.0.1:{Settings.http_port}"

Gateway = Annotated[str, typer.Option(
    "--gateway", envvar="EDGEWISE_GATEWAY_URL", show_envvar=True,
    help=f"The gateway's base URL (default: EDGEWISE_GATEWAY_URL, else {DEFAULT_GATEWAY}).",
    show_default=False, click_type=UTF8_TEXT)]
Token = Annotated[str, typer.Option(
    "--token", envvar="EDGEWISE_TOKEN", show_envvar=True, show_default=False,
    help="API token (prefer the EDGEWISE_TOKEN environment variable: an option shows in "
         "'ps' and shell history). Make one with 'edgewise token create --role viewer' "
         "(operator to ack or label alerts).")]
CaFile = Annotated[str, typer.Option(
    "--ca-file", envvar="EDGEWISE_CA_FILE", show_envvar=True, show_default=False,
    help="PEM CA bundle to check an https:// gateway's certificate with (a self-signed "
         "gateway); default: the system's CAs.")]
#: The longest ``--timeout``: the settings' longest wait (a day), far below
#: ``threading.TIMEOUT_MAX``, past which a wait raises OverflowError.
MAX_TIMEOUT_S = MAX_WAIT_S

Timeout = Annotated[float, typer.Option(
    "--timeout", min=0.1, help="Seconds to wait for the gateway per request (per chunk of "
                               f"a download), at most {MAX_TIMEOUT_S:g}.")]


def check_mqtt_option(mqtt: str) -> bool:
    """Whether ``mqtt`` (``--mqtt`` / ``EDGEWISE_MQTT``) names an external broker; a URL
    that is none (no ``mqtt://HOST``, a port out of range) raises
    :class:`~edgewise.errors.ConfigError` worded for the option, its password masked.

    >>> check_mqtt_option("embedded"), check_mqtt_option("mqtt://gw:pw@broker:1883")
    (False, True)
    >>> check_mqtt_option("mqtt://broker:99999")
    Traceback (most recent call last):
    ...
    edgewise.errors.ConfigError: --mqtt (EDGEWISE_MQTT) ...
    """
    from edgewise.errors import ConfigError
    from edgewise.transport.client import parse_mqtt_url

    if mqtt == "embedded":
        return False
    try:
        parse_mqtt_url(mqtt)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("Setting 'mqtt'", "--mqtt (EDGEWISE_MQTT)")
                          ) from None
    return True


def check_timeout(timeout: float) -> float:
    """``timeout`` (``--timeout``) when it is a finite number of seconds from 0.1 to
    :data:`MAX_TIMEOUT_S`; else one ``error:`` line and exit 2 (typer's ``min`` lets NaN,
    inf and 1e10 through, which ended in a traceback).

    >>> check_timeout(10.0)
    10.0
    >>> check_timeout(float("nan"))
    Traceback (most recent call last):
    ...
    click.exceptions.Exit: 2
    """
    import math

    if not (math.isfinite(timeout) and 0.1 <= timeout <= MAX_TIMEOUT_S):
        raise fail(f"--timeout must be a finite number of seconds from 0.1 to "
                   f"{MAX_TIMEOUT_S:g}. Got {timeout!r} instead.")
    return timeout


def one_line(text: Any) -> str:
    """``text`` on one line, without control characters (a gateway's answer is not trusted
    to leave the terminal alone).

    >>> one_line("a\\r\\nb")
    'a b'
    """
    cleaned = "".join(c if c.isprintable() else " " for c in str(text))
    return " ".join(cleaned.split())


def quote_segment(text: str) -> str:
    """``text`` as one URL path segment (a ``/`` in it escaped too).

    >>> quote_segment("pump 7/a")
    'pump%207%2Fa'
    """
    from urllib.parse import quote

    return quote(text, safe="")


def problem_reason(resp: httpx.Response) -> Any:
    """The ``reason`` of a problem+json answer (``None`` when it has none)."""
    try:
        body = resp.json()
    except ValueError:
        return None
    return body.get("reason") if isinstance(body, dict) else None


class GatewayClient:
    """The gateway's HTTP API with an API token; every failure ends the command in one line.

    ``token_hint`` ends the refusal of a missing token: which role the command needs.

    >>> GatewayClient("ftp://gw", "t", "", 5.0)  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ...
    click.exceptions.Exit: 2
    """

    token_hint = "'edgewise token create --role viewer'"

    def __init__(self, gateway: str, token: str, ca_file: str, timeout: float) -> None:
        import ssl

        import httpx

        check_timeout(timeout)
        url = (gateway or DEFAULT_GATEWAY).strip()
        # as every line shows it: a password in it (http://user:PASSWORD@host) masked
        shown = one_line(shown_url(url))
        if not url.startswith(("http://", "https://")):
            raise fail(f"--gateway (EDGEWISE_GATEWAY_URL) must be the gateway's http:// or "
                       f"https:// URL, e.g. {DEFAULT_GATEWAY}. Got {shown!r} instead.")
        try:
            base = httpx.URL(url.rstrip("/") + "/")
            if not base.host:
                raise ValueError("no host")
        except (httpx.InvalidURL, ValueError):
            raise fail(f"--gateway (EDGEWISE_GATEWAY_URL) must be a URL with a host, e.g. "
                       f"{DEFAULT_GATEWAY}. Got {shown!r} instead.") from None
        if base.port is not None and not 1 <= base.port <= 65535:
            # httpx takes :99999, and the socket wraps it (to 34463): another port's server
            raise fail(f"--gateway (EDGEWISE_GATEWAY_URL) must have a port 1-65535, e.g. "
                       f"{DEFAULT_GATEWAY}. Got {shown!r}, port {base.port}.")
        self.shown = one_line(shown_url(url.rstrip("/")))
        token = token.strip()
        if not token:
            raise fail("no API token: set EDGEWISE_TOKEN (or pass --token) to a token made "
                       f"with {self.token_hint}.")
        try:
            token.encode("ascii")
        except UnicodeEncodeError:
            raise fail("EDGEWISE_TOKEN (--token) is not an API token: it has characters "
                       "that are not ASCII. Set it to a token made with "
                       "'edgewise token create'.") from None
        verify: ssl.SSLContext | bool = True
        if ca_file:
            try:
                verify = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise fail(f"--ca-file (EDGEWISE_CA_FILE) must be a readable PEM CA bundle. "
                           f"Got {ca_file!r}: {one_line(exc)}.") from None
        self.base = base
        self.http = httpx.Client(
            base_url=base, timeout=timeout, verify=verify, follow_redirects=False,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def call(self, method: str, url: str, *, params: dict[str, Any] | None = None,
             body: dict[str, Any] | None = None, missing: tuple[str, str] | None = None,
             unknown_ok: bool = False) -> Any:
        """Send one request (``url`` relative to the gateway's base URL, or absolute on its
        origin); the answer when it is a 2xx, else end the command with one line.

        ``missing`` is ``(reason, line)``: a 404 with that problem ``reason`` ends the
        command with ``line`` (or answers ``None`` when ``unknown_ok``)."""
        resp = self._send(lambda: self.http.request(method, url, params=params, json=body))
        if resp.is_success:
            return resp
        if (unknown_ok and missing and resp.status_code == 404
                and problem_reason(resp) == missing[0]):
            return None
        self.refuse(resp, missing)

    def open_stream(self, url: str, *, params: dict[str, Any] | None = None,
                    missing: tuple[str, str] | None = None,
                    accept: str = "*/*") -> httpx.Response:
        """``GET url`` with its body left to read (``iter_bytes``; close the answer after);
        a refusal ends the command in one line as :meth:`call` does."""
        request = self.http.build_request("GET", url, params=params,
                                          headers={"Accept": accept})
        resp = self._send(lambda: self.http.send(request, stream=True))
        if resp.is_success:
            return resp
        import httpx

        try:
            resp.read()
        except httpx.HTTPError as exc:
            raise fail(f"the gateway at {self.shown} answered {resp.request.url.path} with "
                       f"HTTP {resp.status_code}, then broke off ({one_line(exc)}).",
                       1) from None
        finally:
            resp.close()
        self.refuse(resp, missing)

    def _send(self, send: Callable[[], httpx.Response]) -> httpx.Response:
        import httpx

        try:
            return send()
        except httpx.ConnectError as exc:
            why = one_line(exc)
            if "CERTIFICATE" in why.upper():
                raise fail(f"the gateway at {self.shown} presented a certificate that could "
                           f"not be verified ({why}); pass its CA certificate with --ca-file "
                           f"(EDGEWISE_CA_FILE).", 1) from None
            self._unreachable(why)
        except httpx.TimeoutException:
            self._unreachable(f"no answer within {self.http.timeout.read} s")
        except httpx.HTTPError as exc:
            self._unreachable(one_line(exc) or type(exc).__name__)

    def json(self, resp: httpx.Response) -> Any:
        """The JSON body of a 2xx answer; one line when it is not JSON."""
        try:
            return resp.json()
        except ValueError:
            raise fail(f"the gateway at {self.shown} answered {resp.request.url.path} with "
                       f"HTTP {resp.status_code} but not JSON; is {self.shown} an Edgewise "
                       "gateway (check --gateway / EDGEWISE_GATEWAY_URL)?", 1) from None

    def _unreachable(self, why: str) -> NoReturn:
        raise fail(f"cannot reach the gateway at {self.shown} ({why}); is 'edgewise serve' "
                   f"running there? Pass its address with --gateway or "
                   f"EDGEWISE_GATEWAY_URL.", 1)

    def refuse(self, resp: httpx.Response, missing: tuple[str, str] | None = None) -> NoReturn:
        """End the command with one line saying what the gateway's non-2xx answer means;
        ``missing`` as for :meth:`call`."""
        try:
            problem = resp.json()
        except ValueError:
            problem = None
        if not isinstance(problem, dict):
            problem = {}
        detail = one_line(problem.get("detail") or problem.get("title") or "")
        reason = problem.get("reason")
        status = resp.status_code
        if status == 401:
            raise fail(f"the gateway at {self.shown} refused the API token ({detail or 'HTTP 401'}"
                       f"); set EDGEWISE_TOKEN (or --token) to a valid token made with "
                       "'edgewise token create'.", 1)
        if status == 403:
            need = one_line(problem.get("allowed") or "")
            hint = (f" Use a token of role {need} (EDGEWISE_TOKEN)."
                    if problem.get("field") == "role" and need else "")
            raise fail(f"the gateway at {self.shown} refused this: {detail or 'HTTP 403'}"
                       f"{hint}", 1)
        if status == 404 and missing and reason == missing[0]:
            raise fail(missing[1], 1)
        if status == 404 or not problem:
            raise fail(f"the gateway at {self.shown} answered {resp.request.url.path} with "
                       f"HTTP {status}{': ' + detail if detail else ''}; is {self.shown} an "
                       "Edgewise gateway (check --gateway / EDGEWISE_GATEWAY_URL)?", 1)
        if status == 429 and resp.headers.get("Retry-After"):
            detail += f" Retry after {one_line(resp.headers['Retry-After'])} s."
        raise fail(f"the gateway at {self.shown} answered HTTP {status}"
                   f"{' (' + one_line(reason) + ')' if reason else ''}: {detail}", 1)

    def next_page(self, resp: httpx.Response) -> str | None:
        """The URL of the ``Link: <…>; rel="next"`` header, resolved against the request's
        URL; ``None`` on the last page. A link to another origin is refused: the token is
        sent only to the gateway it was given for."""
        link = resp.links.get("next", {}).get("url")
        if not link:
            return None
        url = resp.request.url.join(link)
        if (url.scheme, url.host, url.port) != (self.base.scheme, self.base.host,
                                                self.base.port):
            raise fail(f"the gateway at {self.shown} sent a next-page link to another "
                       f"origin ({one_line(url.scheme)}://{one_line(url.host)}); "
                       "not followed (the token goes to the gateway only).", 1)
        return str(url)
