"""A PostgreSQL store URL whose password libpq cannot parse: the error names the URL with
the password masked, and libpq's own text (which repeats the part it could not parse:
"unexpected spaces found in \"my secret pass\"") no longer carries the password past it,
to the terminal (``edgewise store purge``, ``device add``) or the gateway's log."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import StoreError
from edgewise.store import open_store

SECRET = "my secret pass"
URL = f"postgresql://u:{SECRET}@127.0.0.1:5432/test"

pytest.importorskip("psycopg", reason="the PostgreSQL store needs psycopg 3")
load_commands()


def test_opening_the_store_does_not_repeat_the_password() -> None:
    with pytest.raises(StoreError) as err:
        open_store(URL)
    text = str(err.value)
    assert "Cannot connect to PostgreSQL store" in text, text
    assert "spaces" in text, text  # libpq's reason is still told
    assert SECRET not in text and "secret" not in text, text


def test_device_add_warning_does_not_repeat_the_password(tmp_path) -> None:
    res = CliRunner().invoke(app, ["device", "add", "pump-1", "--data-dir", str(tmp_path),
                                   "--store", URL])
    out = res.output
    assert res.exit_code == 0, out  # added: the store is only looked at, with a warning
    assert "could not check the store" in out and "spaces" in out, out
    assert SECRET not in out, out


def test_store_purge_does_not_repeat_the_password(tmp_path) -> None:
    res = CliRunner().invoke(app, ["store", "purge", "--data-dir", str(tmp_path),
                                   "--store", URL])
    out = res.output
    assert res.exit_code != 0 and "Cannot connect to PostgreSQL store" in out, out
    assert "spaces" in out and SECRET not in out, out
