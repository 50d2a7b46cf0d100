"""Security hunt of session 36: a store URL's ``sslpassword`` (and a percent-encoded
``%70assword``) masked wherever the URL is shown; no hash of a label's note in the audit log
(unsalted, a word list gave a short note back after the device was deleted); ``audit verify
--against`` counts only lines tagged ``edgewise`` (another program's line holding an
entry's JSON was taken for a forged entry)."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest

from edgewise.config import Settings, shown_url
from edgewise.label.store import LabelStore
from edgewise.security import Security
from edgewise.security.audit_syslog import compare_forwarded, format_message, parse_forwarded
from edgewise.store.postgres import _split_url


# -- a store URL's secret libpq parameters ----------------------------------------------
@pytest.mark.parametrize("url", [
    "postgresql://pg@db:5432/ew?schema=a&sslpassword=TOPSECRET",
    "postgresql://pg@db:5432/ew?sslpassword=TOPSECRET&schema=a",
    "postgresql://pg@db:5432/ew?schema=a&%70assword=TOPSECRET",
    "postgresql://pg@db:5432/ew?schema=a&%73sl%70assword=TOPSECRET",
    "postgresql://pg@db:5432/ew?schema=a&SSLPASSWORD=TOPSECRET",
    "postgresql://pg@db:5432/ew?oauth_client_secret=TOPSECRET",
    "postgresql://pg@db:5432/ew?schema=a&password=TOP#SECRET",
])
def test_every_secret_libpq_parameter_of_a_store_url_is_masked(url: str) -> None:
    """Check ``shown_url`` (the serve banner, messages, the ``store.purge`` audit target)
    masks ``sslpassword`` and ``password`` whatever the case or percent-encoding of their
    names (libpq, and the store's parse_qsl, decode them), and keeps the other
    parameters: ``?sslpassword=TOPSECRET`` was shown in clear."""
    for shown in (shown_url(url), _split_url(url)[2], repr(Settings(store=url))):
        assert "TOPSECRET" not in shown and "SECRET" not in shown, shown
        assert "=***" in shown, shown
    assert "schema=a" in shown_url(url) or "schema" not in url


def test_other_query_parameters_are_shown_as_they_are() -> None:
    """Check parameters that hold no secret (``sslmode``, ``passfile``: a path) stay."""
    url = "postgresql://pg@db/ew?sslmode=verify-full&passfile=/etc/pgpass&schema=a"
    assert shown_url(url) == url


# -- no hash of a label's note in the audit log -------------------------------------------
def test_a_deleted_devices_label_note_cannot_be_recovered_from_the_audit_log(
        tmp_path: Path) -> None:
    """Check a ``label.add`` entry holds the note's length only: with the first 16 hex
    digits of its unsalted SHA-256, "Jan Novak replaced seal" came back from a word list
    after the device (and its labels) were deleted."""
    sec = Security(tmp_path)
    sec.add_device("pump-7")
    labels = LabelStore(tmp_path, security=sec)
    note = "Jan Novak replaced seal"
    labels.add("pump-7", 0, 10, "anomaly", note=note, who="token:ab12cd34:ops")
    labels.delete_device("pump-7")
    entry = next(e for e in sec.audit_log(50) if e.action == "label.add")
    assert entry.detail.get("note_chars") == len(note)
    assert "note_sha256" not in entry.detail, entry.detail
    logged = json.dumps([e.detail for e in sec.audit_log(50)])
    words = itertools.product(["Anna", "Jan"], ["Novak", "Smith"], ["replaced seal"])
    for guess in (" ".join(w) for w in words):
        assert hashlib.sha256(guess.encode()).hexdigest()[:16] not in logged
    assert note not in logged
    labels.close()
    sec.close()


# -- audit verify --against: only lines tagged edgewise -----------------------------------
def _collector(tmp_path: Path) -> tuple[Security, Path, list[str]]:
    """A log of 3 entries and the collector's file of them, in the traditional format
    (``Mon DD HH:MM:SS host edgewise[pid]: {…}``): the file's lines."""
    sec = Security(tmp_path / "gw")
    for i in range(3):
        sec.audit("cli", "device.add", f"pump-{i}")
    lines = []
    for e in reversed(sec.audit_log(10)):
        body = format_message(e, sec.audit_log_id, hostname="gw-1").decode()
        lines.append(f"Jan  1 00:00:0{e.id} gw-1 edgewise[42]: {body[body.index('{'):]}")
    path = tmp_path / "collector.log"
    path.write_text("\n".join(lines) + "\n")
    return sec, path, lines


def _forged(line: str) -> str:
    """The body of ``line`` with another target and a hash that does not match it."""
    fake = json.loads(line[line.index("{"):])
    fake["target"], fake["hash"] = "attacker", "ab" * 32
    return json.dumps(fake, separators=(",", ":"))


@pytest.mark.parametrize("fmt", [
    "Jan  1 00:00:09 gw-1 sshd[777]: {body}",  # logger -t sshd, rsyslog's file format
    "<38>1 2026-01-01T00:00:09Z gw-1 sshd 777 - - {body}",  # a datagram to a udp:// one
    "Jan  1 00:00:09 gw-1 sshd[777]: edgewise[42]: {body}",  # a tag inside the message
])
def test_another_programs_line_holding_an_entry_is_skipped(tmp_path: Path, fmt: str) -> None:
    """Check a line of another program (tag or APP-NAME ``sshd``) whose message holds an
    entry's JSON is not taken for this log's: it made ``--against`` fail, 'forged'."""
    sec, path, lines = _collector(tmp_path)
    with path.open("a") as f:
        f.write(fmt.format(body=_forged(lines[1])) + "\n")
    assert parse_forwarded(fmt.format(body=_forged(lines[1]))) is None
    r = compare_forwarded(sec, [path])
    assert r.ok, r.reason
    assert r.forwarded == 3
    sec.close()


@pytest.mark.parametrize("fmt", [
    "Jan  1 00:00:09 gw-1 edgewise[42]: {body}",
    "<85>1 2026-01-01T00:00:09Z gw-1 edgewise 42 device.add - {body}",
    "{body}",  # a collector writing the message alone (its filter chose the lines)
])
def test_a_forged_line_tagged_edgewise_is_still_caught(tmp_path: Path, fmt: str) -> None:
    """Check lines in the formats Edgewise's are written in are still read: a forged one
    fails the check."""
    sec, path, lines = _collector(tmp_path)
    with path.open("a") as f:
        f.write(fmt.format(body=_forged(lines[1])) + "\n")
    r = compare_forwarded(sec, [path])
    assert not r.ok and r.problem == "forged" and r.bad_id == 2, r
    sec.close()
