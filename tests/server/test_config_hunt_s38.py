"""Config hunt of session 38: settings the README allows that broke something later.

2. ``EDGEWISE_MAX_FUTURE_S=inf`` (no bound, as the README allows) made every ``POST
   /v1/labels`` a 500: the route computed ``int(inf * 1e9)``.
3. ``--data-dir=~/x`` (the shell leaves that ``~``) and ``EDGEWISE_DATA_DIR='~/x'``
   (systemd ``Environment=``, docker ``-e``, ``.env`` files) made ``./~/x``: the CLI made the
   path absolute before ``Settings`` expanded the ``~``.
4. A device that dropped its connection in the middle of an HTTP upload made the server log
   a 60-line "Exception in ASGI application" traceback (``ClientDisconnect``) per drop.
5. ``EDGEWISE_MAX_PAYLOAD_BYTES`` had no upper bound: from 2**63 zlib refused every gzip'd
   message. It and ``EDGEWISE_MAX_BODY_BYTES`` are now at most 1 GiB.
6. A subnormal ``EDGEWISE_RATE_LIMIT_PER_S`` (1e-320) made the retry wait inf and the 429 a
   500 (``math.ceil(inf)``): the rate is now at least 1e-6, and ``Retry-After`` at most a
   day, whatever the wait.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgewise.config import MAX_BYTES, Settings
from edgewise.errors import ConfigError
from edgewise.server.problems import _retry_after
from edgewise.telemetry import decode
from tests.server.conftest import Env, build_env


@pytest.fixture
def inf_env(data_dir: Path) -> Iterator[Env]:
    yield from build_env(data_dir, max_future_s=math.inf)


def test_labels_are_taken_with_no_bound_on_future_times(inf_env: Env) -> None:
    """Check ``POST /v1/labels`` under ``max_future_s=inf`` stores a label, one ending in
    the future too (no bound), instead of answering 500."""
    now = int(time.time())
    for start, end in ((now - 600, now - 60), (now - 60, now + 86_400)):
        r = inf_env.client.post("/v1/labels", headers=inf_env.auth("operator"), json={
            "device_id": "pump-1", "start": start, "end": end, "label": "anomaly"})
        assert r.status_code == 201, r.text
    r = inf_env.client.get("/v1/labels?device=pump-1", headers=inf_env.auth("viewer"))
    assert len(r.json()) == 2


# 3. '~' in the data dir ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_tilde_data_dir_is_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             how: str) -> None:
    """Check ``--data-dir=~/ewd`` and ``EDGEWISE_DATA_DIR='~/ewd'`` make the data dir in the
    home folder, and nothing named ``~`` in the working directory."""
    from edgewise.cli import app, load_commands

    load_commands()
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    args = ["device", "add", "pump-x", "--json"]
    if how == "flag":
        res = CliRunner(mix_stderr=False).invoke(app, [*args, "--data-dir=~/ewd"])
    else:
        res = CliRunner(mix_stderr=False).invoke(app, args, env={"EDGEWISE_DATA_DIR": "~/ewd"})
    assert res.exit_code == 0, res.stdout + res.stderr
    assert (home / "ewd" / "security.sqlite").exists()
    assert list(cwd.iterdir()) == [], "a literal '~' folder was made in the working directory"


# 4. a client that drops its upload -------------------------------------------------------


def test_a_dropped_upload_ends_quietly(module_env: Env) -> None:
    """Check an upload whose client goes away after part of its body ends the request
    without an exception reaching the server (which logged it as a 60-line traceback) and
    without an answer (nobody is left to read it)."""
    app = module_env.client.app
    headers = [(b"content-type", b"application/json"), (b"content-length", b"1000"),
               (b"authorization", f"Bearer {module_env.secret}".encode()),
               (b"x-device-id", module_env.device.encode()), (b"host", b"x")]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/telemetry", "raw_path":
             b"/v1/telemetry", "root_path": "", "query_string": b"", "headers": headers,
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080)}
    incoming: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"seq": 1, ', "more_body": True},
        {"type": "http.disconnect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)  # never: the app stops at the disconnect
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # raised ClientDisconnect
    assert sent == []


# 5. payload and body limits --------------------------------------------------------------


@pytest.mark.parametrize("var", ["EDGEWISE_MAX_PAYLOAD_BYTES", "EDGEWISE_MAX_BODY_BYTES"])
@pytest.mark.parametrize("value", [str(2**30 + 1), str(2**63)])
def test_byte_limits_past_a_gib_are_refused_at_start(var: str, value: str) -> None:
    name = var.removeprefix("EDGEWISE_").lower()
    with pytest.raises(ConfigError) as e:
        Settings.load(env={var: value})
    assert str(e.value) == (f"Setting {name!r} ({var}) has value {value!r}. It must be an "
                            f"int in the range [1, 1073741824].")


def test_the_largest_payload_limit_still_decodes_gzip() -> None:
    """Check the largest limit allowed (1 GiB) is one every gzip'd message decodes under."""
    s = Settings.load(env={"EDGEWISE_MAX_PAYLOAD_BYTES": str(MAX_BYTES),
                           "EDGEWISE_MAX_BODY_BYTES": str(MAX_BYTES)})
    raw = gzip.compress(json.dumps({"seq": 1, "ts": 1769860800, "metrics": {"t": 1.0}}
                                   ).encode())
    assert decode(raw, "pump-1", max_bytes=s.max_payload_bytes).readings


# 6. a tiny rate limit --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1e-320", "5e-7"])
def test_a_rate_limit_below_one_in_a_million_per_s_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as e:
        Settings.load(env={"EDGEWISE_RATE_LIMIT_PER_S": value})
    assert str(e.value) == (
        f"Setting 'rate_limit_per_s' (EDGEWISE_RATE_LIMIT_PER_S) has value {value!r}. It "
        f"must be a finite float in the range [1e-06, inf).")
    assert Settings.load(env={"EDGEWISE_RATE_LIMIT_PER_S": "1e-6"}).rate_limit_per_s == 1e-6


def test_a_tiny_rate_limit_answers_429_with_a_bounded_retry_after(data_dir: Path) -> None:
    """Check a rate limit whose wait overflows (a subnormal rate, past :meth:`Settings.load`)
    still answers 429, its ``Retry-After`` a day at most (it was a 500)."""
    assert _retry_after(math.inf) == {"Retry-After": "86400"}
    assert _retry_after(1e12) == {"Retry-After": "86400"}
    gen = build_env(data_dir, rate_limit_burst=1.0)
    env = next(gen)
    try:
        env.pipeline.rate_limiter.rate_per_s = 1e-320  # as the hunt's setting made it
        now = int(time.time())
        assert env.send({"seq": 1, "ts": now, "metrics": {"t": 1.0}}).status_code == 200
        r = env.send({"seq": 2, "ts": now + 1, "metrics": {"t": 1.0}})
        assert r.status_code == 429, r.text
        assert r.headers["Retry-After"] == "86400"
    finally:
        gen.close()
