"""Context likelihood: Edgewise's default univariate streaming detector.

Scores are in [0, 1]; high means anomalous. Cheap ideas, compiled with Numba:

1. **Context novelty.** After a warm-up the value range is cut into ``bins`` coarse
   symbols; the detector counts symbol transitions (previous symbol -> current) in a
   small hashed table and reports a transition never seen before (a sequence break,
   like HTM's prediction error or CAD OSE's contexts).
2. **Prediction error.** A slow exponentially weighted mean and deviation give a z-score
   squashed to [0, 1]; the raw score is the larger of the two signals.
3. **Anomaly likelihood** (Numenta). The mean raw score over the last ``short_window``
   readings is compared with the long-run distribution of that mean (exponentially
   weighted, ``long_alpha``); the Gaussian tail probability ``p`` becomes the score
   ``-log10(p) / tail_digits`` (1 at or beyond ``10**-tail_digits``).
4. **Range novelty and repeat suppression.** A value beyond the range seen so far (by
   more than ``spatial_tolerance`` of it) scores 1. After a detection (score >=
   ``suppress_level``) the following scores are damped for a while that grows with the
   stream's age and its alert rate, so one event raises one alert, as operators (and NAB)
   want.

5. **A two-member ensemble.** Everything above depends on the warm-up length (it fixes
   the symbol grid and when the likelihood starts), and a single length is a knife edge:
   on NAB, warm-ups of 220/250/280/310/340 give 68.8/73.1/72.7/70.1/68.6 (standard).
   The detector therefore runs two members with warm-ups ``warmup -/+ warmup_spread``
   (280 and 340 by default; none scores before reading 280, as the single-member
   default did) and scores the larger of their (undamped) scores, before one shared
   repeat suppression. Centred on the same five lengths this gives
   71.2/72.4/73.1/73.1/70.6.

6. **An ART member** (a different family: adaptive resonance theory on windowed features,
   as ARTime). Means of ``art_step`` readings form a window of ``art_window`` values,
   scaled by the warm-up range; fuzzy ART (complement coding, vigilance
   ``art_vigilance``, fast learning) files each window under a category, and a window
   that founds a new one (after ``art_learn`` windows) is novel. A novelty scores
   ``art_level`` (0.95: below the ensemble's certain 1.0, so a profile that charges false
   alarms more can leave these alerts out by threshold) where the ensemble has not
   alerted for ``art_refractory`` readings; it touches nothing else. NAB, designed on
   the even half of the files and checked once on the odd half: 70.93 / 61.69 / 75.70 ->
   73.45 / 63.76 / 78.48 (even), 75.62 / 63.32 / 81.93 -> 76.10 / 63.32 / 82.85 (odd),
   standard / low-FP / low-FN; all 58 files: 73.10 / 62.06 / 78.62 -> 74.66 / 62.81 /
   80.52 (73.24 / 62.33 / 78.71 -> 74.80 / 63.09 / 80.62 since no epsilon is absolute,
   ``nab.md`` round 7). It is **off by default** (``art_vigilance=0``) and on in :class:`ContextART`
   (``"context-art"``): the gain is inside NAB's file-sampling spread, and it costs about
   2.5x the default's replay time (``detect-speed.md``) and the C export (its category store
   does not fit a device's 2 KiB), both of which the default keeps.

7. **Counters.** A cumulative counter (an energy meter in kWh, litres, pulses, runtime
   hours) only grows, so its level is always new: scored as a level, a week of a meter
   read each minute raised 50 alarms. During the first member's warm-up (``warmup -
   warmup_spread`` readings, when nothing is scored yet) the detector watches whether the
   stream never falls (one drop to half or less is a restart, see below) and rises at
   least 3 times; if so it scores the increments from then on (starting afresh: one more
   warm-up), and the same meter raises 4. A stream that neither fell nor rose 3 times (a
   meter idle all night) is probed again over the next as many readings. A restart from
   zero (a reboot, a rollover, "energy today" at midnight: a drop to half or less) is an
   ordinary increment; a smaller fall is the counter running backwards (tampering, a
   replaced meter) and alarms; two falls in a row mean it was not a counter (a tank that
   filled during the warm-up), and the detector starts afresh on the level. The first
   reading after a gap only re-anchors. ``counter="always"`` / ``"never"`` decide it up
   front. No NAB stream is taken for a counter: their scores are bit-identical.

8. **Creep.** A stream with a trend (a battery draining with noise, a temperature
   drifting up 10 degrees a month) sets a new low or high every day, and range novelty
   scored each one 1: a month of a draining cell raised 28 alarms. Each member now counts
   how often each side of its range moved and by how much (in shares of the range); once
   a side has moved ``creep_min`` times (20), a new move of at most ``creep_factor`` (3)
   times its mean move is creep, and only the likelihood scores it. The same cell raises
   9 alarms, none after day 12; a fault out of step with the trend (0.15 V at once, a
   swapped battery) is still range novelty. ``creep_min=0`` turns it off. NAB: the even
   half is unchanged; on the odd half, looked at once with an adoption rule written
   first, one file (machine_temperature) loses a false alarm; all 58: 73.26 / 62.40 /
   78.73 (was 73.24 / 62.33 / 78.71), ``nab.md`` round 9.

9. **A glitch in the warm-up** (opt-in, ``glitch_gap``). The warm-up's range fixes the
   symbol grid for good, so a single reading of 100 in a 20 +- 0.5 stream, if it comes in
   the warm-up, blinds the detector: a later +12 sd spike or level shift scores 0 (16 of 16
   faults missed over 8 seeds). With ``glitch_gap=5`` a lone extreme that stands apart
   from the next value by more than 5 times the range of the rest is left out of the
   range, the grid and the mean, and 15 of 16 are found (as without the glitch). Off by
   default: designed on NAB's even half (bit-identical there) and checked once on the odd
   half, it lost 2.8 / 5.1 / 1.8 points (two AWS CPU files whose early lone spike recurs),
   ``nab.md`` round 10.

10. **Escalations** (``escalate``). The repeat suppression hid whatever followed a false
    alarm: a 60 sd spike 22 readings after one scored 0.085 (3 of 40 such spikes missed on
    noise). A range-novel reading beyond the seen range by more than ``escalate`` (1) times
    its width now scores 1 inside a suppression too, and starts a new one: 0 of 40 missed.
    NAB, run once after the rule was written: 6 files gain a TP record inside windows they
    already detected; 73.26 / 62.40 / 78.73 as before (``nab.md`` round 11).

The scale is set so that :data:`~edgewise.detect.base.DEFAULT_THRESHOLD` (0.9) is the
threshold NAB's optimiser picks for it on the NAB corpus. No constant is absolute: a
stream read in other units (nA instead of A) scores the same; a warm-up constant at 0
makes any non-zero value novel.

When to use: one sensor per detector, any sampling rate, unknown shape. When not: several
correlated metrics of one device (use :class:`~edgewise.detect.mahalanobis.Mahalanobis`, or
:class:`~edgewise.detect.drift_residual.DriftResidual` where the device has a known-normal
start).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numba as nb
import numpy as np

from edgewise.detect.base import (
    DEFAULT_THRESHOLD,
    Detector,
    first_finite,
    first_finite_column,
    readings_array,
)
from edgewise.errors import InvalidParameterError
from edgewise.params import Interval, OneOf, validate_params

__all__ = ["ContextLikelihood"]

# state vector layout
(_T, _MN, _MX, _M, _V, _W, _W2, _X0, _RSUM, _RI, _MUL, _VL, _NL, _CD, _NH, _H0, _H1,
 _RSUM2, _RI2, _MUL2, _VL2, _NAL, _NLO, _SLO, _NHI, _SHI, _MN2, _MX2) = range(28)
_RING = 28
#: columns of a member's state before the creep counts (_NLO.._SHI) were added
_OLD_RING = 22
#: columns before the warm-up's second lowest and highest values (_MN2, _MX2) were added
_CREEP_RING = 26
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
#: the longest repeat suppression, in readings (2**53: exact as a float, never over)
_CD_MAX = 2.0**53


@nb.njit(cache=True, inline="always")
def _mix(h: np.uint64, v: int) -> np.uint64:
    u = np.uint64(v & 0xFFFFFFFFFFFF)
    return h ^ (u + _GOLDEN + (h << np.uint64(6)) + (h >> np.uint64(2)))


@nb.njit(cache=True, inline="always")
def _tail_score(short, mu, var, sd_min, digits):  # type: ignore[no-untyped-def]
    # within one deviation of the usual level (tail > 0.16, score < 0.12 / digits * 7):
    # far below any threshold, reported as 0 and spared erfc/log10
    z = short - mu
    sd = max(math.sqrt(var), sd_min)
    if z <= 0.0 or z <= sd:
        return 0.0
    tail = 0.5 * math.erfc(z / sd / math.sqrt(2.0))
    return min(max(-math.log10(tail + 1e-10) / digits, 0.0), 1.0)


@nb.njit(cache=True, inline="always")
def _symbol(xv, x0, w):  # type: ignore[no-untyped-def]  # pragma: no cover - jit
    """The symbol of ``xv`` on the grid of step ``w`` from ``x0``, clamped to +-1e15. A
    position that is NaN (inf / inf: a step of infinite width after a warm-up spanning
    +-1e308) is the lowest symbol, as in the C export; an integer cast of NaN is undefined."""
    r = (xv - x0) / w
    if not r >= -1e15:
        r = -1e15
    elif r > 1e15:
        r = 1e15
    return int(math.floor(r))  # noqa: RUF046


@nb.njit(cache=True, inline="always")
def _novel_range(xv, mn, mx, rng, sp_tol, nlo, slo, nhi, shi, c_min, c_fac):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Whether ``xv`` lies beyond the seen range ``[mn, mx]`` by more than ``sp_tol`` of it,
    and is not creep: a side of the range that has already moved ``c_min`` times or more
    (``nlo``/``nhi`` moves, ``slo``/``shi`` their summed size in shares of the range) moves
    again by at most ``c_fac`` times its mean move. A draining battery or a drifting
    temperature sets a new low every day; only a move out of step with its trend is new."""
    if sp_tol <= 0.0:
        return False
    if xv > mx + sp_tol * rng:
        return not (c_min > 0 and nhi >= c_min and xv - mx <= c_fac * shi / nhi * rng)
    if xv < mn - sp_tol * rng:
        return not (c_min > 0 and nlo >= c_min and mn - xv <= c_fac * slo / nlo * rng)
    return False


#: A member's score for range novelty that escalates (:func:`_escalates`): above any real
#: score, so the ensemble's max keeps it; :func:`_suppress` makes it 1, undamped.
_ESCALATE = 2.0


@nb.njit(cache=True, inline="always")
def _escalates(xv, mn, mx, rng, esc):  # type: ignore[no-untyped-def]  # pragma: no cover - jit
    """Whether the range-novel ``xv`` lies beyond the seen range ``[mn, mx]`` by more than
    ``esc`` times its width: far bigger than whatever started a repeat suppression (which
    was inside the range, or beyond it by less), so it is not damped (0: never)."""
    return esc > 0.0 and rng > 0.0 and (xv > mx + esc * rng or xv < mn - esc * rng)


@nb.njit(cache=True, inline="always")
def _warm_see(xv, mn, mn2, mx, mx2):  # type: ignore[no-untyped-def]  # pragma: no cover - jit
    """The warm-up's lowest two and highest two values after seeing ``xv``."""
    if xv < mn:
        mn2, mn = mn, xv
    elif xv < mn2:
        mn2 = xv
    if xv > mx:
        mx2, mx = mx, xv
    elif xv > mx2:
        mx2 = xv
    return mn, mn2, mx, mx2


@nb.njit(cache=True, inline="always")
def _warm_range(mn, mn2, mx, mx2, mu, n, gap):  # type: ignore[no-untyped-def]  # pragma: no cover - jit
    """The warm-up's range and mean of ``n`` values without a lone glitch on either side.

    The highest value is a glitch when it stands apart from the second highest by more than
    ``gap`` times the range of the rest (``mx2 - mn2``), and likewise the lowest: a single
    reading of 100 in a 20 +- 0.5 stream would otherwise widen the range (and the symbol
    grid cut from it) for good, and no later fault inside it would be novel. A glitch is
    also taken out of the mean. ``gap`` 0: keep every value (as before the rule)."""
    if gap <= 0.0 or n < 3:
        return mn, mx, mu
    core = mx2 - mn2
    lo = mn2 - mn > gap * core
    hi = mx - mx2 > gap * core
    if hi:
        mu = (mu * n - mx) / (n - 1)
        n -= 1
        mx = mx2
    if lo:
        mu = (mu * n - mn) / (n - 1)
        mn = mn2
    return mn, mx, mu


@nb.njit(cache=True, inline="always")
def _member_warmup(warm, spread, n, m):  # type: ignore[no-untyped-def]  # pragma: no cover - jit
    """Warm-up of member ``m`` of ``n``: ``warm -/+ spread``, the members spread evenly."""
    return warm if n == 1 else warm - spread + 2 * spread * m // (n - 1)


@nb.njit(cache=True, inline="always")
def _likelihood_learn(ring, ri, raw, short, mul, vl, a_long, nl):  # type: ignore[no-untyped-def]  # pragma: no cover
    """One likelihood test's learning step (:func:`_member`, :func:`_member_run`): store
    ``raw`` in the ring, update the long-run mean and variance of ``short``."""
    ring[ri] = raw
    ri = ri + 1 if ri + 1 < len(ring) else 0
    a = max(a_long, 1.0 / (nl + 1))
    d = short - mul
    mul += a * d
    vl = (1 - a) * (vl + a * d * d)
    return ri, mul, vl


@nb.njit(cache=True, inline="always")
def _member(s, table, m, p, xv, learn, warm):  # type: ignore[no-untyped-def]  # pragma: no cover
    """One member's undamped score of ``xv``; when ``learn``, also update its state."""
    bins, bins2, ws, a_long, sd_min = p[0], p[1], int(p[3]), p[4], p[5]
    ws2, a_long2, sd_min2 = int(p[6]), p[7], p[8]
    sp_tol, a_ew, z_w, z_c, digits = p[14], p[15], p[16], p[17], p[18]
    t = int(s[m, _T])
    if t < warm:
        if learn:
            s[m, _MN], s[m, _MN2], s[m, _MX], s[m, _MX2] = _warm_see(
                xv, s[m, _MN], s[m, _MN2], s[m, _MX], s[m, _MX2])
            s[m, _M] += (xv - s[m, _M]) / (t + 1)
            if t == warm - 1:
                s[m, _MN], s[m, _MX], s[m, _M] = _warm_range(
                    s[m, _MN], s[m, _MN2], s[m, _MX], s[m, _MX2], s[m, _M], warm, p[22])
                floor = max(1e-9 * abs(s[m, _MX]), 1e-300)
                s[m, _W] = max((s[m, _MX] - s[m, _MN]) / bins, floor)
                s[m, _W2] = max((s[m, _MX] - s[m, _MN]) / bins2, floor) if bins2 > 0 else 1.0
                s[m, _X0] = s[m, _MN]
            s[m, _T] = t + 1
        return 0.0
    mask = np.uint64(table.shape[1] - 1)
    q = _symbol(xv, s[m, _X0], s[m, _W])
    q2 = 0
    if bins2 > 0:
        q2 = _symbol(xv, s[m, _X0], s[m, _W2])
    key = np.uint64(0)
    key2 = np.uint64(0)
    nov = 0.0
    if s[m, _NH] >= 1:
        key = _mix(_mix(np.uint64(1000003), int(s[m, _H0])), q) & mask
        nov = 1.0 if table[m, key] == 0 else 0.0
        if bins2 > 0:
            key2 = _mix(_mix(np.uint64(2000003), int(s[m, _H1])), q2) & mask
            nov = 0.5 * (nov + (1.0 if table[m, key2] == 0 else 0.0))
    z = abs(xv - s[m, _M]) / (math.sqrt(s[m, _V]) + s[m, _W])
    raw = max(nov, z_w * (1.0 - math.exp(-z / z_c)))
    rsum = s[m, _RSUM] - s[m, _RING + int(s[m, _RI])] + raw
    short = rsum / ws
    rsum2 = 0.0
    short2 = 0.0
    if ws2 > 0:
        rsum2 = s[m, _RSUM2] - s[m, _RING + ws + int(s[m, _RI2])] + raw
        short2 = rsum2 / ws2
    score = 0.0
    if s[m, _NL] > 50:
        score = _tail_score(short, s[m, _MUL], s[m, _VL], sd_min, digits)
        if ws2 > 0:
            score = max(score, _tail_score(short2, s[m, _MUL2], s[m, _VL2], sd_min2, digits))
    rng = s[m, _MX] - s[m, _MN]
    if _novel_range(xv, s[m, _MN], s[m, _MX], rng, sp_tol, s[m, _NLO], s[m, _SLO], s[m, _NHI],
                    s[m, _SHI], p[20], p[21]):
        score = _ESCALATE if _escalates(xv, s[m, _MN], s[m, _MX], rng, p[23]) else 1.0
    if not learn:
        return score
    # learn: likelihood statistics (inline, not _likelihood_learn: its ring slices cost the
    # one-at-a-time path ~10%; _member_run hoists them out of its loop)
    s[m, _RING + int(s[m, _RI])] = raw
    s[m, _RSUM] = rsum
    ri = int(s[m, _RI]) + 1
    s[m, _RI] = ri if ri < ws else 0
    a = max(a_long, 1.0 / (s[m, _NL] + 1))
    d = short - s[m, _MUL]
    s[m, _MUL] += a * d
    s[m, _VL] = (1 - a) * (s[m, _VL] + a * d * d)
    if ws2 > 0:
        s[m, _RING + ws + int(s[m, _RI2])] = raw
        s[m, _RSUM2] = rsum2
        ri = int(s[m, _RI2]) + 1
        s[m, _RI2] = ri if ri < ws2 else 0
        a = max(a_long2, 1.0 / (s[m, _NL] + 1))
        d = short2 - s[m, _MUL2]
        s[m, _MUL2] += a * d
        s[m, _VL2] = (1 - a) * (s[m, _VL2] + a * d * d)
    s[m, _NL] += 1
    # transition table and prediction statistics
    if s[m, _NH] >= 1:
        table[m, key] = min(table[m, key] + 1, 2_000_000_000)
        if bins2 > 0:
            table[m, key2] = min(table[m, key2] + 1, 2_000_000_000)
    s[m, _H0] = q
    s[m, _H1] = q2
    s[m, _NH] = 1
    if rng > 0.0 and xv > s[m, _MX]:
        s[m, _NHI] += 1.0
        s[m, _SHI] += (xv - s[m, _MX]) / rng
    elif rng > 0.0 and xv < s[m, _MN]:
        s[m, _NLO] += 1.0
        s[m, _SLO] += (s[m, _MN] - xv) / rng
    s[m, _MN] = min(s[m, _MN], xv)
    s[m, _MX] = max(s[m, _MX], xv)
    d = xv - s[m, _M]
    mu = s[m, _M] + a_ew * d
    var = (1 - a_ew) * (s[m, _V] + a_ew * d * d)
    if math.isfinite(mu) and math.isfinite(var):  # see _member_run
        s[m, _M] = mu
        s[m, _V] = var
    s[m, _T] = t + 1
    return score


# ART member state vector layout (then the window of downsampled values)
_AMN, _AMX, _AACC, _ACNT, _ANB, _ANCAT, _ANWIN, _ALAST = range(8)
_ABUF = 8
_ART_PARAMS = ("art_vigilance", "art_step", "art_window", "art_categories", "art_learn",
               "art_refractory", "art_level")


@nb.njit(cache=True, inline="always")
def _art(a, cats, u, pa, xv, learn, t, warm):  # type: ignore[no-untyped-def]  # pragma: no cover
    """ART member: 1.0 when the window of downsampled values founds a new category.

    Fuzzy ART (complement coding, fast learning) on the last ``w`` means of ``d``
    readings, scaled by the range of the first ``warm`` readings. Reports novelty only
    after ``learn_after`` windows; when ``learn``, also updates its state. ``u`` is scratch
    space for the scaled window (``w`` values).
    """
    d, w, rho, n_learn = int(pa[1]), int(pa[2]), pa[0], int(pa[6])
    if learn and t < warm:
        a[_AMN] = min(a[_AMN], xv)
        a[_AMX] = max(a[_AMX], xv)
    acc = a[_AACC] + xv
    cnt = int(a[_ACNT]) + 1
    if cnt < d:
        if learn:
            a[_AACC] = acc
            a[_ACNT] = cnt
        return 0.0
    v = acc / cnt
    nb_ = int(a[_ANB]) + 1
    if learn:
        a[_AACC] = 0.0
        a[_ACNT] = 0
        for k in range(w - 1):
            a[_ABUF + k] = a[_ABUF + k + 1]
        a[_ABUF + w - 1] = v
        a[_ANB] = nb_
    if t < warm or nb_ < w:
        return 0.0
    span = max(a[_AMX] - a[_AMN], 1e-9 * max(abs(a[_AMX]), abs(a[_AMN])), 1e-300)
    ncat = int(a[_ANCAT])
    for k in range(w):
        # the newest value is v (a[_ABUF + w - 1] when learning, not yet stored if not)
        x = v if k == w - 1 else a[_ABUF + k + (0 if learn else 1)]
        u[k] = (min(max((x - a[_AMN]) / span, -1.0), 2.0) + 1.0) / 3.0
    best = -1
    best_t = -1.0
    for j in range(ncat):
        s_and = 0.0
        for k in range(w):
            s_and += min(u[k], cats[j, k]) + min(1.0 - u[k], cats[j, w + k])
        if s_and / w >= rho:
            s_w = 0.0
            for k in range(w):
                s_w += cats[j, k] + cats[j, w + k]
            tj = s_and / (0.001 + s_w)
            if tj > best_t:
                best_t = tj
                best = j
    nwin = int(a[_ANWIN]) + 1
    nov = 1.0 if best < 0 and nwin > n_learn else 0.0
    if learn:
        a[_ANWIN] = nwin
        if best >= 0 or ncat < cats.shape[0]:
            j = best if best >= 0 else ncat
            for k in range(w):
                if best >= 0:
                    cats[j, k] = min(u[k], cats[j, k])
                    cats[j, w + k] = min(1.0 - u[k], cats[j, w + k])
                else:
                    cats[j, k] = u[k]
                    cats[j, w + k] = 1.0 - u[k]
            if best < 0:
                a[_ANCAT] = ncat + 1
    return nov


@nb.njit(cache=True, inline="always")
def _suppress(score, t, cd, nal, p):  # type: ignore[no-untyped-def]  # pragma: no cover - jit
    """The repeat suppression of :func:`_step` (learning) on the ensemble score ``score``
    of the reading at age ``t``: returns the damped score and the new ``_CD``, ``_NAL``.
    An escalation (:data:`_ESCALATE`, from a member) scores 1 and is never damped."""
    if score > 1.0:
        score = 1.0
    elif cd > 0:
        score *= p[12]
    if t < int(p[2]) - int(p[19]):
        return score, cd, nal
    # repeat suppression, longer for streams that alert often
    if score >= p[13]:
        nal += 1
        # clamped before the casts: a float past int64 (suppress_rate=1e20) cast to a
        # negative count and turned the suppression off; _CD_MAX readings is for good
        base = max(int(min(p[9], _CD_MAX)), int(p[10] * t))
        cd = float(int(min(base * (1.0 + p[11] * nal * 1000.0 / t), _CD_MAX)))
    elif cd > 0:
        cd -= 1
    return score, cd, nal


@nb.njit(cache=True)
def _step(s, table, p, xv, learn):  # type: ignore[no-untyped-def]  # pragma: no cover - jit
    """Ensemble score of ``xv`` (max over members, then repeat suppression).

    Row ``m`` of ``s``/``table`` is member ``m``; row 0 also holds the shared
    suppression state (``_CD``, ``_NAL``) and its ``_T`` is the stream age.
    """
    warm, spread = int(p[2]), int(p[19])
    t = int(s[0, _T])
    score = 0.0
    n = s.shape[0]
    for m in range(n):
        w = _member_warmup(warm, spread, n, m)
        score = max(score, _member(s, table, m, p, xv, learn, w))
    if not learn:
        return 1.0 if score > 1.0 else (score * p[12] if s[0, _CD] > 0 else score)
    score, s[0, _CD], s[0, _NAL] = _suppress(score, t, s[0, _CD], s[0, _NAL], p)
    return score


@nb.njit(cache=True, inline="always")
def _art_grade(score, nov, t, a, pa, learn):  # type: ignore[no-untyped-def]  # pragma: no cover
    """The ensemble's final ``score`` at age ``t`` with the ART member's novelty ``nov``:
    ``pa[4]`` where no alert came in the last ``pa[3]`` readings; when ``learn``, an alert
    (either) restarts that count."""
    if score >= pa[5]:
        if learn:
            a[_ALAST] = t
    elif nov > 0 and t - a[_ALAST] > pa[3]:
        score = max(score, pa[4])
        if learn:
            a[_ALAST] = t
    return score


@nb.njit(cache=True)
def _step_art(s, table, p, a, cats, u, pa, xv, learn):  # type: ignore[no-untyped-def]  # pragma: no cover
    """:func:`_step`, then the ART member: its novelty alerts (at ``pa[4]``, below the
    ensemble's certain 1.0) only where no alert came in the last ``pa[3]`` readings; they do
    not start the repeat suppression. A separate kernel, so the default pays nothing."""
    t = int(s[0, _T])
    score = _step(s, table, p, xv, learn)
    nov = _art(a, cats, u, pa, xv, learn, t, int(p[2]))
    return _art_grade(score, nov, t, a, pa, learn)


@nb.njit(cache=True, error_model="numpy")
def _member_run(s, table, m, p, warm, xs, out):  # type: ignore[no-untyped-def]  # pragma: no cover
    """:func:`_member` (learning) over all of ``xs``; ``out[i] = max(out[i], score)``.

    The same arithmetic in the same order as :func:`_member`, with the member's state in
    local variables for the whole loop (read once, written back once), its parameters
    read once and the previous symbol's half of each hash carried over: bit-identical
    scores and state, about twice as fast. Non-finite values are skipped (not learned).
    """
    bins, bins2, ws, a_long, sd_min = p[0], p[1], int(p[3]), p[4], p[5]
    ws2, a_long2, sd_min2 = int(p[6]), p[7], p[8]
    sp_tol, a_ew, z_w, z_c, digits = p[14], p[15], p[16], p[17], p[18]
    t = int(s[m, _T])
    mn, mx, mu, var = s[m, _MN], s[m, _MX], s[m, _M], s[m, _V]
    w1, w2, x0 = s[m, _W], s[m, _W2], s[m, _X0]
    rsum, ri, mul, vl, nl = s[m, _RSUM], int(s[m, _RI]), s[m, _MUL], s[m, _VL], s[m, _NL]
    rsum2, ri2, mul2, vl2 = s[m, _RSUM2], int(s[m, _RI2]), s[m, _MUL2], s[m, _VL2]
    nh, h0, h1 = s[m, _NH], int(s[m, _H0]), int(s[m, _H1])
    nlo, slo, nhi, shi = s[m, _NLO], s[m, _SLO], s[m, _NHI], s[m, _SHI]
    c_min, c_fac, gap, esc = p[20], p[21], p[22], p[23]
    mn2, mx2 = s[m, _MN2], s[m, _MX2]
    ring = s[m, _RING:_RING + ws]
    ring2 = s[m, _RING + ws:_RING + ws + ws2]
    tab = table[m]
    mask = np.uint64(table.shape[1] - 1)
    hk = _mix(np.uint64(1000003), h0)
    hk2 = _mix(np.uint64(2000003), h1)
    for i in range(len(xs)):
        xv = xs[i]
        if not math.isfinite(xv):
            continue
        if t < warm:
            mn, mn2, mx, mx2 = _warm_see(xv, mn, mn2, mx, mx2)
            mu += (xv - mu) / (t + 1)
            if t == warm - 1:
                mn, mx, mu = _warm_range(mn, mn2, mx, mx2, mu, warm, gap)
                floor = max(1e-9 * abs(mx), 1e-300)
                w1 = max((mx - mn) / bins, floor)
                w2 = max((mx - mn) / bins2, floor) if bins2 > 0 else 1.0
                x0 = mn
            t += 1
            out[i] = max(out[i], 0.0)
            continue
        q = _symbol(xv, x0, w1)
        q2 = 0
        if bins2 > 0:
            q2 = _symbol(xv, x0, w2)
        key = np.uint64(0)
        key2 = np.uint64(0)
        nov = 0.0
        if nh >= 1:
            key = _mix(hk, q) & mask
            nov = 1.0 if tab[key] == 0 else 0.0
            if bins2 > 0:
                key2 = _mix(hk2, q2) & mask
                nov = 0.5 * (nov + (1.0 if tab[key2] == 0 else 0.0))
        z = abs(xv - mu) / (math.sqrt(var) + w1)
        raw = max(nov, z_w * (1.0 - math.exp(-z / z_c)))
        rsum = rsum - ring[ri] + raw
        short = rsum / ws
        short2 = 0.0
        if ws2 > 0:
            rsum2 = rsum2 - ring2[ri2] + raw
            short2 = rsum2 / ws2
        score = 0.0
        if nl > 50:
            score = _tail_score(short, mul, vl, sd_min, digits)
            if ws2 > 0:
                score = max(score, _tail_score(short2, mul2, vl2, sd_min2, digits))
        rng = mx - mn
        if _novel_range(xv, mn, mx, rng, sp_tol, nlo, slo, nhi, shi, c_min, c_fac):
            score = _ESCALATE if _escalates(xv, mn, mx, rng, esc) else 1.0
        out[i] = max(out[i], score)
        # learn: likelihood statistics
        ri, mul, vl = _likelihood_learn(ring, ri, raw, short, mul, vl, a_long, nl)
        if ws2 > 0:
            ri2, mul2, vl2 = _likelihood_learn(ring2, ri2, raw, short2, mul2, vl2, a_long2, nl)
        nl += 1
        # transition table and prediction statistics
        if nh >= 1:
            tab[key] = min(tab[key] + 1, 2_000_000_000)
            if bins2 > 0:
                tab[key2] = min(tab[key2] + 1, 2_000_000_000)
        h0 = q
        h1 = q2
        hk = _mix(np.uint64(1000003), q)
        hk2 = _mix(np.uint64(2000003), q2)
        nh = 1.0
        if rng > 0.0 and xv > mx:
            nhi += 1.0
            shi += (xv - mx) / rng
        elif rng > 0.0 and xv < mn:
            nlo += 1.0
            slo += (mn - xv) / rng
        mn = min(mn, xv)
        mx = max(mx, xv)
        d = xv - mu
        mu_next = mu + a_ew * d
        var_next = (1 - a_ew) * (var + a_ew * d * d)
        # a reading that would take them past the largest float (a sentinel such as
        # 1.7e308 after the warm-up) is not learned into the prediction's mean and
        # variance: an infinite variance is never finite again, and the prediction error
        # of every later reading was 0 (a 40 sd spike scored 0.71 for good, not 1)
        if math.isfinite(mu_next) and math.isfinite(var_next):
            mu = mu_next
            var = var_next
        t += 1
    s[m, _T] = t
    s[m, _MN], s[m, _MX], s[m, _M], s[m, _V] = mn, mx, mu, var
    s[m, _W], s[m, _W2], s[m, _X0] = w1, w2, x0
    s[m, _RSUM], s[m, _RI], s[m, _MUL], s[m, _VL], s[m, _NL] = rsum, ri, mul, vl, nl
    s[m, _RSUM2], s[m, _RI2], s[m, _MUL2], s[m, _VL2] = rsum2, ri2, mul2, vl2
    s[m, _NH], s[m, _H0], s[m, _H1] = nh, h0, h1
    s[m, _NLO], s[m, _SLO], s[m, _NHI], s[m, _SHI] = nlo, slo, nhi, shi
    s[m, _MN2], s[m, _MX2] = mn2, mx2


@nb.njit(cache=True, inline="always")
def _members_run(s, table, p, xs, out):  # type: ignore[no-untyped-def]  # pragma: no cover - jit
    """``out[i]``: the members' undamped ensemble score of ``xs[i]`` (0 if not finite),
    learning each value; member by member, as the members never see the suppression."""
    warm, spread = int(p[2]), int(p[19])
    n = s.shape[0]
    out[:] = 0.0
    for m in range(n):
        w = _member_warmup(warm, spread, n, m)
        _member_run(s, table, m, p, w, xs, out)


@nb.njit(cache=True)
def _run(s, table, p, xs, out):  # type: ignore[no-untyped-def]  # pragma: no cover - jit
    """:func:`_step` (learning) over all of ``xs``: the members one after the other
    (:func:`_member_run`), then the shared repeat suppression. The same scores and state as
    the loop over :func:`_step`; non-finite values score 0 and are not learned."""
    t = int(s[0, _T])
    _members_run(s, table, p, xs, out)
    cd, nal = s[0, _CD], s[0, _NAL]
    for i in range(len(xs)):
        if math.isfinite(xs[i]):
            out[i], cd, nal = _suppress(out[i], t, cd, nal, p)
            t += 1
    s[0, _CD], s[0, _NAL] = cd, nal


@nb.njit(cache=True)
def _run_art(s, table, p, a, cats, u, pa, xs, out):  # type: ignore[no-untyped-def]  # pragma: no cover
    """:func:`_step_art` (learning) over all of ``xs``, as :func:`_run` then the ART member
    in the suppression pass (it reads only the ensemble's final score)."""
    t = int(s[0, _T])
    _members_run(s, table, p, xs, out)
    cd, nal = s[0, _CD], s[0, _NAL]
    warm = int(p[2])
    for i in range(len(xs)):
        xv = xs[i]
        if not math.isfinite(xv):
            continue
        score, cd, nal = _suppress(out[i], t, cd, nal, p)
        nov = _art(a, cats, u, pa, xv, True, t, warm)
        out[i] = _art_grade(score, nov, t, a, pa, True)
        t += 1
    s[0, _CD], s[0, _NAL] = cd, nal


# counter probe state (``counter_``): is the stream a cumulative counter (energy in kWh,
# litres, pulses, runtime hours) whose increments should be scored rather than its level?
_CMODE, _CN, _CPREV, _CUP, _CDOWN, _CGAP, _CRESTART = range(7)
_PROBE, _LEVEL, _COUNTER, _DECLARED = 0.0, 1.0, 2.0, 3.0
_COUNTER_MODES = {"auto": _PROBE, "never": _LEVEL, "always": _DECLARED}
_MIN_RISES = 3  # rises a probe must see (and no fall) to call a stream a counter
_MAX_FALLS = 2  # falls in a row (not restarts) after which an auto-detected counter is not one
# what _counter_in asks the caller to do with a finite reading
_FEED, _FEED_THEN_RESET, _BACKWARDS, _RESET_THEN_FEED, _SKIP = range(5)


@nb.njit(cache=True, inline="always")
def _restarted(prev, xv):  # type: ignore[no-untyped-def]  # pragma: no cover - jit
    """Whether a counter at ``prev`` that reads ``xv`` restarted from zero (a reboot, a
    rollover, a daily counter at midnight): it dropped to half its value or less."""
    return prev > 0 and xv <= 0.5 * prev


@nb.njit(cache=True)
def _counter_missing(c):  # type: ignore[no-untyped-def]  # pragma: no cover - jit
    """Note a missing reading: a counter's next reading only re-anchors (see
    :func:`_counter_in`)."""
    if c[_CMODE] >= _COUNTER and c[_CN] > 0:
        c[_CGAP] += 1.0


@nb.njit(cache=True, inline="always")
def _counter_in(c, xv, learn, probe):  # type: ignore[no-untyped-def]  # pragma: no cover - jit
    """What the members see of the finite reading ``xv``, by the counter state ``c``.

    Returns ``(value, action)``. A stream is probed for its first ``probe`` readings (the
    first member's warm-up, when nothing is scored yet): if it never fell (the first drop to
    half or less is a restart, not a fall) and rose at least ``_MIN_RISES`` times, it is a
    counter and from then on the members see its increments, starting afresh. If it fell, it
    is a level for good. If it neither fell nor rose enough (a meter idle all night), the
    probe looks at the next ``probe`` readings, and so on, while the level is scored. The
    first reading after missing ones (``c[_CGAP]``) only re-anchors (its increment spans an
    unknown stretch), and so does one whose increment overflows a double (scores 0, not
    learned: :func:`_run_counter`'s kernels skip a non-finite value too). A counter that
    drops to at most half its last value restarted from zero (a reboot, a rollover, a daily
    counter at midnight): its increment is the new value. A smaller fall is a counter
    running backwards, an alarm; an auto-detected counter that falls ``_MAX_FALLS`` times in
    a row (a tank that filled during the probe, now draining) was not a counter, and the
    members start afresh on its level. When ``learn`` is false nothing in ``c`` changes.
    """
    mode = c[_CMODE]
    if mode == _LEVEL:
        return xv, _FEED
    if mode == _PROBE:
        if learn:
            n = c[_CN]
            prev = c[_CPREV]
            if n > 0:
                if xv > prev:
                    c[_CUP] += 1
                elif xv < prev:
                    if _restarted(prev, xv) and c[_CRESTART] == 0:
                        c[_CRESTART] = 1.0  # one restart from zero is a counter's right
                    else:
                        c[_CDOWN] += 1
            c[_CPREV] = xv
            c[_CN] = n + 1
            if n + 1 >= probe:
                if c[_CDOWN] > 0:
                    c[_CMODE] = _LEVEL
                elif c[_CUP] >= _MIN_RISES:
                    c[_CMODE] = _COUNTER
                    return xv, _FEED_THEN_RESET
                else:  # too few rises to tell: probe the next stretch
                    c[_CN] = 1.0
                    c[_CUP] = 0.0
                    c[_CRESTART] = 0.0
        return xv, _FEED
    if c[_CN] == 0 or c[_CGAP] > 0:  # nothing to subtract yet, or a gap: re-anchor
        if learn:
            c[_CN] = max(c[_CN], 1.0)
            c[_CPREV] = xv
            c[_CGAP] = 0.0
        return xv, _SKIP
    prev = c[_CPREV]
    if xv >= prev:
        if learn:
            c[_CPREV] = xv
            if xv > prev:
                c[_CDOWN] = 0.0
        if math.isinf(xv - prev):  # an increment beyond a double: re-anchor, as after a gap
            return xv, _SKIP
        return xv - prev, _FEED
    if _restarted(prev, xv):
        if learn:
            c[_CPREV] = xv
        return xv, _FEED
    if mode == _COUNTER and c[_CDOWN] + 1 >= _MAX_FALLS:
        if learn:
            c[_CDOWN] += 1
            c[_CMODE] = _LEVEL
        return xv, _RESET_THEN_FEED
    if learn:
        c[_CDOWN] += 1
        c[_CPREV] = xv
    return xv, _BACKWARDS


@nb.njit(cache=True)
def _reset(s, table, a, cats):  # type: ignore[no-untyped-def]  # pragma: no cover - jit
    """Members, suppression and ART member as a fresh detector's."""
    s[:] = 0.0
    s[:, _MN] = np.inf
    s[:, _MX] = -np.inf
    s[:, _MN2] = np.inf
    s[:, _MX2] = -np.inf
    table[:] = 0
    a[:] = 0.0
    a[_AMN] = np.inf
    a[_AMX] = -np.inf
    a[_ALAST] = -1e18
    cats[:] = 0.0


@nb.njit(cache=True)
def _step_counter(s, table, p, c, a, cats, u, pa, art, xv, learn):  # type: ignore[no-untyped-def]  # pragma: no cover
    """:func:`_step` (or :func:`_step_art` when ``art``) of what the counter probe
    (:func:`_counter_in`) makes of ``xv``; a counter running backwards scores 1 (damped by
    the repeat suppression like any alert)."""
    fv, act = _counter_in(c, xv, learn, int(p[2]) - int(p[19]))
    if act == _SKIP:
        return 0.0
    if act == _BACKWARDS:
        if not learn:
            return p[12] if s[0, _CD] > 0 else 1.0
        score, s[0, _CD], s[0, _NAL] = _suppress(1.0, int(s[0, _T]), s[0, _CD], s[0, _NAL], p)
        return score
    if act == _RESET_THEN_FEED:
        if not learn:
            return 0.0  # the members would start afresh: still warming up
        _reset(s, table, a, cats)
    score = _step_art(s, table, p, a, cats, u, pa, fv, learn) if art else _step(
        s, table, p, fv, learn)
    if act == _FEED_THEN_RESET:
        _reset(s, table, a, cats)
    return score


@nb.njit(cache=True)
def _run_counter(s, table, p, c, a, cats, u, pa, art, xs, out):  # type: ignore[no-untyped-def]  # pragma: no cover
    """:func:`_step_counter` (learning) over ``xs`` until the stream is known to be a level:
    the readings are turned into what the members see, and the plain kernels (:func:`_run`,
    :func:`_run_art`) run over each stretch between two events of the probe (a reset, a
    counter running backwards). Returns the index from which the caller runs the plain
    kernel itself (``len(xs)`` if none)."""
    n = len(xs)
    probe = int(p[2]) - int(p[19])
    feed = np.empty(n)
    i = 0
    while i < n:
        k = i
        act = _FEED
        level = False
        while k < n:
            if c[_CMODE] == _LEVEL:
                level = True
                break
            xv = xs[k]
            if not math.isfinite(xv):
                feed[k] = xv
                _counter_missing(c)
                k += 1
                continue
            fv, act = _counter_in(c, xv, True, probe)
            if act == _FEED or act == _FEED_THEN_RESET:
                feed[k] = fv
                k += 1
                if act == _FEED_THEN_RESET:
                    break
                continue
            break
        if k > i:  # contiguous copies: the plain kernels are compiled for those
            seg = feed[i:k].copy()
            res = np.empty(k - i)
            if art:
                _run_art(s, table, p, a, cats, u, pa, seg, res)
            else:
                _run(s, table, p, seg, res)
            out[i:k] = res
        if level:
            return k
        if act == _FEED_THEN_RESET:
            _reset(s, table, a, cats)
            i = k
        elif k >= n:
            i = n
        elif act == _SKIP:
            out[k] = 0.0
            i = k + 1
        elif act == _BACKWARDS:
            out[k], s[0, _CD], s[0, _NAL] = _suppress(1.0, int(s[0, _T]), s[0, _CD],
                                                      s[0, _NAL], p)
            i = k + 1
        else:  # _RESET_THEN_FEED: reading k starts the level stretch (the probe is done)
            _reset(s, table, a, cats)
            i = k
    return n


class ContextLikelihood(Detector):
    """Sequence novelty + prediction error -> anomaly likelihood, with repeat suppression.

    The default univariate detector (``get_detector("context-likelihood")``). It reads the
    first finite value of each reading; readings without one (NaN, inf) score 0 and
    are not learned.

    Parameters
    ----------
    bins
        Symbols the warm-up range is cut into for the transition table.
    bins2
        A second, independent symbol grid (0: none); novelty is then the mean of both.
    warmup
        Readings learned (scored 0) before scoring starts; they also fix the symbol width
        (the centre of the two members' warm-ups, see ``warmup_spread``).
    short_window
        Readings averaged before the likelihood test.
    long_alpha
        Weight of the newest short average in its long-run mean and variance.
    min_sd
        Floor on the long-run deviation of the short average.
    slow_window, slow_long_alpha, slow_min_sd
        A second likelihood test on a longer average (0: none), for slower changes; the
        score is the larger of the two.
    suppress, suppress_frac, suppress_rate
        After the ``k``-th detection at reading ``t``, damp the next
        ``max(suppress, suppress_frac * t) * (1 + suppress_rate * 1000 k / t)`` scores:
        longer in streams that alert often.
    damp
        Factor applied to damped scores.
    suppress_level
        Score that counts as a detection for suppression.
    spatial_tolerance
        Share of the seen range a value must exceed it by to score 1 (0 disables).
    ew_alpha
        Weight of the newest value in the prediction mean and variance.
    z_weight, z_scale
        Prediction-error signal: ``z_weight * (1 - exp(-|z| / z_scale))``.
    tail_digits
        Tail probability ``10**-tail_digits`` maps to score 1.
    table_bits
        The transition table holds ``2**table_bits`` counters (bounded memory).
    warmup_spread
        Two members with warm-ups ``warmup - warmup_spread`` and ``warmup +
        warmup_spread`` (the first scores from its own warm-up on); 0: one member with
        ``warmup``. Costs about 1.6x the single member's time.
    art_vigilance
        ART member's vigilance (share of a window a category must match); 0 (the default):
        no ART member. :class:`ContextART` turns it on.
    art_step, art_window
        The ART member sees windows of ``art_window`` means of ``art_step`` readings.
    art_categories
        Most categories the ART member keeps (bounded memory); a novel window beyond them
        still scores but founds none.
    art_learn
        Windows the ART member learns before it reports novelty.
    art_refractory, art_level
        An ART novelty scores ``art_level`` unless an alert (score >= 0.9) came within the
        last ``art_refractory`` readings; it does not start the repeat suppression.
    counter
        Whether the stream is a cumulative counter whose increments are scored: ``"auto"``
        (the default) tells from the first ``warmup - warmup_spread`` readings (never
        falling, rising at least 3 times); ``"always"`` declares it one; ``"never"`` scores
        the level as it is.
    creep_min, creep_factor
        A side of the seen range that has moved ``creep_min`` times is creeping (a trend):
        a new move of it by at most ``creep_factor`` times its mean move is not range
        novelty. ``creep_min=0``: every move past ``spatial_tolerance`` is.
    glitch_gap
        At the end of a member's warm-up, its highest (lowest) value is a lone glitch, left
        out of the range, the symbol grid and the mean, when it stands apart from the
        second highest (lowest) by more than ``glitch_gap`` times the range of the rest.
        0 (the default): keep every value. 5 undoes the blinding a single glitch in the
        warm-up otherwise causes (a reading of 100 in a 20 +- 0.5 stream made a later
        +12 sd fault score 0 for good), but it costs NAB 2.8 points (standard): early lone
        spikes that recur are real behaviour there (``nab.md`` round 10). The C export
        has no such rule.
    escalate
        A range-novel reading beyond the seen range by more than ``escalate`` times its
        width scores 1 even inside a repeat suppression (and starts a new one): a reading
        far bigger than the event that started the suppression is never hidden by it
        (a 60 sd spike 22 readings after a false alarm scored 0.085). 0: damp everything,
        as before.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.sin(np.arange(2000) / 20) + 0.05 * rng.standard_normal(2000)
    >>> x[1500] = 4.0
    >>> s = ContextLikelihood().score_many(x)
    >>> np.flatnonzero(s >= 0.9).tolist()   # the spike, after 4 alarms while still learning
    [403, 470, 533, 662, 1500]
    >>> bool(np.median(s[400:]) < 0.2)
    True
    """

    _constraints: ClassVar[dict[str, Any]] = {
        "bins": Interval(int, 1, None),
        "bins2": Interval(int, 0, None),
        "warmup": Interval(int, 2, None),
        "short_window": Interval(int, 1, None),
        "long_alpha": Interval(float, 0.0, 1.0, closed="neither"),
        "min_sd": Interval(float, 0.0, None, closed="neither"),
        "slow_window": Interval(int, 0, None),
        "slow_long_alpha": Interval(float, 0.0, 1.0, closed="neither"),
        "slow_min_sd": Interval(float, 0.0, None, closed="neither"),
        "suppress": Interval(int, 0, None),
        "suppress_frac": Interval(float, 0.0, 1.0),
        "suppress_rate": Interval(float, 0.0, None),
        "damp": Interval(float, 0.0, 1.0),
        "suppress_level": Interval(float, 0.0, 1.0),
        "spatial_tolerance": Interval(float, 0.0, None),
        "ew_alpha": Interval(float, 0.0, 1.0, closed="right"),
        "z_weight": Interval(float, 0.0, 1.0),
        "z_scale": Interval(float, 0.0, None, closed="neither"),
        "tail_digits": Interval(float, 0.0, 10.0, closed="right"),
        "table_bits": Interval(int, 4, 24),
        "warmup_spread": Interval(int, 0, None),
        "art_vigilance": Interval(float, 0.0, 1.0, closed="left"),
        "art_step": Interval(int, 1, None),
        "art_window": Interval(int, 1, None),
        "art_categories": Interval(int, 1, None),
        "art_learn": Interval(int, 0, None),
        "art_refractory": Interval(int, 0, None),
        "art_level": Interval(float, 0.0, 1.0),
        "counter": OneOf(tuple(_COUNTER_MODES)),
        "creep_min": Interval(int, 0, None),
        "creep_factor": Interval(float, 0.0, None),
        "glitch_gap": Interval(float, 0.0, None),
        "escalate": Interval(float, 0.0, None),
    }

    def __init__(
        self,
        bins: int = 5,
        bins2: int = 0,
        warmup: int = 310,
        short_window: int = 3,
        long_alpha: float = 0.0004,
        min_sd: float = 0.028,
        slow_window: int = 9,
        slow_long_alpha: float = 0.0027,
        slow_min_sd: float = 0.027,
        suppress: int = 24,
        suppress_frac: float = 0.027,
        suppress_rate: float = 0.09,
        damp: float = 0.085,
        suppress_level: float = 0.859,
        spatial_tolerance: float = 0.007,
        ew_alpha: float = 0.0008,
        z_weight: float = 0.54,
        z_scale: float = 6.8,
        tail_digits: float = 6.98,
        table_bits: int = 14,
        warmup_spread: int = 30,
        art_vigilance: float = 0.0,
        art_step: int = 8,
        art_window: int = 6,
        art_categories: int = 256,
        art_learn: int = 30,
        art_refractory: int = 1000,
        art_level: float = 0.95,
        counter: str = "auto",
        creep_min: int = 20,
        creep_factor: float = 3.0,
        glitch_gap: float = 0.0,
        escalate: float = 1.0,
    ) -> None:
        params = dict(locals())
        params.pop("self")
        validate_params(self._constraints, params, self)
        if warmup - warmup_spread < 2:
            raise InvalidParameterError(
                f"The 'warmup_spread' parameter of ContextLikelihood must leave every member "
                f"a warm-up of at least 2 (warmup - warmup_spread >= 2). "
                f"Got warmup={warmup!r}, warmup_spread={warmup_spread!r} instead."
            )
        for k, v in params.items():
            setattr(self, k, v)
        self._p = np.array(
            [
                bins, bins2, warmup, short_window, long_alpha, min_sd, slow_window,
                slow_long_alpha, slow_min_sd, suppress, suppress_frac, suppress_rate, damp,
                suppress_level, spatial_tolerance, ew_alpha, z_weight, z_scale, tail_digits,
                warmup_spread, creep_min, creep_factor, glitch_gap, escalate,
            ],
            dtype=float,
        )
        members = 2 if warmup_spread > 0 else 1
        self.state_ = np.zeros((members, _RING + short_window + slow_window))
        self.state_[:, _MN] = np.inf
        self.state_[:, _MX] = -np.inf
        self.state_[:, _MN2] = np.inf
        self.state_[:, _MX2] = -np.inf
        self.table_ = np.zeros((members, 1 << table_bits), dtype=np.int32)
        self.counter_ = np.array([_COUNTER_MODES[counter], 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        # counter_[0] != _LEVEL (probing, or a counter), as a bool for the hot path
        self._counter_path = counter != "never"
        self._init_art()

    def _init_art(self) -> None:
        """Fresh ART member state (a placeholder of size 1 when ``art_vigilance == 0``)."""
        on = self.art_vigilance > 0
        w = self.art_window if on else 1
        self._pa = np.array([self.art_vigilance, self.art_step, self.art_window,
                             self.art_refractory, self.art_level, DEFAULT_THRESHOLD,
                             self.art_learn], dtype=float)
        self.art_state_ = np.zeros(_ABUF + w)
        self.art_state_[_AMN] = np.inf
        self.art_state_[_AMX] = -np.inf
        self.art_state_[_ALAST] = -1e18
        self.art_ = np.zeros((self.art_categories if on else 1, 2 * w))
        self._art_u = np.zeros(w)  # scratch: the scaled window, not state

    @classmethod
    def _unit_test_params(cls) -> list[dict[str, Any]]:
        return [
            {"warmup": 20, "warmup_spread": 5},
            {"warmup": 20, "warmup_spread": 5, "art_step": 1, "art_window": 3,
             "art_categories": 4, "art_learn": 2, "art_refractory": 5, "art_vigilance": 0.97},
            {"warmup": 50, "bins": 10, "bins2": 7, "slow_window": 0, "spatial_tolerance": 0.0,
             "warmup_spread": 0},
        ]

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickle; one saved before the ensemble becomes a single member, one
        saved before the ART member, the counter probe or the creep rule has none."""
        if np.ndim(state["state_"]) == 1:
            state["state_"] = np.asarray(state["state_"])[None, :]
            state["table_"] = np.asarray(state["table_"])[None, :]
            state["warmup_spread"] = 0
            state["_p"] = np.append(state["_p"][:19], 0.0)
        if len(state["_p"]) == 20:  # saved before the creep rule: none, as then
            state["_p"] = np.append(state["_p"], [0.0, 3.0])
            state["creep_min"], state["creep_factor"] = 0, 3.0
            st = np.asarray(state["state_"])
            state["state_"] = np.concatenate(
                [st[:, :_OLD_RING], np.zeros((len(st), _CREEP_RING - _OLD_RING)),
                 st[:, _OLD_RING:]], axis=1)
        if len(state["_p"]) == 22:  # saved before the warm-up glitch rule: none, as then
            state["_p"] = np.append(state["_p"], 0.0)
            state["glitch_gap"] = 0.0
            st = np.asarray(state["state_"])
            second = np.tile([np.inf, -np.inf], (len(st), 1))
            state["state_"] = np.concatenate(
                [st[:, :_CREEP_RING], second, st[:, _CREEP_RING:]], axis=1)
        if len(state["_p"]) == 23:  # saved before escalations: none, as then
            state["_p"] = np.append(state["_p"], 0.0)
            state["escalate"] = 0.0
        self.__dict__.update(state)
        if "counter_" not in state:  # saved before the counter probe: scores levels, as then
            self.counter = "never"
            self.counter_ = np.array([_LEVEL, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        self._counter_path = bool(self.counter_[_CMODE] != _LEVEL)
        if "art_state_" not in state:  # saved before the ART member: none (the defaults)
            defaults = inspect.signature(ContextLikelihood.__init__).parameters
            for name in _ART_PARAMS:
                setattr(self, name, defaults[name].default)
            self._init_art()

    @property
    def warming_up(self) -> bool:
        """Whether a member is still in its warm-up, whose range fixes its symbol grid for
        good (the gateway keeps readings its cleaner flags as spikes out of it).

        >>> det = ContextLikelihood(warmup=20, warmup_spread=0)
        >>> _ = det.score_many(np.sin(np.arange(19.0)))
        >>> det.warming_up, (det.score_many(np.array([0.5])), det.warming_up)[1]
        (True, False)
        """
        return any(self.state_[m, _T] < w for m, w in enumerate(self.member_warmups()))

    def member_warmups(self) -> list[int]:
        """Each member's warm-up length (``warmup -/+ warmup_spread``, spread evenly).

        >>> ContextLikelihood().member_warmups()
        [280, 340]
        """
        n = len(self.state_)
        warm, spread = int(self._p[2]), int(self._p[19])
        return [int(_member_warmup(warm, spread, n, m)) for m in range(n)]

    @property
    def is_counter(self) -> bool:
        """Whether the stream is scored as a cumulative counter (by its increments), as
        told by the probe or declared with ``counter="always"``.

        >>> det = ContextLikelihood(warmup=20, warmup_spread=0)
        >>> _ = det.score_many(np.cumsum(np.arange(60) % 3 + 1.0))  # a meter
        >>> det.is_counter
        True
        """
        return bool(self.counter_[_CMODE] >= _COUNTER)

    def learnable(self, v: float) -> float:
        """What to learn of a reading ``v`` that the gateway's cleaner flagged as a spike:
        ``v`` held to the seen range widened by ``escalate`` (at least 1) times its width
        on either side, so one glitch (a 65535 error code in a 20 +- 0.5 stream) widens
        what is normal by one width, not to 65535 (which made a later 20 sd spike score
        0.66); a spike that recurs widens it again,
        so a stream whose spikes are its normal still learns them. ``v`` itself while a
        member warms up, on a counter (or while probing for one), or where the range has
        no width yet.

        >>> det = ContextLikelihood(warmup=20, warmup_spread=0)
        >>> _ = det.score_many(20 + np.sin(np.arange(40.0)))
        >>> round(det.learnable(65535.0), 3), det.learnable(20.5)
        (23.0, 20.5)
        """
        if self._counter_path or self.warming_up or not math.isfinite(v):
            return v
        lo = float(self.state_[:, _MN].min())
        hi = float(self.state_[:, _MX].max())
        reach = max(float(self.escalate), 1.0) * (hi - lo)
        if not reach > 0.0:
            return v
        return min(max(v, lo - reach), hi + reach)

    def learn_one(self, x: Mapping[str, float]) -> None:
        """Update the detector with one reading (NaN-only readings are ignored)."""
        v = first_finite(x)
        if v is None:
            if self._counter_path:
                _counter_missing(self.counter_)
            return
        if self._counter_path:
            _step_counter(self.state_, self.table_, self._p, self.counter_, self.art_state_,
                          self.art_, self._art_u, self._pa, self.art_vigilance > 0, v, True)
            self._counter_path = bool(self.counter_[_CMODE] != _LEVEL)
        elif self.art_vigilance > 0:
            _step_art(self.state_, self.table_, self._p, self.art_state_, self.art_,
                      self._art_u, self._pa, v, True)
        else:
            _step(self.state_, self.table_, self._p, v, True)

    def score_one(self, x: Mapping[str, float]) -> float:
        """Score one reading in [0, 1] without learning it."""
        v = first_finite(x)
        if v is None:
            return 0.0
        if self._counter_path:
            return float(_step_counter(self.state_, self.table_, self._p, self.counter_,
                                       self.art_state_, self.art_, self._art_u, self._pa,
                                       self.art_vigilance > 0, v, False))
        if self.art_vigilance > 0:
            return float(_step_art(self.state_, self.table_, self._p, self.art_state_,
                                   self.art_, self._art_u, self._pa, v, False))
        return float(_step(self.state_, self.table_, self._p, v, False))

    def score_many(self, X: np.ndarray, columns: Sequence[str] | None = None) -> np.ndarray:
        """Score then learn each value in order (first finite column of 2-D input); compiled
        loop. ``X`` must be 1-D or 2-D, ``columns`` (where given) one name per column."""
        a = readings_array(X, columns)
        # the kernels skip non-finite values themselves: one column goes in as it is
        # columns passed on: a metric named twice reads as the loop's reading() makes it
        a = np.ascontiguousarray(a[:, 0]) if a.ndim == 2 and a.shape[1] == 1 else (
            first_finite_column(a, columns))
        if not a.flags.writeable:  # pandas 3's to_numpy(): a second compiled version of
            a = a.copy()  # each kernel (6 s on its first call) for read-only input
        out = np.empty(len(a))
        if self._counter_path:  # up to the stretch from which the stream is a level
            k = _run_counter(self.state_, self.table_, self._p, self.counter_,
                             self.art_state_, self.art_, self._art_u, self._pa,
                             self.art_vigilance > 0, a, out)
            self._counter_path = bool(self.counter_[_CMODE] != _LEVEL)
            if k == len(a):
                return out
            a, rest = a[k:], out[k:]
        else:
            rest = out
        if self.art_vigilance > 0:
            _run_art(self.state_, self.table_, self._p, self.art_state_, self.art_,
                     self._art_u, self._pa, a, rest)
        else:
            _run(self.state_, self.table_, self._p, a, rest)
        return out


class ContextART(ContextLikelihood):
    """:class:`ContextLikelihood` with its ART member on (``art_vigilance=0.8``), as
    ``"context-art"``: NAB 74.80 / 63.09 / 80.62 against the default's 73.24 / 62.33 / 78.71
    (``benchmarks/results/nab.md``, round 4), at about 2.5x the replay time and without a C export.

    Every parameter of :class:`ContextLikelihood` is accepted by keyword.

    >>> det = ContextART(warmup=20, warmup_spread=5)
    >>> det.art_vigilance, det.clone().art_vigilance
    (0.8, 0.8)
    """

    def __init__(self, **params: Any) -> None:
        params.setdefault("art_vigilance", 0.8)
        super().__init__(**params)
