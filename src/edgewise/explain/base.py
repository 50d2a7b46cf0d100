"""What an explanation is: a base value plus signed per-feature contributions.

``base + sum(contributions.values()) == value`` for every explanation in this package
(exactly, up to floating point), so a dashboard can draw them as a waterfall.

>>> e = Explanation(value=3.0, base=1.0, contributions={"a": 1.5, "b": 0.5})
>>> e.check()
True
>>> e.top(1)
[('a', 1.5)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgewise.params import Interval, validate_params

__all__ = ["Explanation", "check_top"]


@dataclass
class Explanation:
    """One prediction or score, the base it starts from, and each feature's signed push."""

    value: float
    base: float
    contributions: dict[str, float] = field(default_factory=dict)

    def check(self, rel_tol: float = 1e-6, abs_tol: float = 1e-6) -> bool:
        """Whether base plus contributions equals the value."""
        total = self.base + math.fsum(self.contributions.values())
        return math.isclose(total, self.value, rel_tol=rel_tol, abs_tol=abs_tol)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` largest contributions by magnitude, signed; ``k`` an integer >= 0 (a
        negative one cut from the end: ``top(-1)`` was every feature but the weakest).

        >>> Explanation(1.0, 0.0, {"a": 0.2, "b": 0.8}).top(-1)
        Traceback (most recent call last):
        ...
        edgewise.errors.InvalidParameterError: The 'k' parameter of Explanation.top must be an int in the range [0, inf). Got -1 instead.
        """  # noqa: E501
        check_top(k)
        return sorted(self.contributions.items(), key=lambda kv: -abs(kv[1]))[:k]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form for the API."""
        return {"value": self.value, "base": self.base, "contributions": self.contributions}


def check_top(k: object) -> None:
    """:class:`InvalidParameterError` unless ``k`` (how many features to list) is an int >= 0."""
    validate_params({"k": Interval(int, 0, None)}, {"k": k}, "Explanation.top")
