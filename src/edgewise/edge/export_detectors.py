"""C99 and ONNX for the default detectors: ContextLikelihood and Mahalanobis.

:func:`export_context_likelihood_c` ports the Numba step of
:class:`~edgewise.detect.context_likelihood.ContextLikelihood` (both members of its
ensemble, the shared repeat suppression and the counter probe) line for line to C99 in
double precision, with the detector's learned state (state rows and the transitions seen so
far) as the start. Python's transition tables hold ``2**table_bits`` counters per member (64
KiB each by default), but only "seen or not" is ever read, so the C keeps the *set* of seen
hashed keys (tagged with the member) in a fixed open-addressing array of 16-bit slots, by
default as many as keep the whole state within 2 KiB (689 for the default two members, beside
the counter probe's 7 doubles: 2,048 bytes with the struct's padding). A stream that sees more
distinct transitions than that (2 of the 58 NAB series do) stops remembering new ones; they
count in ``overflow`` and keep scoring as novel, so its scores can then differ from Python's; a
larger ``capacity`` restores exact parity at the cost of RAM. The optional ART member
(``"context-art"``, ``art_vigilance > 0``) is not ported, its category store does not fit 2 KiB:
such a detector is refused, never exported without it.

:func:`export_mahalanobis_c` runs the streaming Hotelling T² detector (score then learn) over a
fixed metric list with a Cholesky solve; :func:`export_mahalanobis_onnx` is its scoring step
frozen at the learned mean and shrunk covariance (the outputs are each row's T² over the
metrics it holds, their count and the effective readings behind them; the predictive tail
that turns them into a score, an incomplete beta function, stays host-side). Both score a
row on the metrics it holds, as Python does: a missing one is left out of the solve, not
imputed.

>>> from edgewise.detect.context_likelihood import ContextLikelihood
>>> c = export_context_likelihood_c(ContextLikelihood(), name="cl")
>>> c.ram_bytes <= 2048, sorted(c.files)
(True, ['cl.c', 'cl.h', 'cl_host_test.c'])
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from edgewise.detect.context_likelihood import _MN2, _MX2
from edgewise.edge.export_c import _HOST_READER, CExport, _d, _host_rows, check_c_name
from edgewise.errors import ExportError

__all__ = [
    "export_context_likelihood_c",
    "export_mahalanobis_c",
    "export_mahalanobis_onnx",
    "mahalanobis_frozen",
]


def _darray(name: str, values: Any, per_line: int = 4) -> str:
    vals = [_d(v) for v in values] or ["0.0"]
    lines = [", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)]
    return f"static const double {name}[{len(vals)}] = {{\n    " + ",\n    ".join(lines) + "\n};\n"


def _guard(name: str) -> str:
    return f"EDGEWISE_{name.upper()}_H"


# -- ContextLikelihood ---------------------------------------------------------------------


def _members(det: Any) -> tuple[np.ndarray, np.ndarray, list[int], int]:
    """State rows, tables, each member's warm-up, and the age at which suppression starts."""
    # the warm-up's second lowest/highest values serve only the glitch rule, which the C
    # export does not have (it refuses glitch_gap > 0): the C state leaves them out
    state = np.delete(np.atleast_2d(det.state_), [_MN2, _MX2], axis=1)
    table = np.atleast_2d(det.table_)
    warm, spread = int(det._p[2]), int(det._p[19])
    return state, table, det.member_warmups(), warm - spread


def _auto_capacity(n_doubles: int) -> int:
    """The most key slots that keep the whole state within 2 KiB (padding included: the
    unpadded size stays under 2048, so its rounding up to 8 bytes is at most 2048)."""
    return max(16, (2047 - 4 - 8 * n_doubles) // 2)


def export_context_likelihood_c(det: Any, name: str = "clik",
                                capacity: int | None = None) -> CExport:
    """C99 for a :class:`~edgewise.detect.context_likelihood.ContextLikelihood`.

    Parameters
    ----------
    det
        The detector; its current state (fresh or learned) is the C's initial state.
    name
        C symbol prefix.
    capacity
        Slots of the seen-transition set shared by the members (at most 65535; one is kept
        empty). ``None``: as many as keep the whole state within 2 KiB.

    Returns
    -------
    CExport
        ``kind="detector"`` with double inputs/outputs (``dtype="float64"``).
    """
    check_c_name(name)
    if getattr(det, "art_vigilance", 0.0) > 0:
        raise ExportError("The C export of ContextLikelihood has no ART member (its category "
                          f"store does not fit a device's 2 KiB); got art_vigilance="
                          f"{det.art_vigilance}. Export the default 'context-likelihood' "
                          "(art_vigilance=0) instead.")
    if getattr(det, "glitch_gap", 0.0) > 0:
        raise ExportError("The C export of ContextLikelihood has no warm-up glitch rule; got "
                          f"glitch_gap={det.glitch_gap}. Export a detector with glitch_gap=0 "
                          "(the default) instead.")
    state, table, warms, start = _members(det)
    n_m, n_state = state.shape
    tb = int(det.table_bits)
    if (n_m << tb) > 0xFFFF:
        raise ExportError(f"ContextLikelihood table_bits={tb} with {n_m} members does not fit "
                          f"the 16-bit key set of the C export; allowed: table_bits <= "
                          f"{15 - (n_m - 1).bit_length() if n_m > 1 else 15}.")
    counter = np.asarray(getattr(det, "counter_", [1.0, 0, 0, 0, 0, 0, 0]), dtype=float)
    if capacity is None:
        capacity = _auto_capacity(n_m * n_state + len(counter))
    if not 16 <= capacity <= 65535:
        raise ExportError(f"capacity={capacity} slots is outside the allowed 16..65535.")
    seen = np.concatenate([np.flatnonzero(table[m]).astype(np.int64) | (m << tb)
                           for m in range(n_m)])
    if len(seen) > capacity - 1:
        raise ExportError(f"The detector has seen {len(seen)} transitions; capacity={capacity} "
                          f"holds at most {capacity - 1}. Export with capacity >= "
                          f"{len(seen) + 1} (edgewise export --capacity {len(seen) + 1}; from "
                          "Python export_context_likelihood_c(det, capacity=...)).")
    n = name
    N = n.upper()
    p = det._p
    ws, ws2 = int(det.short_window), int(det.slow_window)
    # sizeof the state struct: the doubles, the keys and two counters, padded to the doubles'
    # alignment (8 bytes); the .c checks the figure against the compiler's sizeof
    ram = -(-(8 * n_m * n_state + 8 * len(counter) + 2 * capacity + 4) // 8) * 8
    # the constant tables as compiled: INIT_STATE, INIT_COUNTER, INIT_KEYS (none when no
    # transition is learned yet) and WARM
    flash_tables = 8 * n_m * n_state + 8 * len(counter) + 2 * len(seen) + 4 * n_m
    empty = 0xFFFF
    init_keys, init_keys_loop = "", "/* no transitions learned yet */"
    if len(seen):
        init_keys = (f"static const uint16_t INIT_KEYS[{len(seen)}] = {{ "
                     + ", ".join(str(int(k)) for k in seen) + " };\n")
        init_keys_loop = f"for (i = 0; i < {len(seen)}u; ++i) add(st, INIT_KEYS[i]);"
    # the slow likelihood test (slow_window > 0) only where there is one: WS2 = 0 would be a
    # constant division by zero, which -Werror refuses even in dead code
    slow_decl = slow_sum = slow_score = slow_learn = ""
    if ws2 > 0:
        slow_decl = " rsum2, shrt2,"
        slow_sum = """
    rsum2 = s[RSUM2] - s[RING + WS + (int)s[RI2]] + raw;
    shrt2 = rsum2 / WS2;"""
        slow_score = """
        {
            double s2 = tailscore(shrt2, s[MUL2], s[VL2], SDMIN2);
            if (s2 > score) score = s2;
        }"""
        slow_learn = """
    s[RING + WS + (int)s[RI2]] = raw;
    s[RSUM2] = rsum2;
    ri = (int)s[RI2] + 1;
    s[RI2] = ri < WS2 ? ri : 0;
    a = 1.0 / (s[NL] + 1);
    if (a < ALONG2) a = ALONG2;
    d = shrt2 - s[MUL2];
    s[MUL2] += a * d;
    s[VL2] = (1 - a) * (s[VL2] + a * d * d);"""
    h = f"""/* {n}.h: ContextLikelihood (the default univariate detector), generated by Edgewise.
 *
 * RAM:   {N}_RAM_BYTES (= {ram}) bytes of state per stream (sizeof({n}_state_t)): {n_m} member(s)
 *        x {n_state} doubles, the counter probe's 7 doubles and a set of {capacity} 16-bit
 *        transition keys.
 *        No heap, no malloc.
 * FLASH: {N}_FLASH_BYTES (= {flash_tables}) bytes of constant tables (initial state,
 *        warm-up counts), plus code.
 * Use:   {n}_state_t s; {n}_init(&s); for each reading v: score = {n}_step(&s, v);
 *        score in [0, 1]; >= {N}_THRESHOLD means anomaly. NaN/inf readings score 0
 *        and are not learned. A cumulative counter (never falling, rising during the
 *        warm-up) is scored by its increments, as in Python (counter="auto"); s.c[0] is 2
 *        or 3 while it is. s.overflow counts transitions the key set had no room for
 *        (then scores may differ from the Python detector's).
 */
#ifndef {_guard(n)}
#define {_guard(n)}
#include <stdint.h>

#define {N}_RAM_BYTES {ram}
#define {N}_FLASH_BYTES {flash_tables}
#define {N}_N_MEMBERS {n_m}
#define {N}_N_STATE {n_state}
#define {N}_CAPACITY {capacity}
#define {N}_THRESHOLD 0.9

typedef struct {{
    double s[{N}_N_MEMBERS][{N}_N_STATE]; /* the Python detector's state_ rows, same layout */
    double c[7];   /* its counter_: mode, n, previous value, rises, falls, gap, restart seen */
    uint16_t keys[{N}_CAPACITY];    /* seen transitions, member << {tb} | key; 0xFFFF: empty */
    uint16_t n_keys;
    uint16_t overflow;              /* new transitions not stored (set full), saturating */
}} {n}_state_t;

void {n}_init({n}_state_t *st);
double {n}_step({n}_state_t *st, double v);
double {n}_score({n}_state_t *st, double v);
void {n}_run({n}_state_t *st, const double *v, double *out, uint32_t count);

#endif
"""
    params = ", ".join(f"{k}={getattr(det, k, None)!r}" for k in (
        "bins", "bins2", "warmup", "warmup_spread", "short_window", "slow_window",
        "table_bits"))
    c = f"""/* {n}.c: generated by Edgewise from ContextLikelihood({params}, ...);
 * initial state learned from {int(state[0][0])} readings, {len(seen)} transitions seen. */
#include <math.h>
#include "{n}.h"

#define NM {n_m}
#define BINS {_d(p[0])}
#define BINS2 {_d(p[1])}
#define WS {ws}
#define ALONG {_d(p[4])}
#define SDMIN {_d(p[5])}
#define WS2 {ws2}
#define ALONG2 {_d(p[7])}
#define SDMIN2 {_d(p[8])}
#define SUPP {int(min(p[9], 2.0**53))}
#define SUPPFRAC {_d(p[10])}
#define SUPPRATE {_d(p[11])}
#define DAMP {_d(p[12])}
#define SUPPLEVEL {_d(p[13])}
#define SPTOL {_d(p[14])}
#define AEW {_d(p[15])}
#define ZW {_d(p[16])}
#define ZC {_d(p[17])}
#define DIGITS {_d(p[18])}
#define CMIN {_d(p[20])}
#define CFAC {_d(p[21])}
#define ESC {_d(p[23])}
#define START {start}   /* stream age from which repeat suppression runs */
#define TB {tb}
#define MASK {(1 << tb) - 1}u
#define EMPTY {empty}u
#define GOLDEN 0x9E3779B97F4A7C15ull

enum {{ T_, MN, MX, M_, V_, W_, W2, X0, RSUM, RI, MUL, VL, NL, CD, NH, H0, H1,
       RSUM2, RI2, MUL2, VL2, NAL, NLO, SLO, NHI, SHI, RING }};
/* counter probe: state slots, modes, and what to do with a reading (counterin) */
enum {{ CMODE, CN, CPREV, CUP, CDOWN, CGAP, CRESTART }};
#define PROBE_ 0.0
#define LEVEL_ 1.0
#define COUNTER_ 2.0
#define MIN_RISES 3
#define MAX_FALLS 2
enum {{ FEED, FEED_THEN_RESET, BACKWARDS, RESET_THEN_FEED, SKIP }};

/* {N}_RAM_BYTES is sizeof({n}_state_t) where doubles align to 8 bytes (less where they align
 * to 4); a compile error here if this compiler needs more */
typedef char {n}_ram_bytes_check[sizeof({n}_state_t) <= {N}_RAM_BYTES ? 1 : -1];

static const int32_t WARM[NM] = {{ {", ".join(str(w) for w in warms)} }};
{_darray("INIT_STATE", state.ravel())}
{_darray("INIT_COUNTER", counter)}
{init_keys}
static uint64_t mix(uint64_t h, int64_t v) {{
    uint64_t u = (uint64_t)(v & 0xFFFFFFFFFFFFll);
    return h ^ (u + GOLDEN + (h << 6) + (h >> 2));
}}

/* slot of key, or of the empty slot where it would go */
static uint32_t find(const {n}_state_t *st, uint16_t key) {{
    uint32_t i = (uint32_t)key % {N}_CAPACITY;
    while (st->keys[i] != EMPTY && st->keys[i] != key) i = (i + 1u) % {N}_CAPACITY;
    return i;
}}

static int seen(const {n}_state_t *st, uint16_t key) {{
    return st->keys[find(st, key)] == key;
}}

static void add({n}_state_t *st, uint16_t key) {{
    uint32_t i = find(st, key);
    if (st->keys[i] == key) return;
    if (st->n_keys >= {N}_CAPACITY - 1) {{
        if (st->overflow < 0xFFFFu) st->overflow++;
        return;
    }}
    st->keys[i] = key;
    st->n_keys++;
}}

void {n}_init({n}_state_t *st) {{
    uint32_t i, m;
    for (m = 0; m < NM; ++m)
        for (i = 0; i < {N}_N_STATE; ++i) st->s[m][i] = INIT_STATE[m * {N}_N_STATE + i];
    for (i = 0; i < 7u; ++i) st->c[i] = INIT_COUNTER[i];
    for (i = 0; i < {N}_CAPACITY; ++i) st->keys[i] = EMPTY;
    st->n_keys = 0;
    st->overflow = 0;
    {init_keys_loop}
}}

static double tailscore(double shrt, double mu, double var, double sd_min) {{
    double z = shrt - mu, sd, tail, sc;
    if (z <= 0.0) return 0.0;
    sd = sqrt(var);
    if (sd < sd_min) sd = sd_min;
    if (z <= sd) return 0.0;  /* within one deviation: far below any threshold */
    tail = 0.5 * erfc(z / sd / sqrt(2.0));
    sc = -log10(tail + 1e-10) / DIGITS;
    return sc < 0.0 ? 0.0 : (sc > 1.0 ? 1.0 : sc);
}}

static int64_t symbol(double xv, double x0, double w) {{
    double r = (xv - x0) / w;
    if (!(r >= -1e15)) r = -1e15;  /* NaN too (inf / inf), as in Python: no cast of NaN */
    else if (r > 1e15) r = 1e15;
    return (int64_t)floor(r);
}}

/* one member's undamped score; when learn, also update its state */
/* beyond the seen range by more than SPTOL of it, and not creep: a side that moved
 * CMIN times or more moving again by at most CFAC times its mean move (_novel_range) */
static int novelrange(const double *s, double xv, double rng) {{
    if (SPTOL <= 0) return 0;
    if (xv > s[MX] + SPTOL * rng)
        return !(CMIN > 0 && s[NHI] >= CMIN && xv - s[MX] <= CFAC * s[SHI] / s[NHI] * rng);
    if (xv < s[MN] - SPTOL * rng)
        return !(CMIN > 0 && s[NLO] >= CMIN && s[MN] - xv <= CFAC * s[SLO] / s[NLO] * rng);
    return 0;
}}

static double member({n}_state_t *st, int m, double xv, int learn) {{
    double *s = st->s[m];
    int64_t t = (int64_t)s[T_], q, q2 = 0, warm = WARM[m];
    uint16_t key = 0, key2 = 0, tag = (uint16_t)(m << TB);
    double nov = 0.0, z, raw, rsum, shrt,{slow_decl} score = 0.0, rng, a, d;
    int ri;
    if (t < warm) {{
        if (learn) {{
            if (xv < s[MN]) s[MN] = xv;
            if (xv > s[MX]) s[MX] = xv;
            s[M_] += (xv - s[M_]) / (double)(t + 1);
            if (t == warm - 1) {{
                double floor_ = fmax(1e-9 * fabs(s[MX]), 1e-300);
                s[W_] = (s[MX] - s[MN]) / BINS;
                if (s[W_] < floor_) s[W_] = floor_;
                if (BINS2 > 0) {{
                    s[W2] = (s[MX] - s[MN]) / BINS2;
                    if (s[W2] < floor_) s[W2] = floor_;
                }} else {{
                    s[W2] = 1.0;
                }}
                s[X0] = s[MN];
            }}
            s[T_] = (double)(t + 1);
        }}
        return 0.0;
    }}
    q = symbol(xv, s[X0], s[W_]);
    if (BINS2 > 0) q2 = symbol(xv, s[X0], s[W2]);
    if (s[NH] >= 1) {{
        key = (uint16_t)((mix(mix(1000003u, (int64_t)s[H0]), q) & MASK) | tag);
        nov = seen(st, key) ? 0.0 : 1.0;
        if (BINS2 > 0) {{
            key2 = (uint16_t)((mix(mix(2000003u, (int64_t)s[H1]), q2) & MASK) | tag);
            nov = 0.5 * (nov + (seen(st, key2) ? 0.0 : 1.0));
        }}
    }}
    z = fabs(xv - s[M_]) / (sqrt(s[V_]) + s[W_]);
    raw = ZW * (1.0 - exp(-z / ZC));
    if (!(raw >= nov)) raw = nov;  /* Python's max(nov, raw): nov when raw is NaN (z = inf / inf) */
    rsum = s[RSUM] - s[RING + (int)s[RI]] + raw;
    shrt = rsum / WS;{slow_sum}
    if (s[NL] > 50) {{
        score = tailscore(shrt, s[MUL], s[VL], SDMIN);{slow_score}
    }}
    rng = s[MX] - s[MN];
    /* beyond the range by more than ESC widths: an escalation (2), never damped (_escalates) */
    if (novelrange(s, xv, rng))
        score = (ESC > 0 && rng > 0 && (xv > s[MX] + ESC * rng || xv < s[MN] - ESC * rng))
                ? 2.0 : 1.0;
    if (!learn) return score;
    s[RING + (int)s[RI]] = raw;
    s[RSUM] = rsum;
    ri = (int)s[RI] + 1;
    s[RI] = ri < WS ? ri : 0;
    a = 1.0 / (s[NL] + 1);
    if (a < ALONG) a = ALONG;
    d = shrt - s[MUL];
    s[MUL] += a * d;
    s[VL] = (1 - a) * (s[VL] + a * d * d);{slow_learn}
    s[NL] += 1;
    if (s[NH] >= 1) {{
        add(st, key);
        if (BINS2 > 0) add(st, key2);
    }}
    s[H0] = (double)q;
    s[H1] = (double)q2;
    s[NH] = 1;
    if (rng > 0.0 && xv > s[MX]) {{
        s[NHI] += 1.0;
        s[SHI] += (xv - s[MX]) / rng;
    }} else if (rng > 0.0 && xv < s[MN]) {{
        s[NLO] += 1.0;
        s[SLO] += (s[MN] - xv) / rng;
    }}
    if (xv < s[MN]) s[MN] = xv;
    if (xv > s[MX]) s[MX] = xv;
    d = xv - s[M_];
    {{  /* not learned where it would pass the largest double, as in Python */
        double mu_next = s[M_] + AEW * d, var_next = (1 - AEW) * (s[V_] + AEW * d * d);
        if (isfinite(mu_next) && isfinite(var_next)) {{
            s[M_] = mu_next;
            s[V_] = var_next;
        }}
    }}
    s[T_] = (double)(t + 1);
    return score;
}}

/* members as a fresh detector's: a counter's increments (or a level) start anew */
static void resetmembers({n}_state_t *st) {{
    uint32_t i, m;
    for (m = 0; m < NM; ++m) {{
        for (i = 0; i < {N}_N_STATE; ++i) st->s[m][i] = 0.0;
        st->s[m][MN] = INFINITY;
        st->s[m][MX] = -INFINITY;
    }}
    for (i = 0; i < {N}_CAPACITY; ++i) st->keys[i] = EMPTY;
    st->n_keys = 0;
}}

/* a counter at prev that reads xv restarted from zero: it dropped to half or less */
static int restarted(double prev, double xv) {{
    return prev > 0 && xv <= 0.5 * prev;
}}

/* what the members see of the finite reading xv (*fv) and what to do (see FEED..SKIP):
 * the counter probe of the Python detector's _counter_in, step for step */
static int counterin({n}_state_t *st, double xv, int learn, double *fv) {{
    double *c = st->c, prev;
    *fv = xv;
    if (c[CMODE] == LEVEL_) return FEED;
    if (c[CMODE] == PROBE_) {{
        if (learn) {{
            prev = c[CPREV];
            if (c[CN] > 0) {{
                if (xv > prev) {{
                    c[CUP] += 1;
                }} else if (xv < prev) {{
                    if (restarted(prev, xv) && c[CRESTART] == 0) c[CRESTART] = 1;
                    else c[CDOWN] += 1;
                }}
            }}
            c[CPREV] = xv;
            c[CN] += 1;
            if (c[CN] >= START) {{
                if (c[CDOWN] > 0) {{
                    c[CMODE] = LEVEL_;
                }} else if (c[CUP] >= MIN_RISES) {{
                    c[CMODE] = COUNTER_;
                    return FEED_THEN_RESET;
                }} else {{ /* too few rises to tell: probe the next stretch */
                    c[CN] = 1;
                    c[CUP] = 0;
                    c[CRESTART] = 0;
                }}
            }}
        }}
        return FEED;
    }}
    if (c[CN] == 0 || c[CGAP] > 0) {{ /* nothing to subtract yet, or after a gap: re-anchor */
        if (learn) {{
            if (c[CN] < 1) c[CN] = 1;
            c[CPREV] = xv;
            c[CGAP] = 0;
        }}
        return SKIP;
    }}
    prev = c[CPREV];
    if (xv >= prev) {{
        if (learn) {{
            c[CPREV] = xv;
            if (xv > prev) c[CDOWN] = 0;
        }}
        *fv = xv - prev;
        if (*fv - *fv != 0.0) return SKIP; /* beyond a double: re-anchor, as after a gap */
        return FEED;
    }}
    if (restarted(prev, xv)) {{
        if (learn) c[CPREV] = xv;
        return FEED;
    }}
    if (c[CMODE] == COUNTER_ && c[CDOWN] + 1 >= MAX_FALLS) {{ /* not a counter after all */
        if (learn) {{
            c[CDOWN] += 1;
            c[CMODE] = LEVEL_;
        }}
        return RESET_THEN_FEED;
    }}
    if (learn) {{
        c[CDOWN] += 1;
        c[CPREV] = xv;
    }}
    return BACKWARDS;
}}

/* the repeat suppression shared by the ensemble's score and a counter running backwards;
 * t is the stream age before the reading */
static double suppress({n}_state_t *st, double score, int64_t t, int learn) {{
    double *s0 = st->s[0];
    if (score > 1.0) score = 1.0;  /* an escalation */
    else if (s0[CD] > 0) score *= DAMP;
    if (!learn || t < START) return score;
    if (score >= SUPPLEVEL) {{
        int64_t base = (int64_t)(SUPPFRAC * (double)t);
        if (base < SUPP) base = SUPP;
        s0[NAL] += 1;
        /* clamped before the cast, as in Python: past int64 the cast is undefined (it
         * turned the suppression off) and 2^53 readings is for good */
        double cd = (double)base * (1.0 + SUPPRATE * s0[NAL] * 1000.0 / (double)t);
        if (!(cd < 9007199254740992.0)) cd = 9007199254740992.0;
        s0[CD] = (double)(int64_t)cd;
    }} else if (s0[CD] > 0) {{
        s0[CD] -= 1;
    }}
    return score;
}}

/* the ensemble: the largest member score, then one shared repeat suppression */
static double ensemble({n}_state_t *st, double xv, int learn) {{
    int64_t t = (int64_t)st->s[0][T_];
    double score = 0.0, sc;
    int m;
    for (m = 0; m < NM; ++m) {{
        sc = member(st, m, xv, learn);
        if (sc > score) score = sc;
    }}
    return suppress(st, score, t, learn);
}}

static double step({n}_state_t *st, double xv, int learn) {{
    double fv, score;
    int act = counterin(st, xv, learn, &fv);
    if (act == SKIP) return 0.0;
    if (act == BACKWARDS) return suppress(st, 1.0, (int64_t)st->s[0][T_], learn);
    if (act == RESET_THEN_FEED) {{
        if (!learn) return 0.0;
        resetmembers(st);
    }}
    score = ensemble(st, fv, learn);
    if (act == FEED_THEN_RESET) resetmembers(st);
    return score;
}}

double {n}_step({n}_state_t *st, double v) {{
    if (v != v || v - v != 0.0) {{ /* NaN or inf: not scored, not learned */
        if (st->c[CMODE] >= COUNTER_ && st->c[CN] > 0) st->c[CGAP] += 1; /* a counter's gap */
        return 0.0;
    }}
    return step(st, v, 1);
}}

double {n}_score({n}_state_t *st, double v) {{
    if (v != v || v - v != 0.0) return 0.0;
    return step(st, v, 0);
}}

void {n}_run({n}_state_t *st, const double *v, double *out, uint32_t count) {{
    uint32_t i;
    for (i = 0; i < count; ++i) out[i] = {n}_step(st, v[i]);
}}
"""
    host = f"""/* {n}_host_test.c: reads one number per line on stdin, prints its score.
 * Generated by Edgewise.
 * Build: gcc -std=c99 -pedantic -Wall -Wextra -Werror -O2 {n}.c {n}_host_test.c -lm -o {n}_test
 * A word that is no number, or input ending mid-row, ends it: one line on stderr, exit 1. */
{_HOST_READER}#include "{n}.h"

int main(void) {{
    static {n}_state_t s;
    double v;
    unsigned long words = 0;
    {n}_init(&s);
    while (host_next(&v, &words)) printf("%.9g\\n", {n}_step(&s, v));
    return 0;
}}
"""
    return CExport(n, "detector", {f"{n}.h": h, f"{n}.c": c, f"{n}_host_test.c": host},
                   ram_bytes=ram, flash_bytes=flash_tables, n_features=1, dtype="float64")


# -- Mahalanobis ---------------------------------------------------------------------------


def _mahalanobis_metrics(det: Any, metrics: list[str] | None) -> list[str]:
    """The metric list of the export: ``metrics`` (each a metric name as the gateway takes
    it, :data:`edgewise.telemetry.METRIC_NAME_RE`) or the detector's learned ones."""
    from edgewise.telemetry import METRIC_NAME_RE

    known = list(det.metrics_)
    odd = [k for k in known if not isinstance(k, str)]
    if odd:  # ', '.join of the names failed with a raw TypeError
        raise ExportError(
            f"Mahalanobis learned metric keys {known[:8]}{' ...' if len(known) > 8 else ''}, "
            f"of which {odd[0]!r} is of type {type(odd[0]).__name__}, not str; the C export names "
            "each metric, and a device reading names them as strings. Learn it on readings "
            "keyed by metric name (e.g. {'flow': 1.2}, or str(key)).")
    if metrics is None:
        if not known:
            raise ExportError("A fresh Mahalanobis detector has no metrics yet; pass "
                              "metrics=[...] (the device's metric names, in input order).")
        return known
    metrics = list(metrics)
    bad = [m for m in metrics if not isinstance(m, str) or not METRIC_NAME_RE.fullmatch(m)]
    if bad:
        raise ExportError(f"Metric name {bad[0]!r} (of {metrics}) is not one the gateway "
                          "takes: 1-64 letters, digits, '_', '.', ':', '/' or '-', not starting "
                          "with '.', ':', '/' or '-'.")
    if known and metrics != known:
        raise ExportError(f"metrics={metrics} differ from the detector's learned metrics "
                          f"{known}; pass those (same order) or none.")
    if not metrics or len(set(metrics)) != len(metrics):
        raise ExportError(f"metrics={metrics} must be non-empty, without repeats.")
    if not known and len(metrics) > det.max_metrics:
        # Python tracks the first max_metrics metrics to arrive (by time, not by this list)
        # and ignores the rest; the C tracked every one (2 alarms where Python raised none)
        raise ExportError(
            f"metrics={metrics[:8]}{' ...' if len(metrics) > 8 else ''} name {len(metrics)} "
            f"metrics, but this Mahalanobis tracks at most max_metrics={det.max_metrics} (it "
            "ignores the ones that arrive after those); raise it to at least "
            f"{len(metrics)} (Mahalanobis(max_metrics={len(metrics)}, ...)) or pass at most "
            f"{det.max_metrics} metrics.")
    return metrics


def export_mahalanobis_c(det: Any, name: str = "maha",
                         metrics: list[str] | None = None) -> CExport:
    """C99 for a streaming :class:`~edgewise.detect.mahalanobis.Mahalanobis` (score, then learn).

    The metric list is fixed at export (``metrics``, or the detector's learned ones); a reading
    is ``D`` doubles in that order, NaN (or +-inf) for a missing metric. The learned mean,
    covariance and per-metric counts are the initial state. As in Python, only what was read
    is learned, and each reading is scored on the metrics it holds that have ``warmup``
    readings of their own, or more on a device of many metrics
    (:func:`~edgewise.detect.mahalanobis.warm_count`, by the metrics seen so far): the
    Cholesky solve masks the others (row and column 0, diagonal 1, deviation 0), so ``T²``
    is the marginal one of the metrics scored; its tail is Python's predictive one
    (:func:`~edgewise.detect.mahalanobis.t2_tail`, by the incomplete beta's continued
    fraction) with the effective readings of the least read metric scored
    (:func:`~edgewise.detect.mahalanobis.effective_count`); a reading of none scores 0.
    """
    from edgewise.detect.mahalanobis import GUARD_RUN, GUARD_SD, MOST_EFFECTIVE, warm_count
    from edgewise.edge.export_rul import _c_comment

    check_c_name(name)
    names = _mahalanobis_metrics(det, metrics)
    D = len(names)
    mean = np.zeros(D)
    cov = np.zeros((D, D))
    cnt = np.zeros(D)
    k = len(det.metrics_)
    mean[:k] = det.mean_
    cov[:k, :k] = det.cov_
    cnt[:k] = det.counts_
    # readings in a row the guard left out, where any (no table: all 0 but mid-run)
    ref = "".join(f"\n    s->ref[{i}] = {float(v)!r};"
                  for i, v in enumerate(getattr(det, "refused_", [])) if v)
    n = name
    N = n.upper()
    ram = 8 * (1 + 2 * D + D * D) + 8 * (D * D + 4 * D)
    # the constant tables as compiled: INIT_MEAN, INIT_COV, INIT_CNT and WARM_AT (one
    # warm-up count per number of metrics seen, 0..D), each of doubles
    flash = 8 * (2 * D + D * D) + 8 * (D + 1)
    h = f"""/* {n}.h: Mahalanobis (Hotelling T^2) multivariate detector, generated by Edgewise.
 *
 * RAM:   {N}_RAM_BYTES (= {ram}) bytes per device: count, mean[{D}], covariance[{D}x{D}],
 *        readings per metric[{D}], readings left out in a row per metric[{D}] and the
 *        solver's work space. No heap, no malloc.
 * FLASH: {N}_FLASH_BYTES (= {flash}) bytes of constant tables (initial state, warm-up
 *        counts), plus code.
 * Use:   {n}_state_t s; {n}_init(&s); per reading x[{N}_N_METRICS] (NaN = missing):
 *        score = {n}_step(&s, x); score in [0, 1]; >= {N}_THRESHOLD means anomaly.
 *        A metric counts from its first finite value (its mean is NaN until then), as in
 *        Python; only the metrics (and pairs) read are learned, each weighted by its own
 *        count; a reading is scored on the metrics it holds with WARM_AT[metrics seen]
 *        readings of their own (WARMUP, more for many metrics): the marginal T^2 of those,
 *        under the predictive Hotelling tail with the effective readings of the least
 *        read of them (none: score 0);
 *        a warm metric read more than GUARD_SD of its standard deviations from its
 *        mean (a glitch, a sentinel such as 1e150) is scored but the reading is not
 *        learned, up to GUARD_RUN readings of it in a row (a level shift is then
 *        learned), as in Python;
 *        a reading whose update would overflow the mean or covariance (a sentinel
 *        such as 1e308) scores 1 and is not learned; a metric not warm whose own
 *        mean is the extreme (its first value was such a sentinel) starts again from
 *        the reading instead.
 * Metrics, in order: {_c_comment(', '.join(names))}
 */
#ifndef {_guard(n)}
#define {_guard(n)}
#include <stdint.h>

#define {N}_N_METRICS {D}
#define {N}_RAM_BYTES {ram}
#define {N}_FLASH_BYTES {flash}
#define {N}_THRESHOLD 0.9

typedef struct {{
    double n;                                    /* readings learned */
    double mean[{N}_N_METRICS];                  /* NaN: metric not seen yet */
    double cov[{N}_N_METRICS * {N}_N_METRICS];
    double cnt[{N}_N_METRICS];                   /* readings learned of each metric */
    double ref[{N}_N_METRICS];                   /* readings in a row left out (GUARD_SD) */
    double work[{N}_N_METRICS * {N}_N_METRICS];  /* Cholesky factor */
    double dz[{N}_N_METRICS];
    double y[{N}_N_METRICS];
    double a[{N}_N_METRICS];                     /* learn: each metric's weight;
                                                    score: 1 where it is scored, else 0 */
}} {n}_state_t;

void {n}_init({n}_state_t *s);
double {n}_score({n}_state_t *s, const double *x);
void {n}_learn({n}_state_t *s, const double *x);
double {n}_step({n}_state_t *s, const double *x);
void {n}_run({n}_state_t *s, const double *x, double *out, uint32_t rows);

#endif
"""
    c = f"""/* {n}.c: generated by Edgewise from Mahalanobis(alpha={det.alpha!r},
 * shrinkage={det.shrinkage!r}, warmup={det.warmup!r}, tail_digits={det.tail_digits!r});
 * initial state learned from {det.n_} readings. */
#include <float.h>
#include <math.h>
#include "{n}.h"

#define D {N}_N_METRICS
#define ALPHA {_d(det.alpha)}
#define SHRINK {_d(det.shrinkage)}
#define WARMUP {int(det.warmup)}
#define DIGITS {_d(det.tail_digits)}
#define SEEN {k}  /* metrics learned in Python (all or none): the others are not seen yet */
#define MOST_EFF {_d(MOST_EFFECTIVE)}
#define GUARD_SD {_d(GUARD_SD)}  /* a warm metric this many deviations off: not learned */
#define GUARD_RUN {_d(GUARD_RUN)}  /* ... up to this many readings of it in a row */

/* the readings of its own a metric is scored after, by the metrics seen (warm_count) */
{_darray("WARM_AT", [warm_count(i, float(det.alpha), int(det.warmup)) for i in range(D + 1)])}
{_darray("INIT_MEAN", mean)}
{_darray("INIT_COV", cov.ravel())}
{_darray("INIT_CNT", cnt.ravel())}

void {n}_init({n}_state_t *s) {{
    int i;
    s->n = {float(det.n_)!r};
    for (i = 0; i < D; ++i) s->mean[i] = i < SEEN ? INIT_MEAN[i] : NAN;
    for (i = 0; i < D * D; ++i) s->cov[i] = INIT_COV[i];
    for (i = 0; i < D; ++i) s->cnt[i] = INIT_CNT[i];
    for (i = 0; i < D; ++i) s->ref[i] = 0.0;{ref}
}}

/* effective readings behind the running estimate after c readings of weight
   max(ALPHA, 1 / i): Kish's 1 / sum(w^2), at most MOST_EFF (Python's effective_count) */
static double neff(double c) {{
    double m = 1.0 / ALPHA, f = ALPHA / (2.0 - ALPHA), v;
    if (c <= m) {{
        v = c;
    }} else {{
        v = 1.0 / (f + (ALPHA - f) * pow(1.0 - ALPHA, 2.0 * (c - m)));
    }}
    return v < MOST_EFF ? v : MOST_EFF;
}}

/* continued fraction of the incomplete beta I_x(a, b) (modified Lentz) */
static double betacf(double a, double b, double x) {{
    double qab = a + b, qap = a + 1.0, qam = a - 1.0, c = 1.0, d, h, aa, del, m2;
    int m;
    d = 1.0 - qab * x / qap;
    if (fabs(d) < DBL_MIN) d = DBL_MIN;
    d = 1.0 / d;
    h = d;
    for (m = 1; m < 100000; ++m) {{
        m2 = 2.0 * m;
        aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if (fabs(d) < DBL_MIN) d = DBL_MIN;
        c = 1.0 + aa / c;
        if (fabs(c) < DBL_MIN) c = DBL_MIN;
        d = 1.0 / d;
        h *= d * c;
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if (fabs(d) < DBL_MIN) d = DBL_MIN;
        c = 1.0 + aa / c;
        if (fabs(c) < DBL_MIN) c = DBL_MIN;
        d = 1.0 / d;
        del = d * c;
        h *= del;
        if (fabs(del - 1.0) < 1e-16) break;
    }}
    return h;
}}

/* P(T^2 > t2) for a new reading of dof metrics against a mean and covariance from n
   readings, the predictive Hotelling tail (Python's t2_tail): 1 - I_y(dof/2, (n - dof)/2),
   y = t2 / (n + 1 + t2), each side by the continued fraction where it converges */
static double t2tail(double t2, double dof, double n) {{
    double a = dof / 2.0, b = (n - dof) / 2.0, y = t2 / (n + 1.0 + t2),
           w = (n + 1.0) / (n + 1.0 + t2), front;
    if (t2 <= 0.0) return 1.0;
    front = exp(lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(y) + b * log(w));
    if (y < (a + 1.0) / (a + b + 2.0)) return 1.0 - front * betacf(a, b, y) / a;
    return front * betacf(b, a, w) / b;
}}

double {n}_score({n}_state_t *s, const double *x) {{
    int i, j, k, seen = 0, known = 0;
    double t2 = 0.0, p, sc, least = INFINITY, warm;
    double *L = s->work;
    if (s->n < WARMUP) return 0.0;
    for (i = 0; i < D; ++i) known += s->mean[i] == s->mean[i];
    warm = WARM_AT[known];
    for (i = 0; i < D; ++i) {{
        double v = x[i];
        /* scored: read (finite) and warm; a metric missing or not warm yet does not count */
        int use = s->cnt[i] >= warm && !(v != v || v - v != 0.0);
        seen += use;
        s->a[i] = use;
        s->dz[i] = use ? v - s->mean[i] : 0.0;
        if (use && s->cnt[i] < least) least = s->cnt[i];
    }}
    if (!seen) return 0.0;
    /* shrunk covariance with a ridge relative to each metric's variance, then its
       Cholesky factor in place (lower triangle) */
    for (i = 0; i < D; ++i) {{
        for (j = 0; j <= i; ++j) {{
            double v = (1.0 - SHRINK) * s->cov[i * D + j];
            if (s->a[i] == 0.0 || s->a[j] == 0.0) {{
                v = i == j ? 1.0 : 0.0;  /* not scored: row and column left out */
            }} else if (i == j) {{
                double m = s->mean[i] == s->mean[i] ? s->mean[i] : 0.0;
                v += SHRINK * s->cov[i * D + i]
                     + (1e-9 * (s->cov[i * D + i] > 0.0 ? s->cov[i * D + i] : m * m) + 1e-300);
            }}
            for (k = 0; k < j; ++k) v -= L[i * D + k] * L[j * D + k];
            if (i == j) {{
                if (v <= 0.0) return 1.0;  /* not positive definite: treat as anomalous */
                L[i * D + i] = sqrt(v);
            }} else {{
                L[i * D + j] = v / L[j * D + j];
            }}
        }}
    }}
    for (i = 0; i < D; ++i) {{  /* forward solve L y = dz; T^2 = |y|^2 */
        double v = s->dz[i];
        for (k = 0; k < i; ++k) v -= L[i * D + k] * s->y[k];
        s->y[i] = v / L[i * D + i];
        t2 += s->y[i] * s->y[i];
    }}
    if (!(t2 - t2 == 0.0)) return 1.0;
    p = t2tail(t2 > 0.0 ? t2 : 0.0, (double)seen, neff(least));
    sc = -log10(p + 1e-300) / DIGITS;
    return sc < 0.0 ? 0.0 : (sc > 1.0 ? 1.0 : sc);
}}

/* the learning step's new covariance entry (i, j): as Python's (1 - a) (cov + a outer(d, d))
   when every metric is read with one weight, else M cov M + u u' with M = diag(sqrt(1 - a)),
   u = sqrt(a (1 - a)) d */
static double covnext(const {n}_state_t *s, int i, int j, int full) {{
    double a = s->a[0];
    if (full) return (1.0 - a) * (s->cov[i * D + j] + a * (s->dz[i] * s->dz[j]));
    return sqrt(1.0 - s->a[i]) * s->cov[i * D + j] * sqrt(1.0 - s->a[j])
           + (sqrt(s->a[i] * (1.0 - s->a[i])) * s->dz[i])
             * (sqrt(s->a[j] * (1.0 - s->a[j])) * s->dz[j]);
}}

/* whether the learning step overflows a mean or covariance entry (a metric not seen yet,
   mean NaN, is not read) */
static int overflows(const {n}_state_t *s, int full) {{
    int i, j;
    double m;
    for (i = 0; i < D; ++i) {{
        m = s->mean[i] + s->a[i] * s->dz[i];
        if (s->mean[i] == s->mean[i] && !(m - m == 0.0)) return 1;
        for (j = 0; j < D; ++j) {{
            m = covnext(s, i, j, full);
            if (!(m - m == 0.0)) return 1;
        }}
    }}
    return 0;
}}

void {n}_learn({n}_state_t *s, const double *x) {{
    int i, j, any = 0, full = 1, known = 0, again = 0, held = 0;
    double m, d, warm;
    for (i = 0; i < D; ++i) {{
        double v = x[i];
        int ok = !(v != v || v - v != 0.0);
        if (ok && s->mean[i] != s->mean[i]) s->mean[i] = v;  /* first value: its mean */
        any |= ok;
        s->dz[i] = ok ? v - s->mean[i] : 0.0;
        s->a[i] = ok ? 1.0 / (s->cnt[i] + 1.0) : 0.0;  /* weight max(ALPHA, 1 / its count) */
        if (ok && s->a[i] < ALPHA) s->a[i] = ALPHA;
        full &= ok;
    }}
    if (!any) return;
    for (i = 0; i < D; ++i) known += s->mean[i] == s->mean[i];
    warm = WARM_AT[known];
    /* a warm metric that has varied, read more than GUARD_SD deviations from its mean,
       holds the reading back (not learned), up to GUARD_RUN readings of it in a row */
    for (i = 0; i < D; ++i) {{
        double c = s->cov[i * D + i];
        if (s->a[i] > 0.0 && c > 0.0 && s->cnt[i] >= warm && s->ref[i] < GUARD_RUN
            && fabs(s->dz[i]) > GUARD_SD * sqrt(c)) {{
            s->ref[i] += 1.0;
            held = 1;
        }}
    }}
    if (held) return;
    for (i = 1; i < D; ++i) full &= s->a[i] == s->a[0];
    /* a reading whose update overflows the mean or covariance is not learned (as Python),
       but where the metrics that overflow are not warm and their own mean, not the
       reading, is the extreme (a first value of 1e308), they start again from the reading
       (y: 1 for those) and the other metrics are learned */
    if (overflows(s, full)) {{
        for (i = 0; i < D; ++i) {{
            s->y[i] = 0.0;
            if (s->a[i] == 0.0) continue;
            m = s->mean[i] + s->a[i] * s->dz[i];
            d = covnext(s, i, i, full);
            if (m - m == 0.0 && d - d == 0.0) continue;
            if (!(s->cnt[i] < warm && fabs(x[i]) < fabs(s->mean[i]))) return;
            s->y[i] = 1.0;
            again = 1;
        }}
        if (!again) return;
        for (i = 0; i < D; ++i) if (s->y[i] != 0.0) s->a[i] = s->dz[i] = 0.0;
        full = 0;
        if (overflows(s, full)) return;
    }}
    s->n += 1.0;
    for (i = 0; i < D; ++i) s->mean[i] += s->a[i] * s->dz[i];
    for (i = 0; i < D; ++i)
        for (j = 0; j < D; ++j) s->cov[i * D + j] = covnext(s, i, j, full);
    for (i = 0; i < D; ++i) {{
        if (s->a[i] > 0.0) s->ref[i] = 0.0;
        s->cnt[i] += s->a[i] > 0.0;
    }}
    if (again) {{
        for (i = 0; i < D; ++i) {{
            if (s->y[i] == 0.0) continue;
            s->mean[i] = x[i];
            s->cnt[i] = 1.0;
            s->ref[i] = 0.0;
            for (j = 0; j < D; ++j) s->cov[i * D + j] = s->cov[j * D + i] = 0.0;
        }}
    }}
}}

double {n}_step({n}_state_t *s, const double *x) {{
    double sc = {n}_score(s, x);
    {n}_learn(s, x);
    return sc;
}}

void {n}_run({n}_state_t *s, const double *x, double *out, uint32_t rows) {{
    uint32_t r;
    for (r = 0; r < rows; ++r) out[r] = {n}_step(s, x + (uint64_t)r * D);
}}
"""
    host = f"""/* {n}_host_test.c: reads rows of {N}_N_METRICS numbers on stdin, prints each score.
 * Generated by Edgewise.
 * Build: gcc -std=c99 -pedantic -Wall -Wextra -Werror -O2 {n}.c {n}_host_test.c -lm -o {n}_test
 * A word that is no number, or input ending mid-row, ends it: one line on stderr, exit 1. */
{_HOST_READER}#include "{n}.h"

int main(void) {{
    static {n}_state_t s;
    double x[{N}_N_METRICS];
    double v;
    unsigned long words = 0;
    int i;
    {n}_init(&s);
    for (;;) {{
{_host_rows(f"{N}_N_METRICS", "x[i] = v;")}        printf("%.9g\\n", {n}_step(&s, x));
    }}
}}
"""
    return CExport(n, "mdetector", {f"{n}.h": h, f"{n}.c": c, f"{n}_host_test.c": host},
                   ram_bytes=ram, flash_bytes=flash, n_features=D, dtype="float64")


def mahalanobis_frozen(det: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, cov, warm)``: the learned mean, the shrunk covariance and which metrics are
    warm (those with ``warmup`` readings of their own). A metric not yet warm has 0 in its
    row and column of ``cov`` and 1 on its diagonal, so it adds nothing, as in Python.

    >>> from edgewise.detect.mahalanobis import Mahalanobis
    >>> det = Mahalanobis(warmup=2)   # 2 metrics: scored from 6 readings (warm_count)
    >>> for r in [{"a": float(i % 3)} for i in range(6)] + [{"a": 1.0, "b": 5.0}]:  # b: one
    ...     det.learn_one(r)
    >>> mean, cov, warm = mahalanobis_frozen(det)
    >>> warm.tolist(), cov[1].tolist()
    ([True, False], [0.0, 1.0])
    """
    if not det.metrics_:
        raise ExportError("Mahalanobis has learned no metrics yet; its scoring step has no "
                          "mean or covariance to freeze. Learn some readings first (learn_one), "
                          "or export a fresh one to C, whose step learns on the device "
                          "(export_mahalanobis_c(det, metrics=[...]); 'edgewise export --detector "
                          "mahalanobis --metrics a,b,c --format c').")
    s = det.shrunk_covariance()
    warm = det._warm()
    cold = np.flatnonzero(~warm)
    s[cold, :] = 0.0
    s[:, cold] = 0.0
    s[cold, cold] = 1.0
    return det.mean_.copy(), s, warm


def _ldl_t2_nodes(D: int) -> tuple[list[Any], list[Any]]:
    """Nodes (and their index constants) that take ``A`` (rows x D x D, each symmetric
    positive definite) and ``b`` (rows x D) to ``t2_sum`` (rows x 1) = ``b' A⁻¹ b`` per row:
    Gaussian elimination unrolled over the D pivots, without pivoting (``A`` is SPD), as
    ``A = L diag(d) L'``: ``t2 = sum_k y_k² / d_k`` with ``L y = b``. Step k takes the
    trailing (D - k) x (D - k) block; all its ops are elementwise over the batch."""
    from onnx import helper, numpy_helper

    big = np.iinfo(np.int64).max

    def c(name: str, values: list[int]) -> Any:
        return numpy_helper.from_array(np.array(values, dtype=np.int64), name)

    consts = [c("i0", [0]), c("i1", [1]), c("i2", [2]), c("ibig", [big]),
              c("i00", [0, 0]), c("i11", [1, 1]), c("i10", [1, 0]), c("i01", [0, 1]),
              c("ibb", [big, big]), c("ib1", [big, 1]), c("i1b", [1, big]), c("i12", [1, 2])]
    nodes: list[Any] = []

    def op(kind: str, ins: list[str], out: str) -> str:
        nodes.append(helper.make_node(kind, ins, [out]))
        return out

    a, b, t = "A", "b", ""
    for k in range(D):
        piv = op("Slice", [a, "i00", "i11", "i12"], f"piv_{k}")          # rows x 1 x 1
        pv = op("Squeeze", [piv, "i2"], f"pv_{k}")                        # rows x 1
        bk = op("Slice", [b, "i0", "i1", "i1"], f"bk_{k}")                # rows x 1
        q = op("Div", [bk, pv], f"q_{k}")
        term = op("Mul", [bk, q], f"term_{k}")                            # b_k² / d_k
        t = op("Add", [t, term], f"t_{k}") if t else term
        if k == D - 1:
            break
        col = op("Slice", [a, "i10", "ib1", "i12"], f"col_{k}")          # rows x m-1 x 1
        row = op("Slice", [a, "i01", "i1b", "i12"], f"row_{k}")          # rows x 1 x m-1
        rest = op("Slice", [a, "i11", "ibb", "i12"], f"rest_{k}")        # rows x m-1 x m-1
        lk = op("Div", [col, piv], f"l_{k}")
        a = op("Sub", [rest, op("Mul", [lk, row], f"lr_{k}")], f"A_{k + 1}")
        colv = op("Squeeze", [col, "i2"], f"colv_{k}")                    # rows x m-1
        brest = op("Slice", [b, "i1", "ibig", "i1"], f"brest_{k}")
        b = op("Sub", [brest, op("Mul", [colv, q], f"cq_{k}")], f"b_{k + 1}")
    nodes.append(helper.make_node("Identity", [t], ["t2_sum"]))
    used = {i for n in nodes for i in n.input}
    return nodes, [c for c in consts if c.name in used]


#: ``metadata_props`` keys of a Mahalanobis graph: the metric of each column of ``x``, in
#: order (JSON list), and the score's ``tail_digits``
MAHA_METRICS_KEY = "edgewise.metrics"
MAHA_TAIL_DIGITS_KEY = "edgewise.tail_digits"


def export_mahalanobis_onnx(det: Any, name: str = "maha") -> Any:
    """The frozen scoring step as a graph: ``x`` (rows x D, float64) -> ``t2``, ``dof`` and
    ``n_eff`` (rows each, float64).

    Each row is scored, as in Python, on the metrics it holds (a finite value) that were warm
    at export (``warmup`` readings of their own; the others are left out until a new export):
    ``t2`` is their marginal ``T²``, ``d_o' S_oo⁻¹ d_o`` under the frozen mean and shrunk
    covariance, ``dof`` their count and ``n_eff`` the effective readings behind the least
    read of them (:func:`~edgewise.detect.mahalanobis.effective_count` of its count at
    export; 0 where ``dof`` is 0). The graph solves each row's masked
    covariance ``M S M + (I - M)`` (``M`` the row's mask) by Gaussian elimination unrolled
    over the D metrics (about 16 nodes per metric). The score is ``min(1,
    -log10(t2_tail(t2, dof, n_eff)) / tail_digits)``
    (:func:`~edgewise.detect.mahalanobis.t2_tail`, the predictive Hotelling tail, an
    incomplete beta function), computed by the caller: 0 where ``dof`` is 0, 1 where ``t2``
    is inf (a reading near 1e308 from the mean). The graph's metadata names the metric of
    each column of ``x`` (:data:`MAHA_METRICS_KEY`: the detector's ``metrics_``, in the order
    they first arrived) and holds ``tail_digits`` (:data:`MAHA_TAIL_DIGITS_KEY`).

    >>> from edgewise.detect.mahalanobis import Mahalanobis
    >>> det = Mahalanobis(warmup=1)   # 2 metrics: scored from 6 readings (warm_count)
    >>> for r in ([0.0, 1.0], [2.0, 0.0], [1.0, 2.0], [0.5, 0.5], [1.5, 1.0], [0.0, 0.0]):
    ...     det.learn_one({"a": r[0], "b": r[1]})
    >>> g = export_mahalanobis_onnx(det)
    >>> t2, dof, n_eff = g.run({"x": np.array([[det.mean_[0], np.nan], [det.mean_[0], np.inf],
    ...                                        [np.nan, np.nan], [2.0, 2.0]])})
    >>> t2[:3].tolist(), dof.tolist(), n_eff.tolist()
    ([0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 2.0], [6.0, 6.0, 0.0, 6.0])
    """
    from onnx import TensorProto, helper, numpy_helper

    from edgewise.detect.mahalanobis import effective_count
    from edgewise.edge.export_onnx import OnnxExport, _onnx

    onnx = _onnx()
    mean, cov, warm = mahalanobis_frozen(det)
    D = len(mean)
    ldl, consts = _ldl_t2_nodes(D)
    inits = [numpy_helper.from_array(mean.astype(np.float64), "mean"),
             numpy_helper.from_array(cov.astype(np.float64), "cov"),
             numpy_helper.from_array(warm.astype(bool), "warm"),
             numpy_helper.from_array(np.array(0.0, dtype=np.float64), "zero"),
             numpy_helper.from_array(np.array(1.0, dtype=np.float64), "one"),
             numpy_helper.from_array(np.array(np.inf, dtype=np.float64), "inf"),
             numpy_helper.from_array(effective_count(det.counts_, det.alpha), "neff_m"),
             *consts]
    nodes = [  # the row's mask: read (not NaN, not +-inf) and warm
        helper.make_node("IsNaN", ["x"], ["x_nan"]),
        helper.make_node("IsInf", ["x"], ["x_inf"]),
        helper.make_node("Or", ["x_nan", "x_inf"], ["x_missing"]),
        helper.make_node("Not", ["x_missing"], ["x_read"]),
        helper.make_node("And", ["x_read", "warm"], ["used"]),
        helper.make_node("Cast", ["used"], ["m"], to=TensorProto.DOUBLE),
        helper.make_node("ReduceSum", ["m", "i1"], ["dof"], keepdims=0),
        helper.make_node("Sub", ["x", "mean"], ["dz_raw"]),
        helper.make_node("Where", ["used", "dz_raw", "zero"], ["b"]),
        # A = M S M + (I - M), one matrix per row
        helper.make_node("Unsqueeze", ["m", "i2"], ["m_col"]),
        helper.make_node("Unsqueeze", ["m", "i1"], ["m_row"]),
        helper.make_node("Mul", ["m_col", "cov"], ["mS"]),
        helper.make_node("Mul", ["mS", "m_row"], ["mSm"]),
        helper.make_node("Sub", ["one", "m_col"], ["off_col"]),
        helper.make_node("EyeLike", ["cov"], ["eye"]),
        helper.make_node("Mul", ["off_col", "eye"], ["off_diag"]),
        helper.make_node("Add", ["mSm", "off_diag"], ["A"]),
        *ldl,
        helper.make_node("Squeeze", ["t2_sum", "i1"], ["t2_raw"]),
        # NaN only from an infinite deviation (x near 1e308 from the mean): inf, as Python
        helper.make_node("IsNaN", ["t2_raw"], ["t2_nan"]),
        helper.make_node("Where", ["t2_nan", "inf", "t2_raw"], ["t2"]),
        # the effective readings of the least read metric used (0 where none is)
        helper.make_node("Where", ["used", "neff_m", "inf"], ["neff_used"]),
        helper.make_node("ReduceMin", ["neff_used"], ["neff_row"], axes=[1], keepdims=0),
        helper.make_node("Greater", ["dof", "zero"], ["any_used"]),
        helper.make_node("Where", ["any_used", "neff_row", "zero"], ["n_eff"]),
    ]
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["rows", D])],
        [helper.make_tensor_value_info("t2", TensorProto.DOUBLE, ["rows"]),
         helper.make_tensor_value_info("dof", TensorProto.DOUBLE, ["rows"]),
         helper.make_tensor_value_info("n_eff", TensorProto.DOUBLE, ["rows"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="edgewise")
    model.ir_version = 8
    # which metric each column of x is (the order they first arrived in Python, not sorted)
    # and the score's tail_digits: the graph carried neither, and a device feeding its
    # metrics in another order got T^2 against the wrong means with no word
    names = [str(m) for m in det.metrics_]
    helper.set_model_props(model, {MAHA_METRICS_KEY: json.dumps(names),
                                   MAHA_TAIL_DIGITS_KEY: repr(float(det.tail_digits))})
    model.doc_string = (f"Mahalanobis scoring step: input x holds one row of {D} metrics, in "
                        f"the order named in metadata '{MAHA_METRICS_KEY}' (JSON); score = "
                        f"min(1, -log10(t2_tail(t2, dof, n_eff)) / {float(det.tail_digits)!r}), "
                        "0 where dof is 0.")
    onnx.checker.check_model(model)
    return OnnxExport(name, "mdetector", model.SerializeToString(), ["x"], dtype="float64")
