"""``edgewise readings export DEVICE``: a device's stored history as CSV, from a running
gateway over its HTTP API (``GET /v1/devices/{id}/readings.csv``, a *viewer* token).

The gateway holds the store, so this never opens it; the token, ``--gateway`` and
``--ca-file`` are those of ``edgewise alerts`` (:mod:`edgewise.cli._gateway`). The CSV feeds
``edgewise detect FILE --time-column time``, ``edgewise quality``, pandas and spreadsheets.

``--out FILE`` downloads into a hidden temporary file beside FILE and renames it to FILE
once the whole CSV has come, so a download that fails or is interrupted leaves no half
file (and an older FILE untouched); progress goes to stderr. ``--out -`` (the default)
writes to stdout as the CSV arrives. Every refusal is one line on stderr: exit 2 for what is
wrong here, 1 for what the gateway answered, that it could not be reached, or a download
that broke off.
"""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, NoReturn

import typer

from edgewise.cli._app import UTF8_TEXT, app, fail, out_path
from edgewise.cli._gateway import (
    DEFAULT_GATEWAY,
    CaFile,
    Gateway,
    GatewayClient,
    Timeout,
    Token,
    one_line,
    problem_reason,
    quote_segment,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["readings_app"]

readings_app = typer.Typer(
    help="A running gateway's stored readings (over its HTTP API; token from "
         "EDGEWISE_TOKEN).",
    no_args_is_help=True,
)
app.add_typer(readings_app, name="readings")

#: Seconds between progress lines on stderr when it is not a terminal.
PROGRESS_EVERY_S = 10.0


class Format(StrEnum):
    """The CSV's shape."""

    wide = "wide"
    long = "long"


class TimeFormat(StrEnum):
    """How the CSV writes times."""

    rfc3339 = "rfc3339"
    epoch_ns = "epoch_ns"
    epoch_s = "epoch_s"


class _ExportClient(GatewayClient):
    """The gateway client of an export: a 404 for a metric the device has never had
    (reason ``unknown_metric``) ends the command with the gateway's detail, which names the
    device's metrics (any other refusal as :meth:`GatewayClient.refuse` says it)."""

    def refuse(self, resp: httpx.Response, missing: tuple[str, str] | None = None) -> NoReturn:
        if resp.status_code == 404 and problem_reason(resp) == "unknown_metric":
            detail = one_line(resp.json().get("detail") or "")
            raise fail(f"--metric: the gateway at {self.shown} has no such metric: {detail}", 1)
        super().refuse(resp, missing)


class _Progress:
    """Rows and bytes so far, shown on stderr: redrawn on a terminal, else a line every
    ``PROGRESS_EVERY_S`` seconds."""

    def __init__(self, shown: bool) -> None:
        import sys

        self.shown = shown
        self.tty = shown and sys.stderr.isatty()
        self.rows = -1  # the header's newline is no row
        self.size = 0
        self.t0 = self.last = time.monotonic()

    def add(self, chunk: bytes) -> None:
        self.rows += chunk.count(b"\n")
        self.size += len(chunk)
        now = time.monotonic()
        if self.shown and now - self.last >= (0.5 if self.tty else PROGRESS_EVERY_S):
            self.last = now
            text = f"{max(self.rows, 0):,} rows, {self.size / 1e6:.1f} MB"
            typer.echo(f"\r{text}" if self.tty else text, err=True, nl=not self.tty)

    def done(self, what: str) -> None:
        if self.tty:
            typer.echo("\r\x1b[K", err=True, nl=False)
        secs = time.monotonic() - self.t0
        typer.echo(f"wrote {max(self.rows, 0):,} rows ({self.size / 1e6:.1f} MB) {what} in "
                   f"{secs:.1f} s", err=True)


def _copy(gw: GatewayClient, resp: httpx.Response, sink: IO[bytes],
          progress: _Progress) -> None:
    """Write the answer's body to ``sink``; one line (exit 1) when it breaks off."""
    import httpx

    last = b""
    try:
        for chunk in resp.iter_bytes():
            if chunk:
                sink.write(chunk)
                progress.add(chunk)
                last = chunk[-1:]
    except httpx.HTTPError as exc:
        raise fail(f"the download from the gateway at {gw.shown} broke off after "
                   f"{max(progress.rows, 0):,} rows ({one_line(exc) or type(exc).__name__})"
                   ".", 1) from None
    if last != b"\n":  # a CSV that came whole ends its last row
        raise fail(f"the download from the gateway at {gw.shown} broke off after "
                   f"{max(progress.rows, 0):,} rows (the CSV does not end with a whole "
                   "row).", 1)


def _mode(target: Path) -> int:
    """The permissions for the download: those of the file it replaces, else those of a
    new file (0666 less the umask)."""
    import os

    try:
        return target.stat().st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _to_file(gw: GatewayClient, resp: httpx.Response, target: Path, device: str) -> None:
    """Download into a temporary file beside ``target``, then rename it to ``target``;
    the temporary file is removed whatever goes wrong. A ``target`` that is no regular
    file (``/dev/null``, a FIFO) is written to as the CSV comes."""
    import os
    import tempfile

    if target.exists() and not target.is_file():  # /dev/null, a FIFO: written, never replaced
        progress = _Progress(shown=True)
        try:
            with target.open("wb") as sink:
                _copy(gw, resp, sink, progress)
        except OSError as exc:
            raise fail(f"--out {str(target)!r} cannot be written: {exc.strerror or exc}.",
                       1) from None
        progress.done(f"of {one_line(device)!r} to {str(target)!r}")
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part",
                                   dir=target.parent)
    except OSError as exc:
        raise fail(f"--out {str(target)!r} cannot be written: {exc.strerror or exc}.",
                   1) from None
    progress = _Progress(shown=True)
    done = False
    try:
        with os.fdopen(fd, "wb") as sink:
            try:
                os.fchmod(sink.fileno(), _mode(target))  # mkstemp made it 0600
                _copy(gw, resp, sink, progress)
                sink.flush()
                os.fsync(sink.fileno())
            except OSError as exc:
                raise fail(f"--out {str(target)!r} cannot be written: "
                           f"{exc.strerror or exc}.", 1) from None
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise fail(f"--out {str(target)!r} cannot be written: {exc.strerror or exc}.",
                       1) from None
        done = True
    finally:
        if not done:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    progress.done(f"of {one_line(device)!r} to {str(target)!r}")


def _to_stdout(gw: GatewayClient, resp: httpx.Response) -> None:
    import click

    sink = click.get_binary_stream("stdout")
    try:
        _copy(gw, resp, sink, _Progress(shown=False))
        sink.flush()
    except BrokenPipeError:  # a reader that stopped early (| head): nothing more to say
        import os
        import sys

        try:  # no second BrokenPipeError when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        raise typer.Exit(1) from None


def _out_file(out: str) -> Path:
    """``--out``'s file, refused (one line, exit 2) before the gateway is asked where it
    cannot be written (:func:`~edgewise.cli._app.out_path`) or its directory does not exist:
    a missing directory is more often a typo than a wish, so it is not made (as ``detect``,
    ``train``/``predict forecast`` and ``export`` refuse it too)."""
    parent = Path(out).parent
    if out.strip() and not parent.exists():  # checked first: out_path tries to make it
        raise fail(f"--out {out!r}: the directory {str(parent)!r} does not exist; create "
                   "it or give a path in an existing directory")
    return out_path("--out", out, folder=False, example="pump-7.csv",
                    what="a CSV file to write")


@readings_app.command("export")
def readings_export(
    device: Annotated[str, typer.Argument(help="The device's id (as GET /v1/devices lists "
                                          "it).", show_default=False,
                                          click_type=UTF8_TEXT)],
    metric: Annotated[str, typer.Option("--metric", help="Only this metric (default: "
                                        "all).", click_type=UTF8_TEXT)] = "",
    start: Annotated[str, typer.Option("--start", help="Range start, inclusive: RFC 3339 "
                                       "with an offset or epoch seconds (default: the "
                                       "first reading).", click_type=UTF8_TEXT)] = "",
    end: Annotated[str, typer.Option("--end", help="Range end, exclusive (default: after "
                                     "the last reading).", click_type=UTF8_TEXT)] = "",
    step: Annotated[str, typer.Option("--step", help="Average per bucket of this length, "
                                      "e.g. 60s, 5m, 1h (default: every reading).",
                                      click_type=UTF8_TEXT)] = "",
    form: Annotated[Format, typer.Option(
        "--format", help="wide: a column per metric, a row per time; long: "
                         "time,metric,value.")] = Format.wide,
    time_format: Annotated[TimeFormat, typer.Option(
        "--time-format", help="rfc3339 (UTC, nanoseconds), epoch_ns or epoch_s.")]
    = TimeFormat.rfc3339,
    out: Annotated[str, typer.Option("--out", "-o", help="CSV file to write (made whole "
                                     "or not at all), or - for stdout.")] = "-",
    gateway: Gateway = DEFAULT_GATEWAY,
    token: Token = "",
    ca_file: CaFile = "",
    timeout: Timeout = 60.0,
) -> None:
    """Export a device's readings as CSV from the running gateway (needs a viewer token).

    Example: EDGEWISE_TOKEN=… edgewise readings export pump-7 --start 2026-01-01T00:00:00Z
    --out pump-7.csv
    """
    if not device.strip():
        raise fail("DEVICE must be a device's id, as GET /v1/devices lists it. Got an empty "
                   "one.")
    target = None if out == "-" else _out_file(out)
    params = {k: v for k, v in {"metric": metric, "start": start, "end": end, "step": step,
                                "format": form.value, "time_format": time_format.value
                                }.items() if v}
    with _ExportClient(gateway, token, ca_file, timeout) as gw:
        unknown = (f"no device {one_line(device)!r} on the gateway at {gw.shown} (none is "
                   "registered or has data under that id); GET /v1/devices lists them.")
        resp = gw.open_stream(f"v1/devices/{quote_segment(device)}/readings.csv",
                              params=params, missing=("unknown_device", unknown),
                              accept="text/csv")
        try:
            kind = resp.headers.get("content-type", "")
            if not kind.startswith("text/csv"):
                raise fail(f"the gateway at {gw.shown} answered {resp.request.url.path} with "
                           f"{one_line(kind) or 'no content type'}, not CSV; is it an "
                           "Edgewise gateway (check --gateway / EDGEWISE_GATEWAY_URL)?", 1)
            if target is None:
                _to_stdout(gw, resp)
            else:
                _to_file(gw, resp, target, device)
        finally:
            resp.close()
