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
device).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgewise.cli._app import DataDir, Json, app, existing_data_dir, fail

if TYPE_CHECKING:
    from edgewise.config import Settings
    from edgewise.security import Security
    from edgewise.store.base import Store

__all__ = ["audit_app", "device_app", "token_app"]

device_app = typer.Typer(help="Register, list and delete devices.", no_args_is_help=True)
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
                 "broker (mqtt://HOST:PORT?prefix=…) the device's retained ack is cleared there."),
]


@contextmanager
def _security(data_dir: Path, unknown_id: bool = False) -> Iterator[Security]:
    """The data directory's credentials and audit log, closed after the block; a refused
    value (:class:`~edgewise.errors.InvalidParameterError`, and with ``unknown_id`` the
    ``KeyError`` of an id that is not there) ends the command with its message."""
    from edgewise.errors import InvalidParameterError
    from edgewise.security import Security

    refused = (InvalidParameterError, KeyError) if unknown_id else (InvalidParameterError,)
    sec = Security(data_dir)
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


Groups = Annotated[
    list[str],
    typer.Option("--group", help="A group the device is in (gets group:NAME model releases); "
                 "repeatable."),
]


@device_app.command("add")
def device_add(name: str, data_dir: DataDir, group: Groups = [],  # noqa: B006
               as_json: Json = False) -> None:
    """Register device NAME (in the --group groups) and print its secret (shown only once)."""
    with _security(data_dir) as sec:
        device_id, secret = sec.add_device(name, groups=group, actor="cli")
        groups = sec.device_groups(device_id)
    if as_json:
        out: dict[str, object] = {"id": device_id, "secret": secret}
        if groups:
            out["groups"] = groups
        typer.echo(json.dumps(out))
        return
    typer.echo(f"device {device_id}" + (f" in groups {', '.join(groups)}" if groups else ""))
    typer.echo(f"secret {secret}")
    typer.echo("The secret is shown only now; only its hash is kept. Devices send it as "
               "'Authorization: Bearer <secret>' (HTTP) or as the MQTT password.", err=True)


@device_app.command("groups")
def device_groups(
    device_id: str, data_dir: DataDir, group: Groups = [],  # noqa: B006
    clear: Annotated[bool, typer.Option("--clear", help="Take the device out of every group.")]
    = False,
    as_json: Json = False,
) -> None:
    """Print device DEVICE_ID's groups; with --group (or --clear), replace them first.

    The gateway serves a group:NAME model release only to devices put in that group here.
    """
    if group and clear:
        raise fail("Give either --group (the new groups) or --clear, not both.")
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


@device_app.command("list")
def device_list(data_dir: DataDir, as_json: Json = False) -> None:
    """List registered devices (never their secrets)."""
    from edgewise.server.query import format_ns

    rows = []
    if _has_security(data_dir):  # nothing is made by a listing
        with _security(data_dir) as sec:
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
def device_delete(
    device_id: str, data_dir: DataDir, store: StoreUrl = "", mqtt: MqttUrl = "embedded",
    as_json: Json = False,
) -> None:
    """Revoke device DEVICE_ID's credentials and delete its stored data.

    If a gateway is running on the data dir (or holds the store), only the credentials are
    revoked (exit status 1), and the id cannot be added again until its data is deleted:
    use DELETE /v1/devices/ID on the gateway, or this command once the gateway is stopped.
    With an external MQTT broker (--mqtt / EDGEWISE_MQTT), the device's retained ack is
    cleared there, so a device registered again under the same id is not told the old
    watermark.
    """
    from edgewise.config import Settings
    from edgewise.errors import StoreError
    from edgewise.gateway.presence import gateway_running
    from edgewise.store import open_store

    existing_data_dir(data_dir)  # a mistyped one: no data dir, registry and store made there
    settings = Settings.load(data_dir=data_dir, store=store or None)
    _external_broker(mqtt)  # a bad --mqtt fails before anything is deleted
    with _security(data_dir) as sec:
        registered = sec.has_device(device_id)
        if registered:
            sec.delete_device(device_id, actor="cli")
        releases = _withdraw_releases(settings, sec, device_id)
        ack = _clear_retained_ack(mqtt, device_id)  # after the revocation: no ack follows it
        try:
            if gateway_running(settings.data_dir):
                # its memory (seq watermark, detectors) would outlive the data: leave it the
                # deletion, and keep the id from being registered again before it
                raise StoreError(f"a gateway is running on {str(settings.data_dir)!r}")
            st = open_store(settings.store_url)
        except StoreError as exc:
            sec.keep_data(device_id)
            done = {"id": device_id, "credentials_deleted": registered, "rows_deleted": None,
                    "releases_withdrawn": releases, "error": str(exc)}
            if as_json:
                typer.echo(json.dumps(done))
            what = "credentials revoked" if registered else "device was not registered"
            why = str(exc).rstrip(".")
            typer.echo(
                f"error: {what}, but its stored data was NOT deleted: {why}. If a gateway "
                f"is running, delete the data with DELETE /v1/devices/{device_id} (admin "
                f"token), or run this command again once it is stopped; until then the id "
                f"cannot be added again.", err=True)
            raise typer.Exit(1) from None
        try:
            _forget_detector_state(st, settings, device_id)
            rows = st.delete_device(device_id)
        finally:
            st.close()
        labels = 0
        if (settings.data_dir / "labels.sqlite").exists():
            from edgewise.label.store import LabelStore

            with LabelStore(settings.data_dir, security=sec) as label_store:
                labels = label_store.delete_device(device_id, who="cli")
        from edgewise.label.workflow import delete_models

        models = delete_models(settings.data_dir, device_id)
        kept = sec.data_kept(device_id)  # an earlier deletion's data, now gone
        sec.data_deleted(device_id)
        sec.audit("cli", "device.delete_data", device_id,
                  {"rows": rows, "labels": labels, "label_models": models})
    if not (registered or rows or labels or models or releases or kept):
        raise fail(f"Device {device_id!r} is not registered and has no stored data.", code=1)
    if as_json:
        typer.echo(json.dumps({"id": device_id, "credentials_deleted": registered,
                               "rows_deleted": rows, "labels_deleted": labels,
                               "label_models_deleted": models, "releases_withdrawn": releases,
                               **({} if ack is None else {"retained_ack_cleared": ack})}))
        return
    creds = "credentials revoked" if registered else "was not registered"
    typer.echo(f"device {device_id}: {creds}; {rows} stored rows and {labels} labels deleted"
               + (f"; {models} model files deleted (label and transfer models its data "
                  "trained)" if models else "")
               + (f"; {len(releases)} model releases withdrawn" if releases else "")
               + ("; retained ack cleared" if ack else ""))


def _withdraw_releases(settings: Settings, sec: Security, device_id: str) -> list[int]:
    """Withdraw the model releases aimed at the device, as ``DELETE /v1/devices/{id}`` does
    (the registry is SQLite in WAL mode: safe beside a running gateway)."""
    from edgewise.registry import Registry
    from edgewise.server.routes.devices import withdraw_releases

    reg = Registry(settings.data_dir)
    try:
        return withdraw_releases(reg, sec, device_id, "cli")
    finally:
        reg.close()


def _external_broker(mqtt: str) -> bool:
    """Whether ``mqtt`` names an external broker (checked: a bad URL fails in one line)."""
    from edgewise.errors import ConfigError
    from edgewise.transport.client import parse_mqtt_url

    if mqtt == "embedded":
        return False
    try:
        parse_mqtt_url(mqtt)
    except ConfigError as exc:
        raise fail(str(exc).replace("Setting 'mqtt'", "--mqtt (EDGEWISE_MQTT)")) from None
    return True


def _clear_retained_ack(mqtt: str, device_id: str) -> bool | None:
    """Clear the device's retained ack on an external broker; ``None`` for the embedded one
    (it retains no ack), else whether it was cleared (a one-line warning when not)."""
    if not _external_broker(mqtt):
        return None
    from edgewise.transport.client import clear_retained_ack, parse_mqtt_url

    try:
        clear_retained_ack(mqtt, device_id)
    except ConnectionError as exc:
        cfg = parse_mqtt_url(mqtt)
        topic = f"{cfg['prefix']}/{device_id}/ack"
        typer.echo(f"warning: {exc} Clear it, once the broker answers, with: mosquitto_pub "
                   f"-h {cfg['host']} -p {cfg['port']} -r -n -t '{topic}' (add its credentials "
                   "and TLS options if it needs them).", err=True)
        return False
    return True


def _forget_detector_state(store: Store, settings: Settings, device_id: str) -> None:
    """Drop the device from the detector state a stopped gateway saved in the data dir,
    so its next start does not score a re-registered device with the old state."""
    from edgewise.gateway.pipeline import Pipeline

    path = settings.data_dir / "detectors.pickle"
    if not path.exists():
        return
    p = Pipeline(store, settings, detect_async=False, state_path=path)
    p.forget_device(device_id)
    p.close()  # saves the state without the device


@token_app.command("create")
def token_create(
    data_dir: DataDir,
    role: Annotated[str, typer.Option("--role", help="admin, operator or viewer.")],
    name: Annotated[str, typer.Option(
        "--name", help="Who or what will use it (default: the role): at most 64 characters, "
        "no control characters (tab, newline), not 8 hex digits (a token id's form).")] = "",
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
    if as_json:
        typer.echo(json.dumps({"token": token, "role": role, "name": name or role}))
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
        with _security(data_dir) as sec:
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
    name_or_id: str, data_dir: DataDir,
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
        "(catches a rewritten chain and deleted newest entries).")] = None,
    as_json: Json = False,
) -> None:
    """Walk the audit log's hash chain; print one line; exit 1 if it is broken.

    The line ends with the head, ID:HASH: keep it somewhere else and pass it back with
    --expect later.
    """
    if not (data_dir / "security.sqlite").is_file():  # a mistyped --data-dir is not "ok"
        raise fail(f"No audit log in --data-dir {str(data_dir)!r}: it has no security.sqlite. "
                   "Give the data directory the gateway runs with.")
    with _security(data_dir) as sec:
        result = sec.verify_audit(expect)
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
