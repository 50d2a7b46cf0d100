"""Per-device token buckets: a message larger than the burst is not refused for good."""

from __future__ import annotations

import pytest

from edgewise.errors import RateLimitError
from edgewise.security import ratelimit
from edgewise.security.ratelimit import RateLimiter


def test_a_message_larger_than_the_burst_passes_once_and_its_debt_is_waited_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a 5-reading message under burst 3 passes on a full bucket (it was refused
    for ever with 'retry in 2.0 s'), the next message waits out the debt with a true
    retry time, and after that time it passes."""
    now = [1000.0]
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: now[0])
    rl = RateLimiter(rate_per_s=1.0, burst=3)
    rl.take("pump-1", 5)
    with pytest.raises(RateLimitError) as info:
        rl.take("pump-1", 1)
    assert info.value.retry_after_s == pytest.approx(3.0)
    now[0] += 2.9
    with pytest.raises(RateLimitError):
        rl.take("pump-1", 1)
    now[0] += 0.2
    rl.take("pump-1", 1)
    rl.take("pump-2", 3)  # other devices have their own bucket
