"""``edgewise device …``, ``edgewise token …`` and ``edgewise audit verify``: credentials and
the audit log, while ``serve`` runs or not.

Credentials live in ``<data dir>/security.sqlite`` (SQLite in WAL mode), so these
commands work beside a running gateway.

``device delete`` revokes the device's credentials at once and withdraws the model releases
aimed at it (``device:<id>``; its groups' releases stay), then deletes its stored
readings, seqs, conflicts and alerts, its labels and the label and transfer model files
its data trained. An embedded
DuckDB store can be open in only one process: when a running gateway holds it, the command
still revokes the credentials, says that the data is kept, and exits with status 1; delete
the data with ``DELETE /v1/devices/<id>`` on the running gateway (admin token), or run the
command again once the gateway is stopped (it then deletes the data of the unregistered
device). It never makes a store to delete from: without ``--store`` it deletes from the
data directory's DuckDB file, and when there is none although a gateway has run on the
directory (so its data is in the store given to ``serve --store``), or the store's
deletion fails, the data is likewise kept, the id refused by ``device add``, and the
command exits with status 1 asking for ``--store``. Until the data is deleted the id stays
refused; an id with nothing registered or stored is refused with nothing made or audited.

``device rotate-secret --device ID`` gives a registered device a new secret, printed once;
the old one is refused at once (also by a running gateway), the device's data and groups stay.

``device add`` refuses an id whose data a store it can see (``--store``, else the data
directory's DuckDB file) still holds, as ``POST /v1/devices`` does (409 ``has_data``).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer

from edgewise._private import restrict_umask
from edgewise.cli._app import UTF8_TEXT, DataDir, Json, app, existing_data_dir, fail

# the roles as the HTTP API's token schema words them; importing the module adds about 6-9
# ms to CLI start (python -X importtime: edgewise.telemetry, its one heavy import, is loaded)
from edgewise.security.credentials import ROLES_DOC

if TYPE_CHECKING:
    from edgewise.config import Settings
    from edgewise.label.store import LabelsBusyError, LabelStore
    from edgewise.registry import Registry
    from edgewise.security import Security
    from edgewise.security.audit_syslog import ForwardedCheck
    from edgewise.store.base import Store

__all__ = ["audit_app", "device_app", "private_files", "token_app"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def private_files(command: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``command`` (a command that writes a store) with umask 077, as ``serve`` runs:
    what it makes (a DuckDB store's write-ahead log and spill files, a purge's copy, a
    repair's log) is its user's only, not 0644 under a shell's umask 022. The umask it had
    is given back when the command returns (a test's process goes on with its own).

    >>> @private_files
    ... def command() -> int:
    ...     mask = os.umask(0o022); os.umask(mask); return mask
    >>> old = os.umask(0o022)
    >>> oct(command()), oct(os.umask(old))
    ('0o77', '0o22')
    """

    @functools.wraps(command)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        old = restrict_umask()
        try:
            return command(*args, **kwargs)
        finally:
            os.umask(old)

    return run


device_app = typer.Typer(help="Register, list and delete devices; replace their secrets.",
                         no_args_is_help=True)
token_app = typer.Typer(help="API tokens for people and scripts.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log's hash chain.", no_args_is_help=True)
app.add_typer(device_app, name="device")
app.add_typer(token_app, name="token")
app.add_typer(audit_app, name="audit")

StoreUrl = Annotated[
    str,
    typer.Option("--store", envvar="EDGEWISE_STORE",
                 help="Store URL (default: the DuckDB file under the data directory)."),
]

MqttUrl = Annotated[
    str,
    typer.Option("--mqtt", envvar="EDGEWISE_MQTT",
                 help="The gateway's MQTT broker, as 'serve --mqtt' has it: with an external "
                 "broker (mqtt://HOST:PORT?prefix=…, mqtts://…?ca=/path/ca.pem for TLS) the "
                 "device's retained ack is cleared there.", click_type=UTF8_TEXT),
]


@contextmanager
def _security(data_dir: Path, unknown_id: bool = False,
              reads_only: bool = False) -> Iterator[Security]:
    """The data directory's credentials and audit log, closed after the block; a refused
    value (:class:`~edgewise.errors.InvalidParameterError`, and with ``unknown_id`` the
    ``KeyError`` of an id that is not there) ends the command with its message.

    A command that ``reads_only`` opens the file read-only where it cannot be written (a
    data dir on a read-only file system: a mounted snapshot or backup can be inspected);
    elsewhere as every command does. One that writes is refused there in one line naming
    the file (:class:`~edgewise.security.Security` says why)."""
    from edgewise.errors import InvalidParameterError
    from edgewise.security import Security
    from edgewise.security.credentials import cannot_write

    refused = (InvalidParameterError, KeyError) if unknown_id else (InvalidParameterError,)
    read_only = reads_only and cannot_write(Path(data_dir) / "security.sqlite") is not None
    sec = Security(data_dir, read_only=read_only)
    try:
        yield sec
    except refused as exc:
        raise fail(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from None
    finally:
        sec.close()


def _has_security(data_dir: Path) -> bool:
    """Whether the data dir has its credentials file; a listing reads it only then (and
    refuses a data dir that does not exist), so it never makes one."""
    return (existing_data_dir(data_dir) / "security.sqlite").is_file()


#: a device id or token name or id as an argument: text UTF-8 can encode (one line otherwise)
IdArg = Annotated[str, typer.Argument(click_type=UTF8_TEXT, show_default=False)]

Groups = Annotated[
    list[str],
    typer.Option("--group", help="A group the device is in (gets group:NAME model releases); "
                 "repeatable.", click_type=UTF8_TEXT),
]


def _check_group_option(groups: list[str]) -> None:
    """Refuse, in one line naming ``--group`` (exit 2), a group name no group can have."""
    from edgewise.errors import InvalidParameterError
    from edgewise.security.credentials import check_groups

    try:
        check_groups(groups)
    except InvalidParameterError as exc:
        raise fail(f"--group: {exc}") from None


@device_app.command("add")
def device_add(name: IdArg, data_dir: DataDir, group: Groups = [],  # noqa: B006
               store: StoreUrl = "", as_json: Json = False) -> None:
    """Register device NAME (in the --group groups) and print its secret (shown only once).

    Refused while the store (--store, else the data dir's DuckDB file) still holds data of a
    device of that id: delete it first with 'edgewise device delete NAME'.
    """
    from edgewise.security.credentials import check_device_name

    if store:  # a mistyped --store: it warned "could not check the store", then added the
        # device all the same (exit 0), unchecked for an old device's data under its id
        from edgewise.errors import StoreError
        from edgewise.store import check_store_url

        try:
            check_store_url(store)
        except StoreError as exc:
            raise fail(f"--store: {exc}") from None
    with _security(data_dir) as sec:
        check_device_name(name)  # first: a store is looked at only for a valid request
        _check_group_option(group)
        if not (sec.has_device(name) or sec.data_kept(name)):  # else add_device says why
            _refuse_stored_data(data_dir, store, name)
        device_id, secret = sec.add_device(name, groups=group, actor="cli")
        groups = sec.device_groups(device_id)
    if as_json:
        # "groups" always, [] for none, as 'device list --json' has it
        typer.echo(json.dumps({"id": device_id, "secret": secret, "groups": groups}))
        return
    typer.echo(f"device {device_id}" + (f" in groups {', '.join(groups)}" if groups else ""))
    typer.echo(f"secret {secret}")
    typer.echo("The secret is shown only now; only its hash is kept. Devices send it as "
               "'Authorization: Bearer <secret>' (HTTP) or as the MQTT password.", err=True)


@device_app.command("groups")
def device_groups(
    device_id: IdArg, data_dir: DataDir, group: Groups = [],  # noqa: B006
    clear: Annotated[bool, typer.Option("--clear", help="Take the device out of every group.")]
    = False,
    as_json: Json = False,
) -> None:
    """Print device DEVICE_ID's groups; with --group (or --clear), replace them first.

    The gateway serves a group:NAME model release only to devices put in that group here.
    """
    if group and clear:
        raise fail("Give either --group (the new groups) or --clear, not both.")
    _check_group_option(group)
    existing_data_dir(data_dir)  # no device is registered in a data dir that is not there
    with _security(data_dir, unknown_id=True) as sec:
        if not sec.has_device(device_id):
            raise fail(f"Device {device_id!r} is not registered; add it with: "
                       f"edgewise device add {device_id}")
        groups = (sec.set_device_groups(device_id, group, actor="cli") if group or clear
                  else sec.device_groups(device_id))
    if as_json:
        typer.echo(json.dumps({"id": device_id, "groups": groups}))
        return
    typer.echo(f"device {device_id}: " + (f"groups {', '.join(groups)}" if groups else "no groups"))


@device_app.command("rotate-secret")
def device_rotate_secret(
    device: Annotated[str, typer.Option(
        "--device", help="The registered device whose secret to replace.",
        click_type=UTF8_TEXT)],
    data_dir: DataDir, as_json: Json = False,
) -> None:
    """Give a registered device a new secret and print it (shown only once).

    The old secret stops working at once, also on a gateway running on the data dir (its
    MQTT connections made with the old secret are closed within a second or so); the
    device keeps its id, groups and stored data. Put the new secret on the device (its
    agent's --secret-file). Audited as device.rotate_secret.
    """
    if not device.strip():  # the hint would be "edgewise device add " with no id
        raise fail(f"--device {device!r} is empty or blank: give the id of a registered device, as "
                   "'edgewise device list' shows it.")
    existing_data_dir(data_dir)  # a mistyped one: no credentials file made there
    if not _has_security(data_dir):
        raise fail(f"Device {device!r} is not registered (no devices in "
                   f"{str(data_dir)!r}); add it with: edgewise device add {device}")
    with _security(data_dir, unknown_id=True) as sec:
        secret = sec.rotate_device_secret(device, actor="cli")
    if as_json:
        typer.echo(json.dumps({"id": device, "secret": secret}))
        return
    typer.echo(f"device {device}")
    typer.echo(f"secret {secret}")
    typer.echo("The new secret is shown only now; only its hash is kept. The old one is "
               "refused from now on: put this one on the device (the agent's --secret-file, "
               "or the MQTT password).", err=True)


@device_app.command("list")
def device_list(data_dir: DataDir, as_json: Json = False) -> None:
    """List registered devices (never their secrets)."""
    from edgewise.server.query import format_ns

    rows = []
    if _has_security(data_dir):  # nothing is made by a listing
        with _security(data_dir, reads_only=True) as sec:
            rows = sec.list_devices()
    if as_json:
        typer.echo(json.dumps([
            {"id": r.id, "name": r.name, "created": format_ns(r.created_ns),
             "failures": r.failures, "groups": list(r.groups)} for r in rows
        ]))
        return
    if not rows:
        typer.echo("no devices; add one with: edgewise device add NAME")
        return
    for r in rows:
        typer.echo(f"{r.id}\t{r.name}\t{format_ns(r.created_ns)}\tfailures={r.failures}"
                   f"\tgroups={','.join(r.groups) or '-'}")


@device_app.command("delete")
@private_files
def device_delete(
    device_id: IdArg, data_dir: DataDir, store: StoreUrl = "", mqtt: MqttUrl = "embedded",
    as_json: Json = False,
) -> None:
    """Revoke device DEVICE_ID's credentials and delete its stored data.

    If a gateway is running on the data dir (or holds the store), only the credentials are
    revoked (exit status 1), and the id cannot be added again until its data is deleted:
    use DELETE /v1/devices/ID on the gateway, or this command once the gateway is stopped.
    Without --store it deletes from the data dir's DuckDB file; if there is none although a
    gateway has run on the data dir, or deleting fails, the credentials are revoked and the
    data kept the same way (exit status 1): run it again with --store, the gateway's store.
    With an external MQTT broker (--mqtt / EDGEWISE_MQTT), the device's retained ack is
    cleared there, so a device registered again under the same id is not told the old
    watermark; without it, where a gateway ran on the data dir with one, a warning gives
    the command that clears it. Write-ahead logs 'edgewise repair' moved aside beside a
    DuckDB store still hold the readings logged before its crash: they are named, with how
    to remove them. If another writer ('edgewise label import') holds the label file past
    its busy timeout, the credentials are revoked and the readings deleted, but the labels
    kept (exit status 1, the id refused until they go): run the same command again.
    """
    from edgewise.config import Settings
    from edgewise.errors import StoreError
    from edgewise.gateway.presence import gateway_running
    from edgewise.label.store import LabelsBusyError

    existing_data_dir(data_dir)  # a mistyped one: no data dir, registry and store made there
    # only the settings a deletion uses: the data dir and store (options, so their variables
    # came through click); a gateway setting set wrong in this shell (EDGEWISE_HOST=,
    # EDGEWISE_RATE_LIMIT_PER_S=10s) is the gateway's, not the deletion's, and the saved
    # detector state is edited as it is, whatever detector the gateway ran with
    settings = Settings.load(env={}, data_dir=data_dir, store=store or None)
    _external_broker(mqtt)  # a bad --mqtt fails before anything is deleted
    if store:  # a mistyped --store too (it revoked the credentials, then refused the URL)
        from edgewise.store import check_store_url

        try:
            check_store_url(store)
        except StoreError as exc:
            raise fail(f"--store: {exc}") from None
    gateway_up = gateway_running(settings.data_dir)
    if gateway_up:
        # its memory (seq watermark, detectors) would outlive the data: leave it the
        # deletion, and keep the id from being registered again before it
        st, why_not = None, f"a gateway is running on {str(settings.data_dir)!r}"
    else:
        st, why_not = _existing_store(settings)
    try:
        has_data = False
        if st is not None:
            try:
                has_data = st.has_device_data(device_id)
            except StoreError as exc:
                st.close()
                st, why_not = None, str(exc)
        if not (_has_security(data_dir) or has_data or why_not):
            # nothing registered here and nothing stored: make nothing (no credentials
            # file, registry, store or audit entry) to say so; an unknown id is bad input
            # (exit 2), as 'device groups' and 'rotate-secret' refuse one
            raise fail(f"Device {device_id!r} is not registered and has no stored data.")
        with _security(data_dir) as sec, ExitStack() as opened:
            # every file this deletion changes is opened first: a damaged one (junk in
            # labels.sqlite or registry.sqlite) refuses before the credentials are revoked,
            # not after (the device revoked, its labels and releases left)
            label_store, reg = _open_label_store(settings.data_dir, sec), _open_registry(settings)
            for opened_file in (label_store, reg):
                if opened_file is not None:
                    opened.callback(opened_file.close)
            registered = sec.has_device(device_id)
            kept = sec.data_kept(device_id)  # an earlier deletion's data, not deleted yet
            if gateway_up and not (registered or kept):
                # the store cannot be seen: marking its data kept would refuse the id at
                # 'device add' for a typo (an id neither registered nor stored is refused
                # with nothing made or audited)
                raise fail(f"Device {device_id!r} is not registered; while the gateway runs, "
                           f"delete stored data with DELETE /v1/devices/{device_id}.", code=1)
            if kept and st is None and why_not is None:
                why_not = (f"no store at {_default_store(settings)}, where the data kept at "
                           f"an earlier deletion would be; pass --store with the URL the "
                           f"gateway runs with")
            at_stake = registered or kept or has_data or why_not is not None
            if at_stake:
                # first, as DELETE /v1/devices/{id} does: the deletion takes too long to
                # hold the audit log's write lock, so this entry says it was asked for
                # (nothing is done when it cannot be written), 'device.delete_data' at the
                # end what went
                sec.audit("cli", "device.delete_data.requested", device_id,
                          {"registered": registered})
                sec.keep_data(device_id)  # until its data is deleted, 'device add' refuses it
            if registered:
                sec.delete_device(device_id, actor="cli")
            releases = _withdraw_releases(reg, sec, device_id)
            # after the revocation: no ack follows
            ack = _clear_retained_ack(mqtt, device_id, settings.data_dir, at_stake)
            if why_not is not None:
                raise _data_not_deleted(device_id, registered, releases, why_not, as_json)
            rows, pending, purge_by_default = 0, False, True
            if st is not None:
                purge_by_default = bool(getattr(st, "PURGES_BY_DEFAULT", True))
                try:
                    _forget_detector_state(settings.data_dir, device_id, st)
                    rows = st.delete_device(device_id)
                    # DuckDB: True when its purge failed (the deletion stands; it logged
                    # why); PostgreSQL: True, as it never purges unasked (VACUUM FULL)
                    pending = getattr(st, "purge_pending", None) if rows else False
                except StoreError as exc:
                    raise _data_not_deleted(device_id, registered, releases, str(exc),
                                            as_json) from None
            labels = 0
            if label_store is not None:
                try:
                    labels = label_store.delete_device(device_id, who="cli")
                except LabelsBusyError as exc:  # a 'label import' holds the file
                    # the readings went: audited as the HTTP deletion audits them; the id
                    # stays refused (data kept) until a rerun deletes the labels
                    sec.audit("cli", "device.delete_data", device_id,
                              {"rows": rows, "labels_pending": True,
                               **({"purge_pending": True} if pending else {})})
                    raise _labels_not_deleted(
                        device_id, settings, bool(store), registered, releases, rows,
                        pending, purge_by_default, ack, exc, as_json) from None
            from edgewise.label.workflow import delete_models, delete_trained_models

            # the RUL and forecast models its stored data trained, by name, then the rest
            trained = delete_trained_models(settings.data_dir, device_id)
            models = len(trained) + delete_models(settings.data_dir, device_id)
            if not (at_stake or rows or labels or models or releases):
                raise fail(f"Device {device_id!r} is not registered and has no stored data.")
            sec.data_deleted(device_id)
            sec.audit("cli", "device.delete_data", device_id,
                      {"rows": rows, "labels": labels, "label_models": models,
                       **({"trained_models": trained} if trained else {}),
                       **({"purge_pending": True} if pending else {})})
    finally:
        if st is not None:
            st.close()
    broken = _broken_logs(settings.store_url, f"the readings of device {device_id!r}")
    if as_json:
        typer.echo(json.dumps({"id": device_id, "credentials_deleted": registered,
                               "rows_deleted": rows, "labels_deleted": labels,
                               "label_models_deleted": models,
                               "trained_models_deleted": trained, "releases_withdrawn": releases,
                               "purge_pending": pending,
                               **({} if ack is None else {"retained_ack_cleared": ack}),
                               **({"broken_logs": broken} if broken else {})}))
        return
    creds = "credentials revoked" if registered else "was not registered"
    typer.echo(f"device {device_id}: {creds}; {rows} stored rows and {labels} labels deleted"
               + (f"; {models} model files deleted (label, transfer, RUL and forecast models "
                  f"its data trained{': ' + ', '.join(trained) if trained else ''})"
                  if models else "")
               + (f"; {len(releases)} model releases withdrawn" if releases else "")
               + ("; retained ack cleared" if ack else "")
               + (_unpurged_note(settings, purge_by_default) if pending else ""))


def _unpurged_note(settings: Settings, purge_by_default: bool) -> str:
    """The end of ``device delete``'s line when the deleted rows' bytes stay in the store's
    files: DuckDB's purge failed (it is retried), or a PostgreSQL store, which never purges
    unasked (``VACUUM FULL`` locks its tables), whose owner runs ``store purge``."""
    from edgewise.store import shown_url

    if purge_by_default:
        return ("; the deleted rows' bytes stay in the store file until a purge succeeds "
                "(the next open of the store, or 'edgewise store purge')")
    return ("; the deleted rows' bytes stay in the store's table files (dead tuples) until "
            "they are purged: in a maintenance window (it locks the tables), run as their "
            f"owner: edgewise store purge --store '{shown_url(settings.store_url)}'")


def _broken_logs(store_url: str, whose: str) -> list[str]:
    """The write-ahead logs ``edgewise repair`` moved aside beside a DuckDB store
    (``<file>.wal.broken-<time>``): named on stderr, as still holding ``whose`` data logged
    before the crash, with the command that removes them; returned (as paths) for --json."""
    import shlex

    from edgewise.errors import StoreError
    from edgewise.store import duckdb_file
    from edgewise.store.duckdb import broken_logs

    try:
        path = duckdb_file(store_url)
    except StoreError:
        return []
    found = [str(p) for p in broken_logs(path)] if path is not None else []
    if found:
        typer.echo(
            f"note: {len(found)} write-ahead log(s) that 'edgewise repair' moved aside stay "
            f"beside the store, untouched by deletion and purge: {', '.join(found)}. They "
            f"still hold what the store logged before its crash, {whose} among it; remove "
            f"them once they are no longer needed: rm -- "
            + " ".join(shlex.quote(p) for p in found), err=True)
    return found


def _labels_not_deleted(device_id: str, settings: Settings, store_given: bool,
                        registered: bool, releases: list[int], rows: int, pending: bool,
                        purge_by_default: bool, ack: bool | None, exc: LabelsBusyError,
                        as_json: bool) -> typer.Exit:
    """Say what a deletion did whose readings went but whose labels did not (another
    writer, an ``edgewise label import``, held ``labels.sqlite`` past its busy timeout), as
    ``DELETE /v1/devices/ID``'s 503 does: the credentials revoked and rows deleted, the
    labels (and the model files they trained) kept, the id refused until a rerun of the
    command deletes them; return the Exit (status 1) to raise."""
    import shlex

    rerun = shlex.join(["edgewise", "device", "delete", device_id, "--data-dir",
                        str(settings.data_dir)]) + (" --store URL" if store_given else "")
    why = (f"the label file {str(exc.path)!r} is held by another writer (an 'edgewise label "
           f"import'?) past the busy timeout")
    broken = _broken_logs(settings.store_url, f"the readings of device {device_id!r}")
    if as_json:
        typer.echo(json.dumps({"id": device_id, "credentials_deleted": registered,
                               "rows_deleted": rows, "labels_deleted": None,
                               "labels_pending": True, "label_models_deleted": None,
                               "releases_withdrawn": releases, "purge_pending": pending,
                               "data_kept": True, "error": why, "rerun": rerun,
                               **({} if ack is None else {"retained_ack_cleared": ack}),
                               **({"broken_logs": broken} if broken else {})}))
    creds = "credentials revoked" if registered else "was not registered"
    typer.echo(
        f"error: device {device_id}: {creds}; {rows} stored rows deleted"
        + (f"; {len(releases)} model releases withdrawn" if releases else "")
        + ("; retained ack cleared" if ack else "")
        + f"; labels NOT deleted ({why}): the id cannot be added again until they are; "
        f"once the other writer is done, run again: {rerun}"
        + (" (URL: the --store given now)" if store_given else "")
        + (_unpurged_note(settings, purge_by_default) if pending else ""), err=True)
    return typer.Exit(1)


def _data_not_deleted(device_id: str, registered: bool, releases: list[int], why: str,
                      as_json: bool) -> typer.Exit:
    """Say that the device's stored data was not deleted (and why), and that it is kept:
    the id stays refused until it is; return the Exit (status 1) to raise."""
    if as_json:
        typer.echo(json.dumps({"id": device_id, "credentials_deleted": registered,
                               "rows_deleted": None, "releases_withdrawn": releases,
                               "error": why}))
    what = "credentials revoked" if registered else "device was not registered"
    typer.echo(
        f"error: {what}, but its stored data was NOT deleted: {why.rstrip('.')}. The data is "
        f"kept, and the id cannot be added again until it is deleted: if a gateway is "
        f"running, delete it with DELETE /v1/devices/{device_id} (admin token); else run "
        f"this command again once the store answers (with --store URL, the store the "
        f"gateway runs with).", err=True)
    return typer.Exit(1)


def _default_store(settings: Settings) -> Path:
    """The data directory's DuckDB file, the store when no --store is given."""
    return (settings.data_dir / "edgewise.duckdb").absolute()


def _gateway_ran(data_dir: Path) -> bool:
    """Whether a gateway has run on the data dir: it leaves its presence lock file (and
    its detector state) there."""
    from edgewise.gateway.presence import LOCK_NAME

    return (data_dir / LOCK_NAME).exists() or (data_dir / "detectors.pickle").exists()


def _existing_store(settings: Settings) -> tuple[Store | None, str | None]:
    """The store to delete from, opened, never made: ``(store, None)``; ``(None, why)``
    when the device's data may be in a store that cannot be opened or is elsewhere; and
    ``(None, None)`` when nothing can have been stored (no --store, no DuckDB file in the
    data dir, and no gateway has run on it)."""
    from edgewise.errors import StoreError
    from edgewise.store import duckdb_file, open_store, shown_url

    path = duckdb_file(settings.store_url)
    if path is not None and not path.is_file():
        if settings.store:
            return None, (f"no store at {path} (--store {shown_url(settings.store)} names a "
                          f"DuckDB file that does not exist); pass --store with the URL the "
                          f"gateway runs with")
        if _gateway_ran(settings.data_dir):
            return None, (f"no store at {path}, but a gateway has run on "
                          f"{str(settings.data_dir)!r}: its data is in the store it runs with; "
                          f"pass that --store URL (EDGEWISE_STORE), e.g. postgresql://…")
        return None, None
    try:
        return open_store(settings.store_url, create=False), None
    except StoreError as exc:
        return None, str(exc)


def _refuse_stored_data(data_dir: Path, store: str, name: str) -> None:
    """End ``device add`` (exit 2) when a store the CLI can see (``store``, else the data
    dir's DuckDB file when there is one) still holds data of a device ``name``, as ``POST
    /v1/devices`` refuses it (409 ``has_data``): a new device under the id would be
    acknowledged the old one's seq watermark and forget messages never stored."""
    from edgewise.config import Settings
    from edgewise.errors import StoreError
    from edgewise.gateway.presence import gateway_running
    from edgewise.store import duckdb_file, open_store, shown_url

    url = Settings(data_dir=data_dir, store=store).store_url
    path = duckdb_file(url)
    if path is not None and (not path.is_file() or gateway_running(data_dir)):
        return  # nothing stored there; or held by the gateway, whose deletions leave none
    try:
        st = open_store(url, create=False)
        try:
            has = st.has_device_data(name)
        finally:
            st.close()
    except StoreError as exc:
        typer.echo(f"warning: could not check the store for data of a device {name!r}: "
                   f"{exc}", err=True)
        return
    if has:
        again = f" --store {shown_url(store)}" if store else ""
        raise fail(f"Device {name!r} is not registered, but the store {shown_url(url)} still "
                   f"holds data of a device of that id (readings, seqs or alerts); it may "
                   f"belong to a device registered on another data dir serving the same store "
                   f"(gateways sharing a store must share one --data-dir). If it is no "
                   f"device's, delete it first with: edgewise device delete {name}{again}, or "
                   f"pick another name.")


def _open_label_store(data_dir: Path, sec: Security) -> LabelStore | None:
    """The data dir's label store, opened (a damaged file raises here), or ``None`` where
    it has none (none is made)."""
    from edgewise.label.store import LabelStore

    if not (data_dir / "labels.sqlite").exists():
        return None
    return LabelStore(data_dir, security=sec)


def _open_registry(settings: Settings) -> Registry | None:
    """The data dir's model registry, opened (a damaged file raises here), or ``None``
    where it has none (none is made: no registry, no release)."""
    from edgewise.registry import Registry

    if not (settings.data_dir / "registry" / "registry.sqlite").is_file():
        return None
    return Registry(settings.data_dir)


def _withdraw_releases(reg: Registry | None, sec: Security, device_id: str) -> list[int]:
    """Withdraw the model releases aimed at the device from ``reg`` (none: no registry), as
    ``DELETE /v1/devices/{id}`` does (the registry is SQLite in WAL mode: safe beside a
    running gateway)."""
    from edgewise.server.routes.devices import withdraw_releases

    if reg is None:
        return []
    return withdraw_releases(reg, sec, device_id, "cli")


def _external_broker(mqtt: str) -> bool:
    """Whether ``mqtt`` names an external broker (checked: a bad URL fails in one line)."""
    from edgewise.cli._gateway import check_mqtt_option
    from edgewise.errors import ConfigError

    try:
        return check_mqtt_option(mqtt)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def _clear_retained_ack(mqtt: str, device_id: str, data_dir: Path,
                        at_stake: bool) -> bool | None:
    """Clear the device's retained ack on an external broker; ``None`` for the embedded one
    (it retains no ack), else whether it was cleared (a one-line warning when not).

    Without a broker URL (``--mqtt`` / ``EDGEWISE_MQTT``) where the data dir shows that a
    gateway ran with an external broker (its MQTT client id file) and the device was
    registered or has data (``at_stake``), the ack is not cleared: a warning names the
    command that clears it, and the answer is False."""
    from edgewise.transport.client import CLIENT_ID_FILE

    if not _external_broker(mqtt):
        if not (at_stake and (data_dir / CLIENT_ID_FILE).is_file()):
            return None
        typer.echo(
            f"warning: a gateway ran on {str(data_dir)!r} with an external MQTT broker (its "
            f"client id file {CLIENT_ID_FILE!r} is there), and no broker was given (--mqtt "
            f"or EDGEWISE_MQTT): device {device_id!r}'s retained ack on that broker was NOT "
            "cleared, so a device registered again under the id would be told the old seq "
            "watermark and drop its messages up to it as acknowledged. Clear it with: "
            f"mosquitto_pub -h HOST -p PORT -r -n -t 'PREFIX/{device_id}/ack' (the broker "
            "of the gateway's --mqtt mqtt://HOST:PORT?prefix=PREFIX; PREFIX 'edgewise' when "
            "it gives none; add the broker's credentials and TLS options if it needs them); "
            "give --mqtt to 'device delete' to have it cleared at the deletion.", err=True)
        return False
    from edgewise.transport.client import clear_retained_ack, parse_mqtt_url

    try:
        clear_retained_ack(mqtt, device_id)
    except ConnectionError as exc:
        cfg = parse_mqtt_url(mqtt, load_ca=False)  # the CA may be what failed
        topic = f"{cfg['prefix']}/{device_id}/ack"
        typer.echo(f"warning: {exc} Clear it, once the broker answers, with: mosquitto_pub "
                   f"-h {cfg['host']} -p {cfg['port']} -r -n -t '{topic}' (add its credentials "
                   "and TLS options if it needs them).", err=True)
        return False
    return True


def _forget_detector_state(data_dir: Path, device_id: str, st: Store) -> None:
    """Drop the device from the detector state a stopped gateway saved in the data dir,
    so its next start does not score a re-registered device with the old state. Its held
    alerts are saved by alert id: those of the device are found in ``st`` (so call this
    before the store's deletion).

    The file is edited, not rebuilt: every other device's state stays, whatever detector
    scored it (a Pipeline built from this shell's settings dropped the streams of a
    detector given to the gateway as a flag). It is rewritten atomically, owner-only as the
    gateway writes it (:func:`~edgewise._private.write_private`); an unreadable one is
    left as it is, with a warning (the gateway, finding it
    unreadable, warms every stream up again: the device's old state does not come back).
    """
    import pickle

    from edgewise._private import write_private
    from edgewise.gateway.pipeline import drop_device_state

    path = data_dir / "detectors.pickle"
    if not path.exists():
        return
    try:
        with open(path, "rb") as f:
            state = pickle.load(f)  # the gateway's own file in the data directory
        if not isinstance(state, dict) or not isinstance(state.get("detectors"), dict):
            raise ValueError(f"not a saved detector state (a {type(state).__name__})")
    except Exception as exc:
        typer.echo(f"warning: detector state {str(path)!r} is unreadable ({exc!s:.200}); left "
                   f"as it is, without device {device_id!r} taken out (a gateway starting on "
                   f"it warms every stream up again).", err=True)
        return
    if not drop_device_state(state, device_id, _held_alerts_of(state, device_id, st)):
        return
    write_private(path, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))


def _held_alerts_of(state: dict[str, object], device_id: str, st: Store) -> list[str]:
    """The ids of the alerts held in a saved detector ``state`` (``alerts_held``, keyed by
    alert id) that are ``device_id``'s in the store ``st`` (one an id the store does not
    know is left: it names no device, and matches no stored alert at the next start)."""
    held = state.get("alerts_held")
    if not isinstance(held, dict):
        return []
    ids = []
    for alert_id in held:
        try:
            if st.get_alert(str(alert_id)).device_id == device_id:
                ids.append(str(alert_id))
        except KeyError:
            continue
    return ids


@token_app.command("create")
def token_create(
    data_dir: DataDir,
    role: Annotated[str, typer.Option(
        "--role", help=f"admin, operator or viewer. {ROLES_DOC}", click_type=UTF8_TEXT)],
    name: Annotated[str, typer.Option(
        "--name", help="Who or what will use it (default: the role): at most 64 characters, "
        "no control characters (tab, newline), not blank or only dashes, not 8 hex digits (a "
        "token id's form), not a name the gateway acts under (cli, demo, edgewise, "
        "federated, first-start, gateway, retention).", click_type=UTF8_TEXT)] = "",
    as_json: Json = False,
) -> None:
    """Create an API token with ROLE and print it (shown only this once).

    The name is at most 64 characters, as over HTTP, and never looks like a token id, so
    'token revoke' cannot take it for another token's id.
    """
    from edgewise.security import ROLE_RANK

    if role not in ROLE_RANK:  # before the data dir and its security.sqlite are made
        roles = sorted(ROLE_RANK, key=ROLE_RANK.__getitem__, reverse=True)
        raise fail(f"--role must be one of {', '.join(roles)}. Got {role!r}.")
    with _security(data_dir) as sec:
        token = sec.create_token(role, name, actor="cli")
        made = sec.authenticate_token(token)  # as stored, with its id (revoke --id takes it)
    if as_json:
        typer.echo(json.dumps({"token": token, "role": made.role, "name": made.name,
                               "id": made.token_id}))
        return
    typer.echo(token)
    typer.echo(f"API token with role {role!r}; shown only now. Send it as "
               "'Authorization: Bearer <token>' or paste it into the dashboard.", err=True)


@token_app.command("list")
def token_list(data_dir: DataDir, as_json: Json = False) -> None:
    """List API tokens: id, name, role, created (never the tokens themselves)."""
    from edgewise.server.query import format_ns

    rows = []
    if _has_security(data_dir):  # nothing is made by a listing
        with _security(data_dir, reads_only=True) as sec:
            rows = sec.list_tokens()
    if as_json:
        typer.echo(json.dumps([{"id": t.id, "name": t.name, "role": t.role,
                                "created": format_ns(t.created_ns)} for t in rows]))
        return
    if not rows:
        typer.echo("no API tokens; create one with: edgewise token create --role ROLE")
        return
    for t in rows:
        typer.echo(f"{t.id}\t{t.name}\t{t.role}\t{format_ns(t.created_ns)}")


@token_app.command("revoke")
def token_revoke(
    name_or_id: IdArg, data_dir: DataDir,
    by_id: Annotated[bool, typer.Option(
        "--id", help="NAME_OR_ID is a token id: never match it against names.")] = False,
    as_json: Json = False,
) -> None:
    """Revoke the API token NAME_OR_ID (its id from 'token list', or its name if only one
    token has it). A running gateway refuses it (401) from the next request on.

    Refused, revoking nothing, when the argument is one token's id and another's name
    (possible for names made before such names were refused): give the id with --id.
    """
    existing_data_dir(data_dir)  # no token was made in a data dir that is not there
    with _security(data_dir) as sec:
        tok = sec.revoke_token(name_or_id, actor="cli", by_id=by_id)
    if as_json:
        typer.echo(json.dumps({"id": tok.id, "name": tok.name, "role": tok.role,
                               "revoked": True}))
        return
    typer.echo(f"token {tok.id} ({tok.name}, role {tok.role}) revoked")


@audit_app.command("verify")
def audit_verify(
    data_dir: DataDir,
    expect: Annotated[str | None, typer.Option(
        "--expect", help="A head printed earlier, ID:HASH: that entry must still have that hash "
        "(catches a rewritten chain and deleted newest entries).",
        click_type=UTF8_TEXT)] = None,
    against: Annotated[list[Path] | None, typer.Option(
        "--against", help="A file of the syslog lines a collector wrote from 'serve "
        "--audit-syslog' (rsyslog's file, any line format; .gz read too; give it once per "
        "file): every entry forwarded there must be in the local log unchanged (catches a "
        "chain rewritten with valid hashes and deleted entries, up to the newest forwarded "
        "one).", show_default=False)] = None,
    log_ids: Annotated[list[str] | None, typer.Option(
        "--log", help="With --against: the id this log's entries were forwarded under (the "
        "'log' of its lines, as this command printed it earlier), if it is not the id the "
        "log has now: those lines are checked as this log's (give it once per id).",
        show_default=False, click_type=UTF8_TEXT)] = None,
    as_json: Json = False,
) -> None:
    """Walk the audit log's hash chain; print one line; exit 1 if it is broken.

    The line ends with the head, ID:HASH: keep it somewhere else and pass it back with
    --expect later. With --against, the chain is also checked against the entries the
    gateway forwarded to a syslog collector; the line says how far they vouch for it, and
    names this log's id and the lines of other logs that were skipped.
    """
    from edgewise.security.audit_syslog import check_log_id

    if not (data_dir / "security.sqlite").is_file():  # a mistyped --data-dir is not "ok"
        raise fail(f"No audit log in --data-dir {str(data_dir)!r}: it has no security.sqlite. "
                   "Give the data directory the gateway runs with.")
    if log_ids and not against:
        raise fail("--log names the id of forwarded lines: give it with --against FILE.")
    for path in against or []:
        if not path.is_file():
            raise fail(f"--against {str(path)!r} is not a file: give the file of syslog lines "
                       "the collector wrote (e.g. /var/log/remote/gw-1/audit.log).")
    for log_id in log_ids or []:
        try:
            check_log_id(log_id)
        except ValueError as exc:
            raise fail(f"--log: {exc}") from None
    with _security(data_dir, reads_only=True) as sec:
        result = sec.verify_audit(expect)
        if against and result.ok:
            _audit_against(sec, against, log_ids or [], as_json)
            return
    if as_json:
        typer.echo(json.dumps({"ok": result.ok, "checked": result.checked,
                               "head": result.head, "head_id": result.head_id,
                               "head_hash": result.head_hash, "bad_id": result.bad_id,
                               "problem": result.problem, "reason": result.reason,
                               "unchecked": list(result.unchecked)}))
    elif result.ok:
        taken = (f"; {len(result.unchecked)} taken in without a hash, check them: "
                 f"{', '.join(map(str, result.unchecked))}" if result.unchecked else "")
        typer.echo(f"audit chain ok: {result.checked} entries{taken}; head {result.head}")
    else:
        typer.echo(f"audit chain BROKEN at entry {result.bad_id} ({result.problem}): "
                   f"{result.reason} Head {result.head}.")
    if not result.ok:
        raise typer.Exit(1)


def _audit_against(sec: Security, files: list[Path], log_ids: list[str],
                   as_json: bool) -> None:
    """Print the check of ``sec``'s audit log against the forwarded ``files`` (lines of
    ``log_ids`` taken as its too) as one line (or JSON); exit 1 when it fails."""
    import zlib

    from edgewise.security.audit_syslog import compare_forwarded

    try:
        r = compare_forwarded(sec, files, log_ids=log_ids)
    except (OSError, EOFError, zlib.error) as exc:
        # a .gz cut short (copied or rotated mid-write) raised EOFError, which Click turned
        # into a bare "error: aborted"
        raise fail(_unreadable_against(files, exc)) from None
    shown = ", ".join(map(str, files))
    if as_json:
        typer.echo(json.dumps({"ok": r.ok, "checked": r.local_entries, "head": r.head,
                               "forwarded": r.forwarded,
                               "forwarded_head_id": r.forwarded_head_id,
                               "missing_below": r.missing_below, "newer": r.newer,
                               "log_id": r.log_id, "taken_logs": list(r.taken_logs),
                               "other_lines": r.other_lines, "other_logs": list(r.other_logs),
                               "bad_id": r.bad_id, "problem": r.problem, "reason": r.reason}))
    elif r.ok and not r.forwarded:
        typer.echo(f"audit log ok against {shown}: the log is empty and nothing was "
                   f"forwarded; {_logs_said(r)}; head {r.head}")
    elif r.ok:
        f = r.forwarded_head_id
        lost = (f"; {r.missing_below} of those not in the file (lost or not kept), vouched "
                f"for by later ones" if r.missing_below else "")
        newer = (f"; {r.newer} newer not in the file, which nothing vouches for yet"
                 if r.newer else "")
        typer.echo(f"audit log ok against {shown}: {r.local_entries} entries; {r.forwarded} "
                   f"forwarded, up to entry {f}, which vouches for entries up to it{lost}"
                   f"{newer}; {_logs_said(r)}; head {r.head}")
    else:
        at = f" at entry {r.bad_id}" if r.bad_id is not None else ""
        typer.echo(f"audit log does NOT match {shown}{at} ({r.problem}): {r.reason} "
                   f"Head {r.head}; {_logs_said(r)}.")
    if not r.ok:
        raise typer.Exit(1)


def _unreadable_against(files: list[Path], exc: BaseException) -> str:
    """The line saying which ``--against`` file cannot be read (``exc`` was raised reading
    them): the first of ``files`` that fails to read again, its problem and what would do."""
    import gzip
    import zlib

    bad: Path | None = None
    for path in files:
        try:
            with (gzip.open if str(path).endswith(".gz") else open)(path, "rb") as f:
                while f.read(1 << 20):
                    pass
        except (OSError, EOFError, zlib.error) as e:
            bad, exc = path, e
            break
    # none fails again (it changed since): name them all
    shown = repr(str(bad)) if bad is not None else ", ".join(repr(str(p)) for p in files)
    why = str(exc) or type(exc).__name__
    if isinstance(exc, EOFError | zlib.error | gzip.BadGzipFile):
        return (f"--against {shown} cannot be read: {why}. Give a whole gzip file (one cut "
                f"short while copied or rotated cannot be checked), or the uncompressed log.")
    return f"--against {shown} cannot be read: {why}"


def _logs_said(r: ForwardedCheck) -> str:
    """The log ids of a check, as its line says them: this log's, the other ids whose lines
    were checked as its, and how many lines of other logs were skipped."""
    taken = (f", also as {', '.join(r.taken_logs)} (an earlier id: named with --log, or "
             f"its lines hold this log's entries)" if r.taken_logs else "")
    ids = ", ".join(r.other_logs[:3]) + (f", … ({len(r.other_logs)} logs)"
                                         if len(r.other_logs) > 3 else "")
    others = (f"{r.other_lines} line{'s' if r.other_lines > 1 else ''} of other logs "
              f"skipped ({ids})" if r.other_lines else "no lines of other logs")
    return f"log {r.log_id}{taken}; {others}"
