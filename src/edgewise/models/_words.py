"""Profile features in words a person reads: "runs hotter: bearing_temp_c median 60.4 vs
fleet 48.7". Used by :mod:`edgewise.models.cluster` for what sets a group apart and why a
device is an odd one out.

>>> trait_text("level:bearing_temp_c", 60.4, 48.7, True)
'runs hotter: bearing_temp_c median 60.4 vs fleet 48.7'
>>> trait_text("at_ref:vib_mms", 4.1, 2.2, True, "group 0", "speed_rpm", 2400.0)
'higher vib_mms at the same speed_rpm: 4.1 vs group 0 2.2 at speed_rpm=2400'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["and_more", "feature_kind", "feature_metric", "first_and_more", "pair_metrics",
           "rounded", "short_number", "short_pair", "trait_text"]


def and_more(total: int, shown: int, noun: str = "") -> str:
    """What a message naming the first ``shown`` of ``total`` things adds after them:
    ``" and N more"`` (``" and N more <noun>"`` with a ``noun``), or ``""`` when it names
    them all.

    >>> and_more(12, 10), and_more(7, 5, "device(s)"), and_more(3, 3)
    (' and 2 more', ' and 2 more device(s)', '')
    """
    return f" and {total - shown} more{' ' + noun if noun else ''}" if total > shown else ""


def first_and_more(items: Sequence[Any], shown: int = 10, *,
                   each: Callable[[Any], str] = str, noun: str = "") -> str:
    """The first ``shown`` of ``items``, each as ``each`` writes it, joined by ``", "``,
    then how many more (:func:`and_more`).

    >>> first_and_more(["a", "b", "c", "d", "e"], 3)
    'a, b, c and 2 more'
    >>> first_and_more([("t", 1), ("p", 2)], each=lambda kv: f"{kv[0]!r}: {kv[1]}")
    "'t': 1, 'p': 2"
    """
    return ", ".join(each(x) for x in items[:shown]) + and_more(len(items), shown, noun)


def feature_kind(feature: str) -> str:
    """``level`` of ``level:temp``."""
    return feature.split(":", 1)[0]


def feature_metric(feature: str) -> str:
    """``temp`` of ``level:temp`` (``a~b`` for a pair)."""
    return feature.split(":", 1)[1]


def pair_metrics(pair: str, metrics: Sequence[str] | None = None) -> tuple[str, str]:
    """The two metrics of a pair ``a~b``; with the known ``metrics``, the split whose two
    sides both are metrics (a metric's own name may hold ``~``).

    >>> pair_metrics("in~flow~out", ["in~flow", "out"])
    ('in~flow', 'out')
    >>> pair_metrics("flow~rpm")
    ('flow', 'rpm')
    """
    known = set(metrics or ())
    for i, ch in enumerate(pair):
        if ch == "~" and pair[:i] in known and pair[i + 1:] in known:
            return pair[:i], pair[i + 1:]
    a, _, b = pair.partition("~")
    return a, b


def rounded(v: float) -> float | None:
    """``v`` to 4 significant digits; ``None`` (JSON null) when not finite."""
    return None if not math.isfinite(v) else float(f"{v:.4g}")


def short_number(v: float, digits: int = 3) -> str:
    """A value short, as a person reads it: ``digits`` significant digits (3), big ones
    with a unit prefix.

    >>> short_number(2012345.0), short_number(12345.0), short_number(2330.4)
    ('2.01M', '12.3k', '2330')
    >>> short_number(0.01234), short_number(float("nan")), short_number(-9.6e305)
    ('0.0123', 'n/a', '-9.6e+305')
    >>> short_number(553.6, 4), short_number(1402.25, 6)
    ('553.6', '1402.25')
    """
    if not math.isfinite(v):
        return "n/a"
    if abs(v) >= 1e12:  # past the prefixes: an exponent, never one before a prefix
        return f"{v:.{digits}g}"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if abs(v) >= div:
            return f"{v / (div if suffix != 'k' else 1e3):.{digits}g}{suffix}"
    if abs(v) >= 1000:
        return f"{v:.0f}" if digits <= 4 else f"{v:.{digits}g}"
    return f"{v:.{digits}g}"


def short_pair(value: float, typical: float) -> tuple[str, str]:
    """``value`` and ``typical`` short (:func:`short_number`), with as many more digits
    (up to 7) as it takes to write two different values differently: a group "higher"
    than its fleet never reads "554 vs fleet 554".

    >>> short_pair(60.4, 48.7), short_pair(553.97, 553.6), short_pair(5.0, 5.0)
    (('60.4', '48.7'), ('554', '553.6'), ('5', '5'))
    """
    a, b = short_number(value), short_number(typical)
    digits = 3
    while a == b and value != typical and digits < 7:
        digits += 1
        a, b = short_number(value, digits), short_number(typical, digits)
    return a, b


def _hour(h: float) -> str:
    return "no peak" if not math.isfinite(h) else f"{round(h) % 24:02d}:00"


def trait_text(feature: str, value: float, typical: float, more: bool, than: str = "fleet",
               reference: str | None = None, reference_value: float | None = None,
               metrics: Sequence[str] | None = None) -> str:
    """``feature`` at ``value`` against ``typical`` (of ``than``: the fleet, a group) in
    words; ``more`` says on which side (on the clustering scale) it lies. A daily-peak
    feature's values are hours of day; ``metrics`` (the known metric names) splits a
    pair whose metric names hold ``~``.

    >>> trait_text("corr:flow~rpm", 0.2, 0.9, False, "group 1")
    'flow and rpm move together less: correlation 0.2 vs group 1 0.9'
    """
    kind, m = feature_kind(feature), feature_metric(feature)
    shown, usual = short_pair(value, typical)
    vs = f"{shown} vs {than} {usual}"
    if kind == "level":
        if "temp" in m.lower():
            return f"{'runs hotter' if more else 'runs cooler'}: {m} median {vs}"
        return f"{'higher' if more else 'lower'} {m}: median {vs}"
    if kind == "at_ref":
        return (f"{'higher' if more else 'lower'} {m} at the same {reference}: {vs} at "
                f"{reference}={short_number(reference_value or 0.0)}")
    if kind == "spread":
        return f"{m} varies {'more' if more else 'less'}: interquartile range {vs}"
    if kind == "trend":
        return (f"{m} {'rises' if value > typical else 'falls'} over time: "
                f"{shown}/day vs {than} {usual}/day")
    if kind == "acf1":
        return (f"{m} {'smoother' if more else 'more erratic'} from step to step: lag-1 "
                f"autocorrelation {vs}")
    if kind == "daily":
        return (f"{'stronger' if more else 'weaker'} daily cycle in {m}: "
                f"{shown} of its variance vs {than} {usual}")
    if kind in ("daily_cos", "daily_sin"):
        return f"daily peak of {m} near {_hour(value)} UTC vs {than} {_hour(typical)}"
    a, b = pair_metrics(m, metrics)
    return f"{a} and {b} move together {'more' if more else 'less'}: correlation {vs}"
