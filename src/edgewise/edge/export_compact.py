"""Compact C for boosted trees: shared exact thresholds, 4 bytes per node, int16 leaves.

Boosted ensembles (LightGBM above all) split each feature on a few hundred distinct values
at most, so every distinct ``(feature, threshold)`` is stored once (float32, rounded as
:func:`~edgewise.edge.compress.float32_thresholds` does, so decisions equal the float32
export's) and each inner node holds a one-byte index into its feature's list. A node is then
4 bytes (feature, threshold index, right child or leaf) instead of 8, and leaves are int16
times one scale, each tree's leaves centred on 0 first (the offset moves into the base, so
a large output offset, y = 101325 + x, costs no precision): the sum over trees differs from
float leaves by at most ``n_trees * scale / 2`` (stated in the header; a warning when that is
over a quarter of the leaves' spread; 0, and no warning, when each tree's leaves are all
equal, so every code is 0). This cuts the flash of the
float32 export by about a third (the shared thresholds cost the rest) with no change to any
split.

>>> import numpy as np
>>> from sklearn.ensemble import GradientBoostingRegressor
>>> from edgewise.edge.compress import tree_table
>>> X = np.random.default_rng(0).normal(size=(300, 4)); y = X[:, 0] + X[:, 1] ** 2
>>> gbr = GradientBoostingRegressor(n_estimators=30, max_depth=3, random_state=0).fit(X, y)
>>> c = export_trees_compact(tree_table(gbr), name="gbc")
>>> c.flash_bytes < 8 * tree_table(gbr).n_nodes
True
>>> bool(np.abs(c.predict(X) - gbr.predict(X)).max() < 1e-3)
True
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from edgewise.edge.compress import (
    TreeTable,
    _center_leaves,
    check_leaves_float32,
    check_trees,
    float32_thresholds,
)
from edgewise.edge.export_c import (
    CExport,
    _array,
    _f,
    _many,
    _regressor_header,
    _regressor_host,
    _zero_band,
    check_c_name,
)
from edgewise.errors import ExportError

__all__ = ["compact_reference", "compact_size", "export_trees_compact"]


def _layout(table: TreeTable) -> dict[str, np.ndarray | float | int]:
    # each tree's leaves centred on 0, the offset in base: int16 steps for the leaves' spread
    t = _center_leaves(float32_thresholds(table))
    leaf = t.feature < 0
    if t.n_features > 127:
        raise ExportError(f"Compact trees take at most 127 features. Got {t.n_features}.")
    if t.n_nodes > 32767:
        raise ExportError(f"Compact trees take at most 32767 nodes. Got {t.n_nodes}; prune first.")
    thr32 = t.threshold.astype(np.float32)
    lists, offsets, tix = [], [0], np.zeros(t.n_nodes, dtype=np.int64)
    for f in range(t.n_features):
        at = (~leaf) & (t.feature == f)
        uniq = np.unique(thr32[at])
        if len(uniq) > 256:
            raise ExportError(f"Feature {f} splits on {len(uniq)} distinct thresholds; compact "
                              "trees allow 256 per feature. Use the float32 export.")
        tix[at] = np.searchsorted(uniq, thr32[at])
        lists.append(uniq)
        offsets.append(offsets[-1] + len(uniq))
    leaves = t.value[leaf]
    top = float(np.max(np.abs(leaves))) if len(leaves) else 0.0
    scale = top / 32767.0 if top > 0 else 1.0
    q = np.where(leaf, np.round(t.value / scale), 0).astype(np.int64)
    # every leaf 0 after centring (each tree's leaves equal: a constant target): the codes
    # are exact, so the rounding bound is 0, not n_trees * scale / 2 of a placeholder scale
    bound = t.n_trees * scale / 2 if top > 0 else 0.0
    return {"t": t, "leaf": leaf, "thr": np.concatenate(lists) if lists else np.zeros(0),
            "off": np.array(offsets), "tix": tix, "q": q, "scale": scale, "bound": bound}


def _leaf_spread(t: TreeTable) -> float:
    """How far predictions can spread, from the leaves alone: the sum over trees of the std of
    each tree's leaf values (an upper bound on the std of their sum when each tree's leaves
    are equally likely). The int16 rounding bound is judged against it, as int8 judges its
    error against the calibration rows' output std."""
    tree = np.searchsorted(t.roots, np.arange(t.n_nodes), side="right") - 1
    leaf = t.feature < 0
    n = np.bincount(tree[leaf], minlength=t.n_trees)
    s1 = np.bincount(tree[leaf], t.value[leaf], minlength=t.n_trees)
    mean = s1 / np.maximum(n, 1)
    dev2 = np.bincount(tree[leaf], (t.value[leaf] - mean[tree[leaf]]) ** 2,
                       minlength=t.n_trees)
    return float(np.sqrt(dev2 / np.maximum(n, 1)).sum())


def compact_size(table: TreeTable) -> int:
    """Flash bytes of the compact tables for ``table`` (without building them)."""
    lay = _layout(table)
    t = lay["t"]
    zm = 0 if t.zero_missing is None else t.n_features  # LightGBM zero_as_missing flags
    return int(t.n_nodes * 4 + t.n_trees * 2 + len(lay["thr"]) * 4 + (t.n_features + 1) * 2
               + zm)


def compact_reference(table: TreeTable) -> TreeTable:
    """The ensemble the compact C computes (float32 thresholds, int16-rounded leaves)."""
    lay = _layout(table)
    t = lay["t"]
    value = np.where(lay["leaf"], lay["q"] * lay["scale"], t.value)
    return dataclasses.replace(t, value=value)


def export_trees_compact(table: TreeTable, name: str = "model") -> CExport:
    """C99 for a tree ensemble in the compact layout (see the module docstring)."""
    check_c_name(name)
    check_trees(table)
    check_leaves_float32(table, "compact")  # a leaf of 9.9e38 made it predict NaN for 0
    n = name
    lay = _layout(table)
    t = lay["t"]
    leaf = lay["leaf"]
    nn, nt, nf = t.n_nodes, t.n_trees, t.n_features
    feat = np.where(leaf, 0xFF, t.feature | np.where(t.missing_left, 0x80, 0))
    slot = np.where(leaf, lay["q"], t.right)
    n_thr = len(lay["thr"])
    zm_table, zm_test, zm_flash = _zero_band(n, t.zero_missing)
    flash = nn * 4 + nt * 2 + n_thr * 4 + (nf + 1) * 2 + zm_flash
    bound = float(lay["bound"])
    # the base as a float32 and its rest, added to the leaves' small sum before the base:
    # the float base alone was off by up to half a float32 step, beside the leaves' rounding
    # (y = 101325.1 + x: 0.0073 from the model and compact_reference, the header said 0.0002)
    with np.errstate(over="ignore"):
        base32 = float(np.float32(t.base))
    rest = t.base - base32 if np.isfinite(base32) else 0.0
    spread = _leaf_spread(t)
    if bound > 0.25 * spread:
        warnings.warn(
            f"compact export: int16 leaves (x {float(lay['scale']):.4g}) move a prediction by "
            f"up to {bound:.4g}, against a spread of {spread:.4g} in the trees' leaves (each "
            "tree's leaf std, summed): a few leaves far from the rest set the step. Export "
            "dtype='float32' for exact leaves.", UserWarning, stacklevel=2)
    tables = (_array("uint8_t", f"{n}_feature", feat)
              + _array("uint8_t", f"{n}_tix", np.where(leaf, 0, lay["tix"]))
              + _array("int16_t", f"{n}_right_or_leaf", slot)
              + _array("uint16_t", f"{n}_roots", t.roots)
              + _array("float", f"{n}_thr", lay["thr"], _f, 8)
              + _array("uint16_t", f"{n}_thr_off", lay["off"])
              + zm_table)
    if zm_test:  # missing (NaN or LightGBM's zero): the split's missing side, else compare
        decide = (f"int miss = v != v{zm_test.replace('@F@', 'f')};\n"
                  f"            if (miss ? ({n}_feature[i] & 0x80u) != 0\n"
                  f"                     : v <= {n}_thr[{n}_thr_off[f] + {n}_tix[i]])")
    else:
        decide = (f"if (v <= {n}_thr[{n}_thr_off[f] + {n}_tix[i]] || (v != v && ({n}_feature[i]"
                  " & 0x80u)))")
    body = f"""
float {n}_predict(const float *x) {{
    int32_t acc = 0;
    uint16_t tr;
    for (tr = 0; tr < {nt}u; ++tr) {{
        int32_t i = {n}_roots[tr];
        while ({n}_feature[i] != 0xFFu) {{
            uint8_t f = (uint8_t)({n}_feature[i] & 0x7Fu);
            float v = x[f];
            {decide}
                i = i + 1;
            else
                i = {n}_right_or_leaf[i];
        }}
        acc += {n}_right_or_leaf[i];
    }}
    return {_f(base32)} + ({_f(rest)} + {_f(lay["scale"])} * (float)acc);
}}
"""
    what = (f"{nt} trees, {nn} nodes, compact: {n_thr} shared float32 thresholds, "
            "int16 leaves")
    extra = (f"/* Leaves are int16 x {float(lay['scale']):.6g}; their rounding moves a prediction "
             f"by at most {bound:.3g}. */\n")
    c = (f"/* {n}.c: {what}. Generated by Edgewise. */\n#include <math.h>\n#include \"{n}.h\"\n\n"
         + tables + body + _many(n))
    h = _regressor_header(n, f"tree ensemble ({what})", nf, 0, flash, extra)
    files = {f"{n}.h": h, f"{n}.c": c, f"{n}_host_test.c": _regressor_host(n)}
    return CExport(n, "regressor", files, ram_bytes=0, flash_bytes=flash, n_features=nf,
                   dtype="compact")
