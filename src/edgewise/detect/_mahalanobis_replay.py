"""The compiled replay behind :meth:`Mahalanobis.score_explain_many
<edgewise.detect.mahalanobis.Mahalanobis.score_explain_many>`: per row one Cholesky of
the masked correlation gives T², its degrees of freedom and the metric with the largest
conditional-residual share; the row is then learned as ``learn_one`` learns it."""

from __future__ import annotations

import math

import numba as nb
import numpy as np

__all__ = ["MAX_TRACE", "replay"]

#: Largest trace of a masked correlation's inverse that :meth:`Mahalanobis.score_explain_many`
#: compiles: every eigenvalue is then at least 1e-4, so the pseudo-inverse that
#: :meth:`Mahalanobis.explain_one` takes drops none (its cut-off is 1e-15 of the largest,
#: at most 4096) and equals the inverse but for rounding. A row beyond goes through the loop.
MAX_TRACE = 1e4


@nb.njit(cache=True)
def replay(X, cols, any_finite, mean, cov, counts, refused, st, p, t2, dof, least, best, share):  # type: ignore[no-untyped-def]  # pragma: no cover - jit
    """:meth:`Mahalanobis.score_explain_many`'s rows in order: row ``r`` of ``X`` holds the
    detector's metric ``m`` in column ``cols[m]`` (-1: not in ``X``, missing), and
    ``any_finite[r]`` says whether the row (columns of no metric too) holds a finite value;
    ``p`` is ``(alpha, shrinkage, warmup, warm_count, guard_sd, guard_run)``, a metric scored
    from ``warm_count`` readings of its own (:func:`~edgewise.detect.mahalanobis.warm_count`),
    a row not learned where a warm metric lies over ``guard_sd`` deviations off, up to
    ``guard_run`` rows of it in a row (:data:`~edgewise.detect.mahalanobis.GUARD_SD`).
    Writes ``t2`` (NaN: not scored), ``dof``, ``least`` (the fewest readings of a metric
    scored, before this row's), ``best`` (the index of the metric with the
    largest share, -1 for none) and ``share`` (that share), and learns each row into
    ``mean``, ``cov``, ``counts``, ``refused`` (each metric's readings in a row left out by
    the guard) and ``st[0]`` (readings learned) as ``learn_one`` does.
    Returns the number of rows done: fewer where a row needs the loop (a deviation that
    overflows, a correlation that is not positive definite or near singular, an update
    that overflows: ``learn_one`` leaves it out or starts a metric again). Where the
    solve for the shares overflows (a reading near 1e308), the shares are those of the
    deviation scaled down by a power of two, as :meth:`Mahalanobis.explain_one` takes them;
    T² stays that of the reading (infinite: score 1)."""
    alpha, shrinkage, warmup, warm_at = p[0], p[1], p[2], p[3]  # warm_at: warm_count
    guard_sd, guard_run = p[4], p[5]
    k = len(mean)
    c = np.empty((k, k))
    low = np.empty((k, k))
    inv = np.empty((k, k))
    y = np.empty(k)
    v = np.empty(k)
    q = np.empty(k)
    sd = np.empty(k)
    w = np.empty(k)
    terms = np.empty(k)
    a = np.empty(k)
    d = np.empty(k)
    new_mean = np.empty(k)
    new_cov = np.empty((k, k))
    z = np.empty(k)
    on = np.empty(k, dtype=np.bool_)  # the metrics the row is scored on: read and warm
    held = np.empty(k, dtype=np.bool_)  # read, far beyond its deviation: row not learned
    for r in range(len(X)):
        for m in range(k):
            z[m] = X[r, cols[m]] if cols[m] >= 0 else np.nan
        if not any_finite[r]:
            continue  # scores 0, no share, not learned
        used = 0
        fewest = np.inf
        for j in range(k):
            on[j] = np.isfinite(z[j]) and counts[j] >= warm_at
            if on[j]:
                used += 1
                fewest = min(fewest, counts[j])
        if used:
            # the shrunk covariance's deviations and scales (shrink_covariance)
            for j in range(k):
                dj = cov[j, j]
                eps = 1e-9 * (dj if dj > 0 else mean[j] * mean[j]) + 1e-300
                sd[j] = math.sqrt((1.0 - shrinkage) * dj + (shrinkage * dj + eps))
                y[j] = (z[j] - mean[j]) / sd[j] if on[j] else 0.0
                if not np.isfinite(y[j]) or not np.isfinite(sd[j]) or sd[j] == 0.0:
                    return r
            # the masked correlation: metrics not used are left out (identity)
            for i in range(k):
                for j in range(k):
                    if i == j:
                        c[i, j] = 1.0
                    elif on[i] and on[j]:
                        c[i, j] = (1.0 - shrinkage) * cov[i, j] / (sd[i] * sd[j])
                    else:
                        c[i, j] = 0.0
            # Cholesky c = L L'
            for j in range(k):
                acc = c[j, j]
                for m in range(j):
                    acc -= low[j, m] * low[j, m]
                if not acc > 0.0:
                    return r
                low[j, j] = math.sqrt(acc)
                for i in range(j + 1, k):
                    acc = c[i, j]
                    for m in range(j):
                        acc -= low[i, m] * low[j, m]
                    low[i, j] = acc / low[j, j]
            # L v = y: T² = v'v; L' q = v: q = c⁻¹ y
            total = 0.0
            for i in range(k):
                acc = y[i]
                for m in range(i):
                    acc -= low[i, m] * v[m]
                v[i] = acc / low[i, i]
                total += v[i] * v[i]
            for i in range(k - 1, -1, -1):
                acc = v[i]
                for m in range(i + 1, k):
                    acc -= low[m, i] * q[m]
                q[i] = acc / low[i, i]
            # L⁻¹, column by column: the precision's diagonal is its columns' squares
            trace = 0.0
            for j in range(k):
                for i in range(k):
                    if i < j:
                        inv[i, j] = 0.0
                        continue
                    acc = 1.0 if i == j else 0.0
                    for m in range(j, i):
                        acc -= low[i, m] * inv[m, j]
                    inv[i, j] = acc / low[i, i]
            for j in range(k):
                acc = 0.0
                for i in range(j, k):
                    acc += inv[i, j] * inv[i, j]
                terms[j] = acc  # (c⁻¹)_jj for now
                trace += acc
            if not trace <= MAX_TRACE or total != total:
                return r
            if st[0] >= warmup:
                t2[r] = total
                dof[r] = used
                least[r] = fewest
            # conditional_terms(w, pii): w = S⁻¹ dz, pii = (c⁻¹)_jj / sd_j²
            risky = False
            for j in range(k):
                w[j] = q[j] / sd[j]
                risky = risky or not np.isfinite(w[j]) or not np.isfinite(y[j] * q[j])
            if risky:  # a reading near 1e308: the shares of y scaled as unit_deviation does
                top = 0.0
                for j in range(k):
                    top = max(top, abs(y[j]))
                e = math.frexp(top)[1]
                for i in range(k):
                    acc = math.ldexp(y[i], -e)
                    for m in range(i):
                        acc -= low[i, m] * v[m]
                    v[i] = acc / low[i, i]
                for i in range(k - 1, -1, -1):
                    acc = v[i]
                    for m in range(i + 1, k):
                        acc -= low[m, i] * q[m]
                    q[i] = acc / low[i, i]
                for j in range(k):
                    w[j] = q[j] / sd[j]
            top = 0.0
            inf = False
            for j in range(k):
                if math.isinf(w[j]):
                    inf = True
                elif abs(w[j]) > top:
                    top = abs(w[j])
            big = False
            for j in range(k):
                if inf:  # an infinite w_j alone takes the blame
                    terms[j] = 1.0 if math.isinf(w[j]) else 0.0
                else:
                    ws = w[j] / top if top > 0.0 else w[j]
                    t = ws * (ws / (terms[j] / (sd[j] * sd[j])))
                    terms[j] = t if t > 0.0 or t != t else 0.0  # max(t, 0), NaN kept
                    big = big or math.isinf(terms[j])
            total = 0.0
            for j in range(k):
                if big:  # a term that overflows alone takes the blame
                    terms[j] = 1.0 if math.isinf(terms[j]) else 0.0
                total += terms[j]
            if total > 0.0 and np.isfinite(total):
                j_best, s_best = -1, 0.0
                for j in range(k):
                    part = terms[j] / total
                    if part > s_best:
                        j_best, s_best = j, part
                best[r], share[r] = j_best, s_best
        # learn_one's guard: a warm metric far beyond its deviation holds the reading back
        n_held = 0
        for j in range(k):
            held[j] = (np.isfinite(z[j]) and cov[j, j] > 0.0 and counts[j] >= warm_at
                       and refused[j] < guard_run
                       and abs(z[j] - mean[j]) > guard_sd * math.sqrt(cov[j, j]))
            n_held += held[j]
        if n_held:  # not learned
            for j in range(k):
                refused[j] += 1.0 if held[j] else 0.0
            continue
        # learn_one: only what was read, each metric with its own weight
        same = True
        every = True
        for j in range(k):
            read = np.isfinite(z[j])
            counts_j = counts[j] + (1.0 if read else 0.0)
            a[j] = max(alpha, 1.0 / max(counts_j, 1.0)) if read else 0.0
            d[j] = z[j] - mean[j] if read else 0.0
            new_mean[j] = mean[j] + a[j] * d[j]
            every = every and read
            same = same and a[j] == a[0]
        ok = True
        for i in range(k):
            ok = ok and np.isfinite(new_mean[i])
            for j in range(k):
                if every and same:
                    new_cov[i, j] = (1.0 - a[0]) * (cov[i, j] + a[0] * (d[i] * d[j]))
                else:
                    mi, mj = math.sqrt(1.0 - a[i]), math.sqrt(1.0 - a[j])
                    ui = math.sqrt(a[i] * (1.0 - a[i])) * d[i]
                    uj = math.sqrt(a[j] * (1.0 - a[j])) * d[j]
                    new_cov[i, j] = mi * cov[i, j] * mj + ui * uj
                ok = ok and np.isfinite(new_cov[i, j])
        if not ok:
            # learn_one starts a metric again where every metric that overflows is not warm
            # and its mean, not the reading, is the extreme one (its first value was a
            # sentinel): the loop does that; any other overflowing update is left out here
            any_bad = False
            all_again = True
            for j in range(k):
                if np.isfinite(z[j]) and not (np.isfinite(new_mean[j])
                                              and np.isfinite(new_cov[j, j])):
                    any_bad = True
                    if not (counts[j] < warm_at and abs(z[j]) < abs(mean[j])):
                        all_again = False
            if any_bad and all_again:
                return r
            continue
        for j in range(k):
            if np.isfinite(z[j]):
                counts[j] += 1.0
                refused[j] = 0.0
            mean[j] = new_mean[j]
        cov[:, :] = new_cov
        st[0] += 1.0
    return len(X)
