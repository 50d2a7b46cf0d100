"""Per-device rate limits: a token bucket per device, refilled continuously.

>>> rl = RateLimiter(rate_per_s=10, burst=20)
>>> rl.take("pump-1", 20)
>>> rl.take("pump-1", 5)
Traceback (most recent call last):
...
edgewise.errors.RateLimitError: Device 'pump-1' sent 5 readings over its limit of 10/s (burst 20); retry in 0.5 s.
>>> rl.take("pump-2", 50)   # larger than the burst: passes on a full bucket, leaves a debt
>>> rl.take("pump-2", 1)
Traceback (most recent call last):
...
edgewise.errors.RateLimitError: Device 'pump-2' sent 1 readings over its limit of 10/s (burst 20); retry in 3.1 s.
"""  # noqa: E501

from __future__ import annotations

import math
import numbers
import threading
import time

from edgewise.config import MIN_RATE_PER_S
from edgewise.errors import InvalidParameterError, RateLimitError

__all__ = ["RateLimiter"]

#: Idle (refilled) buckets are pruned once there are more buckets than this.
_PRUNE_MIN = 1024


class RateLimiter:
    """Token buckets keyed by device id: ``rate_per_s`` sustained, ``burst`` at most at once."""

    def __init__(self, rate_per_s: float, burst: float) -> None:
        """``rate_per_s``: a finite number of at least :data:`~edgewise.config.MIN_RATE_PER_S`;
        ``burst``: a finite number of at least 1. NaN passed the old ``<= 0`` / ``< 1``
        checks and turned the limit off (a NaN rate refilled every bucket at every take, a
        NaN burst let every take through), and a subnormal rate made a refusal's retry wait
        inf.

        >>> RateLimiter(rate_per_s=float("nan"), burst=20)
        Traceback (most recent call last):
        ...
        edgewise.errors.InvalidParameterError: RateLimiter needs a finite rate_per_s of at least 1e-06 (readings per second) and a finite burst of at least 1. Got rate_per_s=nan, burst=20 instead.
        """  # noqa: E501
        ok = (isinstance(rate_per_s, numbers.Real) and isinstance(burst, numbers.Real)
              and not isinstance(rate_per_s, bool) and not isinstance(burst, bool)
              and MIN_RATE_PER_S <= rate_per_s < math.inf and 1 <= burst < math.inf)
        if not ok:  # each comparison is False for NaN
            raise InvalidParameterError(
                f"RateLimiter needs a finite rate_per_s of at least {MIN_RATE_PER_S:g} "
                "(readings per second) and a finite burst of at least 1. "
                f"Got rate_per_s={rate_per_s!r}, burst={burst!r} instead."
            )
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._prune_at = _PRUNE_MIN  # prune idle buckets when there are more than this

    def take(self, device_id: str, n: float = 1.0) -> None:
        """Spend ``n`` tokens of ``device_id``'s bucket or raise :class:`RateLimitError`."""
        with self._lock:
            # read under the lock: read before it, a take that waited for the lock (another
            # device's take, a prune of many buckets) counted none of the refill meanwhile
            # and was refused with tokens it had; and a later take's time, stored first,
            # made the elapsed time negative
            now = time.monotonic()
            tokens, last = self._buckets.get(device_id, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
            # A message larger than the burst (a device draining its store-and-forward
            # buffer in one message) passes on a full bucket and leaves a debt that later
            # messages wait out; asking for more than the bucket can hold would refuse it
            # for good, with a "retry in" that is never true.
            need = min(n, self.burst)
            if need > tokens:
                self._buckets[device_id] = (tokens, now)
                wait = (need - tokens) / self.rate_per_s
                shown = max(wait, 0.1)  # not "retry in 0.0 s" for a sliver of a token
                raise RateLimitError(
                    f"Device {device_id!r} sent {n:g} readings over its limit of "
                    f"{self.rate_per_s:g}/s (burst {self.burst:g}); retry in {shown:.1f} s.",
                    retry_after_s=wait,
                )
            self._buckets[device_id] = (tokens - n, now)
            if len(self._buckets) > self._prune_at:
                self._prune(now)

    def _prune(self, now: float) -> None:
        """Drop the buckets that have refilled (a full bucket is what an unknown id gets,
        so nothing changes for their devices); called under the lock, amortised by
        doubling the threshold to what is left."""
        full = [d for d, (tokens, last) in self._buckets.items()
                if tokens + (now - last) * self.rate_per_s >= self.burst]
        for d in full:
            del self._buckets[d]
        self._prune_at = max(_PRUNE_MIN, 2 * len(self._buckets))

    def refund(self, device_id: str, n: float) -> None:
        """Give back ``n`` tokens :meth:`take` spent on readings that were not stored (a
        failed commit), never filling the bucket past ``burst``.

        >>> rl = RateLimiter(rate_per_s=1, burst=10)
        >>> rl.take("pump-1", 10); rl.refund("pump-1", 10); rl.take("pump-1", 10)
        """
        with self._lock:
            if device_id not in self._buckets:
                return
            tokens, last = self._buckets[device_id]
            self._buckets[device_id] = (min(self.burst, tokens + n), last)

    def forget(self, device_id: str) -> bool:
        """Drop ``device_id``'s bucket (the device was deleted): an id registered again
        starts on a full bucket, and a fleet that churns ids keeps no bucket per id ever
        seen. Returns whether there was one.

        >>> rl = RateLimiter(rate_per_s=1, burst=10)
        >>> rl.take("pump-1", 10); rl.forget("pump-1"), rl.forget("pump-1")
        (True, False)
        >>> rl.take("pump-1", 10)   # a full bucket again
        """
        with self._lock:
            return self._buckets.pop(device_id, None) is not None
