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
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgewise.errors import InvalidParameterError

__all__ = ["Interval", "OneOf", "validate_params"]

_FLOAT_MAX = 1.7976931348623157e308


@dataclass(frozen=True)
class Interval:
    """A numeric range. ``closed`` is 'both', 'left', 'right' or 'neither'.

    ``int`` takes any integral number (``np.int64(5)`` too), ``float`` any real one
    (``np.float32(0.1)``, an int); never a bool, never NaN. A ``None`` bound is open-ended:
    ``inf`` itself is outside ``[0, inf)``. A range that takes ``inf`` (a parameter that
    ``inf`` turns off) says so with the bound ``math.inf`` and a closed end: ``[1, inf]``.

    >>> Interval(float, 0.0, None, closed="neither").accepts(math.inf)
    False
    >>> iv = Interval(float, 1.0, math.inf)
    >>> str(iv), iv.accepts(math.inf)
    ('a float in the range [1, inf]', True)
    >>> import numpy as np
    >>> Interval(int, 1, None).accepts(np.int64(5)), Interval(int, 1, None).accepts(True)
    (True, False)
    """

    type: type
    low: float | None
    high: float | None
    closed: str = "both"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.type is int and not isinstance(value, numbers.Integral):
            return False
        if self.type is float and not isinstance(value, numbers.Real):
            return False
        if self.type is float and isinstance(value, numbers.Integral) and abs(value) > _FLOAT_MAX:
            return False  # an int no float holds (10**400)
        if not isinstance(value, numbers.Integral) and math.isnan(value):
            return False
        # a None bound is open: inf is outside it (a bound of math.inf, closed, takes inf)
        lo_ok = value > -math.inf if self.low is None else (
            value >= self.low if self.closed in ("both", "left") else value > self.low
        )
        hi_ok = value < math.inf if self.high is None else (
            value <= self.high if self.closed in ("both", "right") else value < self.high
        )
        return bool(lo_ok and hi_ok)

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
        """Whether ``value`` is one of the options, and of its kind: ``True`` is not the
        option ``1`` (``True == 1``), and an array is never an option (``value in
        options`` compared it element by element: a 1-element array of an option's
        text was taken, a longer one raised numpy's ``ValueError``, not a refusal).

        >>> o = OneOf(("kmeans", 1))
        >>> o.accepts("kmeans"), o.accepts(1), o.accepts(True), o.accepts(["kmeans"])
        (True, True, False, False)
        """
        for option in self.options:
            if value is option:
                return True
            if isinstance(value, bool) != isinstance(option, bool):
                continue
            same_kind = isinstance(value, type(option)) or (
                isinstance(value, numbers.Number) and isinstance(option, numbers.Number))
            if not same_kind:
                continue
            try:
                if bool(value == option):
                    return True
            except (TypeError, ValueError):  # an equality with no single truth value
                continue
        return False

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
