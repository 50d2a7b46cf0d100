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


def test_a_bucket_a_sliver_short_says_a_wait_above_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a refusal whose wait is a fraction of a millisecond tells the device a wait
    above zero, in the dead letter and the message: rounded to the nearest millisecond it
    said ``retry_after_s: 0.0`` and "retry in 0.0 s", so the device resent at once and was
    refused again (the clean-clone CI's MQTT rate-limit test caught a 0.0)."""
    from edgewise.gateway.runtime import problem_of

    now = [1000.0]
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: now[0])
    rl = RateLimiter(rate_per_s=100.0, burst=10)
    rl.take("pump-1", 10)
    now[0] += 0.0199  # refilled 1.99 tokens: 0.01 short of 2, a wait of 0.1 ms
    with pytest.raises(RateLimitError) as info:
        rl.take("pump-1", 2)
    assert info.value.retry_after_s == pytest.approx(1e-4)
    assert "retry in 0.1 s" in str(info.value)
    assert problem_of(info.value)["retry_after_s"] == 0.001
