"""Broker review, defect 4b: the HTTP server believes X-Forwarded-For only from the
proxies named in ``forwarded_allow_ips`` (none by default), so a client on 127.0.0.1
cannot pick the source its wrong secrets are counted under."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from edgewise.config import Settings
from edgewise.errors import ConfigError


def _statuses(gw: Any, n: int) -> list[int]:
    out = []
    for i in range(n):
        r = httpx.post(f"http://127.0.0.1:{gw.http_port}/v1/telemetry",
                       json={"ts": 1_700_000_000, "metrics": {"t": 1.0}},
                       headers={"Authorization": "Bearer wrong", "X-Device-Id": "ghost",
                                "X-Forwarded-For": f"198.51.100.{i + 1}"}, timeout=10)
        out.append(r.status_code)
    return out


def test_x_forwarded_for_from_loopback_is_not_believed_by_default(
        gateway_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Check wrong secrets with a rotating X-Forwarded-For from 127.0.0.1 are counted
    under 127.0.0.1 (throttled after 3), and are believed when the proxy is named."""
    monkeypatch.setenv("EDGEWISE_THROTTLE_AFTER_FAILURES", "3")
    gw = gateway_factory().start()
    assert _statuses(gw, 5)[3:] == [429, 429]
    gw.stop()
    monkeypatch.setenv("EDGEWISE_FORWARDED_ALLOW_IPS", "127.0.0.1")
    # a data dir of its own: the readiness check counts "ready" lines in the dir's log
    gw = gateway_factory(data_dir=tmp_path / "ew2").start()
    assert 429 not in _statuses(gw, 5)


def test_forwarded_allow_ips_is_checked() -> None:
    """Check a bad forwarded_allow_ips stops the settings with a one-line error."""
    with pytest.raises(ConfigError, match=r"'proxy\.local' is neither"):
        Settings.load(env={"EDGEWISE_FORWARDED_ALLOW_IPS": "10.0.0.1,proxy.local"})
    assert Settings().forwarded_allow_ips == ""
