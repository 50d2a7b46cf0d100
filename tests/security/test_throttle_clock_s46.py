"""The wrong-secret pause runs on the monotonic clock: by the wall clock (``time.time_ns``)
a step back of the system clock (NTP, a restored VM) lengthened every running pause by the
step, so a device's address that sent one wrong secret too many was refused for an hour
after the clock went back an hour, though its pause was 1 s."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgewise.errors import AuthError, ThrottledError
from edgewise.security import credentials
from edgewise.security.credentials import Security


def test_a_wall_clock_step_back_does_not_lengthen_a_pause(data_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          ) -> None:
    """Check a 1 s pause ends after 1 s although the wall clock went back an hour."""
    sec = Security(data_dir, throttle_after=1)
    try:
        _, secret = sec.add_device("pump-1")
        with pytest.raises(AuthError) as first:
            sec.authenticate_device("pump-1", "wrong", source="10.0.0.9")
        assert type(first.value) is AuthError  # the first wrong one starts a 1 s pause
        with pytest.raises(ThrottledError):
            sec.authenticate_device("pump-1", "wrong", source="10.0.0.9")
        real = time.time_ns
        monkeypatch.setattr(credentials.time, "time_ns", lambda: real() - 3600 * 10**9)
        time.sleep(1.2)
        with pytest.raises(AuthError) as after:
            sec.authenticate_device("pump-1", "wrong", source="10.0.0.9")
        assert type(after.value) is AuthError, after.value  # not "refused for 3600 s more"
        assert sec.authenticate_device("pump-1", secret, source="10.0.0.9")
    finally:
        sec.close()
