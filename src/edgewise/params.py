"""Parameter constraints and the one message format for bad arguments.

Detectors validate in ``__init__`` (they are built from configuration and should fail
at load time); scikit-learn-style batch models validate at the start of ``fit``. Both
use :func:`validate_params`, so the wording never drifts.

>>> validate_params({"window": Interval(int, 2, None)}, {"window": 1}, owner="RollingZScore")
Traceback (most recent call last):
...
edgewise.errors.InvalidParameterError: The 'window' parameter of RollingZScore must be an int in the range [2, inf). Got 1 instead.
"""  # noqa: E501

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgewise.errors import InvalidParameterError

__all__ = ["Interval", "OneOf", "validate_params"]


@dataclass(frozen=True)
class Interval:
    """A numeric range; ``None`` bounds are open-ended. ``closed`` is 'both', 'left', 'right' or 'neither'."""  # noqa: E501

    type: type
    low: float | None
    high: float | None
    closed: str = "both"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.type is int and not isinstance(value, int):
            return False
        if self.type is float and not isinstance(value, int | float):
            return False
        if isinstance(value, float) and math.isnan(value):
            return False
        lo_ok = self.low is None or (
            value >= self.low if self.closed in ("both", "left") else value > self.low
        )
        hi_ok = self.high is None or (
            value <= self.high if self.closed in ("both", "right") else value < self.high
        )
        return lo_ok and hi_ok

    def __str__(self) -> str:
        left = "[" if self.closed in ("both", "left") and self.low is not None else "("
        right = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        lo = "-inf" if self.low is None else _number(self.low)
        hi = "inf" if self.high is None else _number(self.high)
        article = "an" if self.type is int else "a"
        return f"{article} {self.type.__name__} in the range {left}{lo}, {hi}{right}"


def _number(value: float) -> str:
    """A bound as written: an int in full (2147483647, not 2.14748e+09), a float short."""
    return str(value) if isinstance(value, int) else f"{value:g}"


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of values."""

    options: tuple[Any, ...]

    def accepts(self, value: Any) -> bool:
        return value in self.options

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)


Constraint = Interval | OneOf | type | None


def _accepts(c: Constraint, value: Any) -> bool:
    if c is None:
        return value is None
    if isinstance(c, Interval | OneOf):
        return c.accepts(value)
    return isinstance(value, c) and not (c is int and isinstance(value, bool))


def _describe(c: Constraint) -> str:
    if c is None:
        return "None"
    if isinstance(c, Interval | OneOf):
        return str(c)
    return f"an instance of {c.__name__}"


def validate_params(
    constraints: Mapping[str, Constraint | list[Constraint]],
    params: Mapping[str, Any],
    owner: object | str,
) -> None:
    """Check ``params`` against ``constraints``; raise :class:`InvalidParameterError` naming the first bad one."""  # noqa: E501
    owner_name = owner if isinstance(owner, str) else type(owner).__name__
    for name, value in params.items():
        if name not in constraints:
            continue
        cs = constraints[name]
        options = cs if isinstance(cs, list) else [cs]
        if not any(_accepts(c, value) for c in options):
            allowed = " or ".join(_describe(c) for c in options)
            raise InvalidParameterError(
                f"The {name!r} parameter of {owner_name} must be {allowed}. Got {value!r} instead."
            )
