"""Make models small enough for a device: a flat tree table, tree pruning, int8 quantisation.

Every tree ensemble (scikit-learn trees and forests, ``GradientBoostingRegressor``,
``HistGradientBoostingRegressor``, LightGBM) is first read into one :class:`TreeTable`: trees laid
out in pre-order (the left child of node ``i`` is ``i + 1``), so one array of right-child indices
is all the structure a device needs. The C and ONNX exporters and the pruning all work on that
table, so a new tree library is one reader function.

>>> import numpy as np
>>> from sklearn.ensemble import GradientBoostingRegressor
>>> X = np.arange(40, dtype=float).reshape(20, 2); y = X[:, 0] * 2
>>> gbr = GradientBoostingRegressor(n_estimators=5, max_depth=2, random_state=0).fit(X, y)
>>> t = tree_table(gbr)
>>> t.n_trees, bool(np.allclose(t.predict(X), gbr.predict(X)))
(5, True)
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgewise.errors import ExportError, InvalidParameterError

__all__ = ["QuantizedTrees", "TreeTable", "check_leaves_float32", "check_not_overridden",
           "check_trees", "outside_share", "prune_trees", "quantize_trees", "tree_table"]

#: LightGBM's zero (``kZeroThreshold``, 1e-35f): with ``missing_type`` "Zero" a value with
#: ``|x| <= ZERO`` is missing, like NaN
ZERO = float(np.float32(1e-35))

#: LightGBM writes a split that parts NaN from every number (``missing_type`` "NaN") with the
#: threshold 1e300, and its predictor sends +inf and every number above 1e300 left there
#: (with the numbers): read as +inf, so that a device's inf (or a float beyond float32's
#: range, which arrives as inf) takes LightGBM's side, not NaN's (20 trees: 9.02, NaN's
#: prediction, for inf where LightGBM gives 6.00)
LGB_MAX_THRESHOLD = 1e300


def _missing(x: np.ndarray, zero_missing: np.ndarray | None) -> np.ndarray:
    """Where ``x`` (rows x features, already in the precision compared) is missing: NaN, or
    within ``ZERO`` of 0 on a ``zero_missing`` feature (LightGBM's zero-as-missing)."""
    miss = np.isnan(x)
    if zero_missing is not None:
        miss |= zero_missing[None, :] & (np.abs(x) <= ZERO)
    return miss


@dataclass(frozen=True)
class TreeTable:
    """An additive tree ensemble: ``prediction = base + sum of one leaf per tree``.

    Arrays are per node, all trees concatenated, each tree in pre-order. ``feature`` is -1 at
    leaves; a sample goes left when ``x[feature] <= threshold``, or, when it is missing (NaN,
    or within :data:`ZERO` of 0 for a feature flagged in ``zero_missing``), when the node is
    ``missing_left``. ``value`` holds every node's value (leaves: what is added; inner nodes:
    what would be added if the tree were cut there, used by depth pruning).
    ``zero_missing`` (per feature, or None: none) is LightGBM's ``zero_as_missing``.
    ``averaged``: the model predicts the trees' mean (a random forest, LightGBM's
    ``boosting_type='rf'``), so each leaf holds its value over the number of trees, and
    :func:`prune_trees` rescales the trees it keeps.
    ``threshold_rounding`` is how :func:`float32_thresholds` brings the thresholds to float32
    for a device: ``"down"`` (models that compare float32 inputs), ``"nearest"``
    (HistGradientBoosting, whose thresholds are often training values themselves, compared
    in float64) or ``"lightgbm"`` (one double above a midpoint of training values, compared
    in float64: the midpoint rounded to nearest).
    ``count`` (per node, or None: not known) is how many training rows reached the node
    (its tree's, so the in-bag rows of a bagged or subsampled tree), as the library records
    it: :func:`quantize_trees` tells from it how many training rows lie outside the
    calibration rows' ranges.
    """

    feature: np.ndarray
    threshold: np.ndarray
    right: np.ndarray
    value: np.ndarray
    missing_left: np.ndarray
    depth: np.ndarray
    roots: np.ndarray
    base: float
    n_features: int
    zero_missing: np.ndarray | None = None
    threshold_rounding: str = "down"
    averaged: bool = False
    count: np.ndarray | None = None

    def missing(self, X: np.ndarray) -> np.ndarray:
        """Where ``X`` (rows x features) is missing: NaN, or zero on a ``zero_missing`` feature."""
        return _missing(np.asarray(X, dtype=np.float64), self.zero_missing)

    @property
    def n_trees(self) -> int:
        """Number of trees."""
        return len(self.roots)

    @property
    def n_nodes(self) -> int:
        """Number of nodes over all trees."""
        return len(self.feature)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict in numpy with the thresholds as stored (the reference for C parity)."""
        X = np.asarray(X, dtype=np.float64)
        if self.zero_missing is not None:
            X = np.where(self.missing(X), np.nan, X)
        out = np.full(len(X), self.base, dtype=np.float64)
        rows = np.arange(len(X))
        for root in self.roots:
            idx = np.full(len(X), root, dtype=np.int64)
            while True:
                f = self.feature[idx]
                inner = f >= 0
                if not inner.any():
                    break
                v = X[rows[inner], f[inner]]
                i_in = idx[inner]
                go_left = (v <= self.threshold[i_in]) | (np.isnan(v) & self.missing_left[i_in])
                idx[inner] = np.where(go_left, i_in + 1, self.right[i_in])
            out += self.value[idx]
        return out


class _Builder:
    def __init__(self) -> None:
        self.feature: list[int] = []
        self.threshold: list[float] = []
        self.right: list[int] = []
        self.value: list[float] = []
        self.missing_left: list[bool] = []
        self.depth: list[int] = []
        self.roots: list[int] = []
        self.count: list[float] | None = []  # None once a tree comes without counts

    def add_tree(self, node: Any, children: Any, scale: float, weight: Any = None,
                 count: Any = None) -> None:
        """Append one tree; ``children(node)`` gives (feature|None, thr, miss, l, r, value).

        ``weight(node)``, when given, is a leaf's training weight: each inner node's value is
        then the weighted mean of the values of the leaves under it (see :meth:`_leaf_means`).
        ``count(node)``, when given, is how many training rows reached the node
        (``TreeTable.count``); a table with a tree without counts has none.
        """
        if count is None:
            self.count = None
        start = len(self.feature)
        self.roots.append(start)
        weights: list[float] = []
        stack: list[tuple[Any, int, int | None]] = [(node, 0, None)]
        while stack:
            n, d, parent = stack.pop()
            i = len(self.feature)
            if parent is not None:
                self.right[parent] = i
            info = children(n)
            self.depth.append(d)
            if self.count is not None:
                self.count.append(float(count(n)))
            if weight is not None:
                weights.append(float(weight(n)) if info is None or info[0] is None else 0.0)
            if info is None or info[0] is None:
                self.feature.append(-1)
                self.threshold.append(0.0)
                self.right.append(-1)
                self.value.append(float(info[5] if info else 0.0) * scale)
                self.missing_left.append(False)
                continue
            f, thr, miss_left, left, right, val = info
            self.feature.append(int(f))
            self.threshold.append(float(thr))
            self.right.append(-1)
            self.value.append(float(val) * scale)
            self.missing_left.append(bool(miss_left))
            stack.append((right, d + 1, i))  # right popped after the whole left subtree
            stack.append((left, d + 1, None))
        if weight is not None:
            self._leaf_means(start, weights)

    def _leaf_means(self, start: int, weights: list[float]) -> None:
        """Set each inner node of the tree at ``start`` to the ``weights``-weighted mean of
        its leaves' values: the one value that, cut there, adds what its leaves add on
        average over the training rows. Boosting that fits a leaf's value after the split
        (GradientBoostingRegressor's absolute_error/huber/quantile losses, LightGBM's
        regression_l1/quantile/mape) leaves the inner nodes a value of another scale (the
        mean pseudo-residual: depth 3 cut, test RMSE 7.0 against 2.4 for squared_error)."""
        for i in range(len(self.feature) - 1, start - 1, -1):  # children after their parent
            if self.feature[i] < 0:
                continue
            left, right = i + 1, self.right[i]
            wl, wr = weights[left - start], weights[right - start]
            if wl + wr > 0:
                self.value[i] = (wl * self.value[left] + wr * self.value[right]) / (wl + wr)
            else:  # no training weight under it (cannot be reached in training): plain mean
                self.value[i] = (self.value[left] + self.value[right]) / 2
            weights[i - start] = wl + wr

    def build(self, base: float, n_features: int, zero_missing: np.ndarray | None = None,
              threshold_rounding: str = "down", averaged: bool = False) -> TreeTable:
        return TreeTable(
            np.asarray(self.feature, np.int32), np.asarray(self.threshold, np.float64),
            np.asarray(self.right, np.int32), np.asarray(self.value, np.float64),
            np.asarray(self.missing_left, bool), np.asarray(self.depth, np.int32),
            np.asarray(self.roots, np.int32), float(base), int(n_features),
            None if zero_missing is None or not zero_missing.any() else zero_missing,
            threshold_rounding, averaged,
            None if self.count is None else np.asarray(self.count, np.float64),
        )


def _sk_tree(b: _Builder, est: Any, scale: float, leaf_means: bool = False) -> None:
    """One scikit-learn tree; ``leaf_means``: inner values from the leaves' (weighted by
    ``weighted_n_node_samples``), for trees whose leaves were refitted after the split."""
    t = est.tree_
    miss = getattr(t, "missing_go_to_left", np.zeros(t.node_count, dtype=np.uint8))
    vals = t.value[:, 0, 0]

    def children(i: int) -> tuple[Any, ...] | None:
        if t.children_left[i] < 0:
            return (None, 0, False, 0, 0, vals[i])
        return (t.feature[i], t.threshold[i], miss[i], t.children_left[i], t.children_right[i],
                vals[i])

    b.add_tree(0, children, scale,
               t.weighted_n_node_samples.__getitem__ if leaf_means else None,
               t.weighted_n_node_samples.__getitem__)


def _one_output(model: Any) -> None:
    """Raise :class:`ExportError` for a scikit-learn model fitted on several outputs: a tree
    table predicts one (the export read only the first: a DecisionTreeRegressor on y of 2
    columns gave its first column's prediction in C, with no word of the second)."""
    n = int(getattr(model, "n_outputs_", 1))
    if n > 1:
        raise ExportError(
            f"Cannot export a {type(model).__name__} with n_outputs_={n} (fitted on y of {n} "
            "columns): a tree table predicts one output. Fit one model per output column and "
            "export each.")


def _read_sklearn_tree(model: Any) -> TreeTable:
    _one_output(model)
    b = _Builder()
    _sk_tree(b, model, 1.0)
    return b.build(0.0, model.n_features_in_)


def _read_forest(model: Any) -> TreeTable:
    _one_output(model)
    b = _Builder()
    for est in model.estimators_:
        _sk_tree(b, est, 1.0 / len(model.estimators_))
    return b.build(0.0, model.n_features_in_, averaged=True)


def _gbr_base(model: Any) -> float:
    """GradientBoostingRegressor's starting prediction: its ``init`` as a constant. It is 0
    for ``init='zero'`` and the fitted constant for a ``DummyRegressor`` (the default); an
    estimator whose prediction depends on the inputs has no place in a tree table (its
    ``init=LinearRegression()`` export strayed from the model by up to 33 on a y of ~50)."""
    init = model.init_
    if isinstance(init, str) and init == "zero":
        return 0.0
    if type(init).__name__ == "DummyRegressor":  # predicts one constant, whatever the input
        return float(np.ravel(init.predict(np.zeros((1, model.n_features_in_))))[0])
    raise ExportError(
        f"Cannot export a GradientBoostingRegressor with init={model.init!r}: its starting "
        "prediction depends on the inputs, and a tree table starts from one constant. "
        "Supported: init=None (the default), 'zero', or a DummyRegressor.")


def _read_gbr(model: Any) -> TreeTable:
    base = _gbr_base(model)
    b = _Builder()
    # squared_error's inner values are the mean residual, already the mean of their leaves;
    # the other losses refit each leaf after the split and keep the mean pseudo-residual
    refit = getattr(model, "loss", "squared_error") != "squared_error"
    for est in model.estimators_[:, 0]:
        _sk_tree(b, est, model.learning_rate, leaf_means=refit)
    return b.build(base, model.n_features_in_)


#: HistGradientBoostingRegressor losses whose prediction is the sum of the trees (identity
#: link); gamma and poisson predict exp(sum)
_HGB_LOSSES = ("squared_error", "absolute_error", "quantile")


def _hgb_columns(model: Any) -> np.ndarray | None:
    """Which input column each of a HistGradientBoostingRegressor's tree features reads:
    ``cols[feature_idx]``, or None where they are the same (no categorical features).

    With categorical features it fits on its ``_preprocessor``'s output, a ColumnTransformer
    that puts the categorical columns first (an ordinal encoder) and the others after them,
    unchanged; its trees' ``feature_idx`` counts in that layout. Read as input columns, a model
    with one unused categorical column in the middle was off by up to 29.85 (y std 10.4) in C
    and ONNX. An :class:`ExportError` where the layout is not the one understood.

    >>> import numpy as np
    >>> from sklearn.ensemble import HistGradientBoostingRegressor
    >>> X = np.c_[np.arange(40.0), np.arange(40) % 2, np.arange(40.0) ** 2]
    >>> m = HistGradientBoostingRegressor(max_iter=2, categorical_features=[1]).fit(X, X[:, 0])
    >>> _hgb_columns(m).tolist()
    [1, 0, 2]
    """
    pre = getattr(model, "_preprocessor", None)
    if pre is None:
        return None
    n = int(model.n_features_in_)
    cols = np.full(n, -1, dtype=np.int64)
    try:
        for tname, _trans, given in pre.transformers_:
            where = np.asarray(given)
            inputs = (np.flatnonzero(where) if where.dtype == bool
                      else where.astype(np.int64).ravel())
            out = pre.output_indices_[tname]
            if len(inputs) != out.stop - out.start:
                raise ValueError(tname)
            if len(inputs) and tname not in ("encoder", "numerical"):
                raise ValueError(tname)
            cols[out] = inputs
        cat = np.flatnonzero(np.asarray(model.is_categorical_, dtype=bool))
        ok = (sorted(cols.tolist()) == list(range(n))
              and cols[:len(cat)].tolist() == cat.tolist())
    except (AttributeError, KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise ExportError(
            "Cannot export this HistGradientBoostingRegressor: its trees read the columns of its "
            "categorical preprocessor (categorical features first), in a layout this version of "
            "scikit-learn does not give as expected. Fit it with categorical_features=None "
            "(categories as numeric codes) or one-hot encode them before fitting.")
    return cols


def _hgb_column_names(model: Any, cols: list[int]) -> str:
    """Input columns as their names where the model knows them, else as indices."""
    names = getattr(model, "feature_names_in_", None)
    return ", ".join(repr(str(names[c])) if names is not None else str(c) for c in cols)


def _read_hgbr(model: Any) -> TreeTable:
    loss = model.loss
    if loss not in _HGB_LOSSES:
        raise ExportError(
            f"Cannot export a HistGradientBoostingRegressor with loss={loss!r}: it predicts "
            "exp(sum of the trees), and a tree table predicts the sum. Supported losses: "
            f"{', '.join(map(repr, _HGB_LOSSES))}.")
    cols = _hgb_columns(model)
    # it multiplies only the leaves by the learning rate (grower._apply_shrinkage), so an inner
    # node's value (the value a depth cut keeps) is 1 / learning_rate too big: times it, an
    # inner value is the count-weighted mean of its leaves' (squared_error, no l2), and a
    # depth-3 cut's test RMSE went from 82.96 to that of GradientBoostingRegressor's cut.
    # absolute_error and quantile refit each leaf after the split: inner values from the leaves
    lr = float(model.learning_rate)
    refit = loss != "squared_error"
    b = _Builder()
    for (pred,) in model._predictors:
        nodes = pred.nodes
        cat = nodes["is_categorical"].astype(bool) & ~nodes["is_leaf"].astype(bool)
        if cat.any():
            split = np.unique(nodes["feature_idx"][cat])
            split = split if cols is None else np.unique(cols[split])
            raise ExportError(
                "Cannot export a HistGradientBoostingRegressor that splits on categorical "
                f"features (input columns {_hgb_column_names(model, split.tolist())}): a tree "
                "table holds numeric '<=' splits only. Fit it with categorical_features=None "
                "(the categories as numeric codes, e.g. a pandas column's .cat.codes), or "
                "one-hot encode them before fitting.")

        def children(i: int, nodes: Any = nodes) -> tuple[Any, ...] | None:
            n = nodes[i]
            if n["is_leaf"]:
                return (None, 0, False, 0, 0, n["value"])
            f = int(n["feature_idx"])
            return (f if cols is None else int(cols[f]), n["num_threshold"],
                    n["missing_go_to_left"], n["left"], n["right"], n["value"] * lr)

        count = nodes["count"].__getitem__  # training rows per node (refit: leaf weights)
        b.add_tree(0, children, 1.0, count if refit else None, count)
    # it compares the float64 input with a float64 threshold (x <= t), and its thresholds are
    # often training values (percentile bins): "nearest" keeps x = t left in float32
    return b.build(float(np.ravel(model._baseline_prediction)[0]), model.n_features_in_,
                   threshold_rounding="nearest")


#: LightGBM objectives whose prediction is not the sum of the trees
_LGB_EXP = ("poisson", "gamma", "tweedie", "binary", "cross_entropy", "cross_entropy_lambda")


def _lgb_leaf_weight(n: dict[str, Any]) -> float:
    """A LightGBM leaf's training weight: its sum of hessians (the objective's own weights),
    else its row count."""
    return float(n.get("leaf_weight", n.get("leaf_count", 1.0)))


def _lgb_count(n: dict[str, Any]) -> float:
    """How many training rows reached a LightGBM node (``internal_count``, ``leaf_count``;
    NaN where the dump has neither)."""
    return float(n.get("leaf_count", n.get("internal_count", math.nan)))


def _read_lightgbm(model: Any) -> TreeTable:
    """LightGBM's trees, with its missing values (``Tree::NumericalDecision``): with
    ``missing_type`` "NaN" a NaN takes the default side; "None": NaN is 0.0 (so it goes where
    0 goes); "Zero" (``zero_as_missing``): NaN and every ``|x| <= 1e-35f`` take the default
    side. "Zero" is a feature's property (its bin mapper), so it is kept per feature.
    LightGBM also reads any ``|x| <= 1e-35f`` as 0 (its predictor drops such values), so a
    threshold within that band is moved to its edge on 0's side: the same split for every
    value outside the band, and 0's for the band."""
    booster = getattr(model, "booster_", model)
    dump = booster.dump_model()
    if dump.get("num_class", 1) != 1:
        raise ExportError("Cannot export a multi-class LightGBM model. Supported: regression.")
    words = str(dump.get("objective") or "custom").split()
    objective = words[0]
    if "sqrt" in words[1:]:  # "regression sqrt": trained on sqrt(y), predicts sign(s) * s**2
        raise ExportError(
            f"Cannot export a LightGBM model with reg_sqrt=True (objective "
            f"{' '.join(words)!r}): it predicts the square of the sum of the trees (keeping its "
            "sign), and a tree table predicts the sum. Train with reg_sqrt=False.")
    if objective in _LGB_EXP:
        raise ExportError(
            f"Cannot export a LightGBM model with objective {objective!r}: it predicts a "
            "function of the sum of the trees (exp or sigmoid), and a tree table predicts the "
            "sum. Supported: objectives that predict the sum (regression, regression_l1, huber, "
            "fair, quantile, mape).")
    # regression_l1, quantile and mape refit each leaf after the split (RenewTreeOutput) and
    # keep the inner nodes' Newton values: inner values from the leaves', as depth cuts need
    # them (quantile, depth 3: test RMSE 13.9 against the uncut 2.9)
    refit = objective in ("regression_l1", "quantile", "mape")
    # boosting_type='rf' ("average_output"): the prediction is the trees' mean, not their sum
    # (the table added 20 trees: 571 off on a y of ~20)
    scale = 1.0 / max(len(dump["tree_info"]), 1) if dump.get("average_output") else 1.0
    nf = dump["max_feature_idx"] + 1
    kinds: list[set[bool]] = [set() for _ in range(nf)]  # per feature: "Zero" or not, seen
    b = _Builder()
    for tree in dump["tree_info"]:

        def children(n: dict[str, Any]) -> tuple[Any, ...] | None:
            if "leaf_value" in n:
                if n.get("leaf_coeff"):
                    raise ExportError(
                        "Cannot export a LightGBM model with linear_tree=True: its leaves are "
                        "linear in the inputs (a leaf's coefficients "
                        f"{[round(float(c), 6) for c in n['leaf_coeff'][:3]]} on features "
                        f"{n.get('leaf_features', [])[:3]}), and a tree table's leaves are "
                        "constants. Train with linear_tree=False.")
                # a linear tree's leaf without coefficients predicts its leaf_const
                return (None, 0, False, 0, 0, n.get("leaf_const", n["leaf_value"]))
            if n.get("decision_type", "<=") != "<=":
                raise ExportError("Cannot export LightGBM categorical splits. Supported: '<='.")
            kind = n.get("missing_type", "None")
            thr = float(n["threshold"])
            if kind == "None":
                miss_left = 0.0 <= thr
            else:
                miss_left = bool(n.get("default_left", True))
            if thr >= LGB_MAX_THRESHOLD:  # "NaN or not": LightGBM sends +inf left here too
                thr = float("inf")
            if -ZERO <= thr < ZERO:  # the band reads as 0: 0's side (x <= ZERO or x < -ZERO)
                thr = ZERO if thr >= 0.0 else float(np.nextafter(-ZERO, -np.inf))
            kinds[n["split_feature"]].add(kind == "Zero")
            return (n["split_feature"], thr, miss_left, n["left_child"], n["right_child"],
                    n.get("internal_value", 0.0))

        b.add_tree(tree["tree_structure"], children, scale,
                   _lgb_leaf_weight if refit else None, _lgb_count)
    mixed = [f for f in range(nf) if len(kinds[f]) > 1]
    if mixed:
        raise ExportError(f"LightGBM features {mixed} split with missing_type 'Zero' at some "
                          "nodes and not at others; the export keeps it per feature. Supported: "
                          "one missing_type per feature (as LightGBM trains).")
    return b.build(0.0, nf, np.array([True in k for k in kinds], dtype=bool),
                   threshold_rounding="lightgbm", averaged=scale != 1.0)


_READERS = {
    "DecisionTreeRegressor": _read_sklearn_tree,
    "ExtraTreeRegressor": _read_sklearn_tree,
    "RandomForestRegressor": _read_forest,
    "ExtraTreesRegressor": _read_forest,
    "GradientBoostingRegressor": _read_gbr,
    "HistGradientBoostingRegressor": _read_hgbr,
    "LGBMRegressor": _read_lightgbm,
    "Booster": _read_lightgbm,
}
TREE_MODELS = tuple(sorted(_READERS))
#: per reader, the methods on the supported class's predict path: a subclass that defines one
#: is refused (:func:`check_not_overridden`), as its prediction is no longer the trees' maths
_SK_TREE_PATH = ("predict", "_validate_X_predict")
_PREDICT_PATH: dict[str, tuple[str, ...]] = {
    "DecisionTreeRegressor": _SK_TREE_PATH,
    "ExtraTreeRegressor": _SK_TREE_PATH,
    "RandomForestRegressor": _SK_TREE_PATH,
    "ExtraTreesRegressor": _SK_TREE_PATH,
    "GradientBoostingRegressor": ("predict", "_raw_predict", "_raw_predict_init"),
    "HistGradientBoostingRegressor": ("predict", "_raw_predict", "_predict_iterations",
                                      "_preprocess_X"),
    "LGBMRegressor": ("predict",),
    "Booster": ("predict",),
}


def tree_table(model: Any) -> TreeTable:
    """Read a fitted tree ensemble into a :class:`TreeTable` (see the module example)."""
    if isinstance(model, TreeTable):
        return model
    # the reader of the first class in its MRO that has one, as export() dispatches: a
    # subclass of a supported model (class MyGBR(GradientBoostingRegressor)) was refused
    name = next((c.__name__ for c in type(model).__mro__ if c.__name__ in _READERS), None)
    if name is None:
        raise ExportError(f"Cannot read {type(model).__name__} as a tree ensemble. Supported: "
                          f"{', '.join(TREE_MODELS)} (or a subclass of one).")
    check_not_overridden(model, name, _PREDICT_PATH[name])
    if name != "Booster":  # a LightGBM Booster is trained when it exists
        _check_fitted(model)
    if name in ("RandomForestRegressor", "ExtraTreesRegressor"):
        # a forest averages its members' own predict: a member class overriding it (an
        # estimator=MyTree(...) forest) is not the trees' maths either
        for member in getattr(model, "estimators_", []):
            base = next(c.__name__ for c in type(member).__mro__
                        if c.__name__ in ("DecisionTreeRegressor", "ExtraTreeRegressor"))
            check_not_overridden(member, base, _SK_TREE_PATH, hint=(
                f"They are the members of a {type(model).__name__}: export a forest of plain "
                f"{base}s (the default estimator), or drop the override if it returns the "
                "base's result unchanged."))
    return _READERS[name](model)


def check_not_overridden(model: Any, base: str, methods: tuple[str, ...],
                         hint: str | None = None) -> None:
    """Raise :class:`ExportError` where ``model``'s class, a subclass of the class named
    ``base``, defines one of ``methods`` itself (or a class between the two does): the export
    reads the state and computes ``base``'s maths, and an override of ``predict`` (a target
    fitted on ``log1p(y)`` and predicted as ``expm1``) gave C and ONNX off by 114.7 on
    predictions of 0.5..119.5. ``hint`` (what to do instead) replaces the default one.

    >>> from sklearn.ensemble import GradientBoostingRegressor
    >>> class LogTarget(GradientBoostingRegressor):
    ...     def predict(self, X): return super().predict(X) ** 2
    >>> check_not_overridden(LogTarget(), "GradientBoostingRegressor", ("predict",))
    Traceback (most recent call last):
    ...
    edgewise.errors.ExportError: Cannot export LogTarget: it overrides predict of its base GradientBoostingRegressor (LogTarget.predict), and the export computes GradientBoostingRegressor's maths only, so it would not match LogTarget. Export a plain GradientBoostingRegressor fitted on what the device should output (or drop the override if it returns the base's result unchanged).
    """  # noqa: E501
    mro = type(model).__mro__
    at = next((i for i, c in enumerate(mro) if c.__name__ == base), None)
    if at is None:
        return
    found = [(c.__name__, m) for c in mro[:at] for m in methods if m in vars(c)]
    if not found:
        return
    what = ", ".join(dict.fromkeys(m for _, m in found))
    where = ", ".join(f"{c}.{m}" for c, m in found)
    cls = type(model).__name__
    raise ExportError(
        f"Cannot export {cls}: it overrides {what} of its base {base} ({where}), and the export "
        f"computes {base}'s maths only, so it would not match {cls}. "
        + (hint or f"Export a plain {base} fitted on what the device should output (or drop "
           "the override if it returns the base's result unchanged)."))


def _check_fitted(model: Any) -> None:
    """Raise :class:`ExportError` for a scikit-learn or LightGBM estimator not fitted yet
    (reading its trees failed with a raw AttributeError: no ``tree_``, ``init_``).

    >>> from sklearn.tree import DecisionTreeRegressor
    >>> _check_fitted(DecisionTreeRegressor())
    Traceback (most recent call last):
    ...
    edgewise.errors.ExportError: DecisionTreeRegressor is not fitted; fit it first (model.fit(X, y)), then export it.
    """  # noqa: E501
    try:
        from sklearn.utils.validation import check_is_fitted
    except ImportError:  # pragma: no cover - LightGBM without scikit-learn: its own flag
        fitted = bool(getattr(model, "__sklearn_is_fitted__", lambda: True)())
    else:
        try:
            check_is_fitted(model)
            fitted = True
        except ValueError:  # sklearn's NotFittedError is a ValueError and an AttributeError
            fitted = False
    if not fitted:
        raise ExportError(f"{type(model).__name__} is not fitted; fit it first "
                          "(model.fit(X, y)), then export it.")


def check_trees(table: TreeTable | QuantizedTrees) -> None:
    """Raise :class:`ExportError` for a tree table with no tree: it has nothing to export (its
    C did not compile, and ONNX failed with a raw error).

    >>> import numpy as np
    >>> e = np.zeros(0, np.int64)
    >>> check_trees(TreeTable(e, e.astype(float), e, e.astype(float), e.astype(bool), e, e,
    ...                       0.0, 3))
    Traceback (most recent call last):
    ...
    edgewise.errors.ExportError: Tree table has 0 trees; nothing to export. Keep at least one tree (prune_trees(max_trees >= 1)).
    """  # noqa: E501
    t = table.table if isinstance(table, QuantizedTrees) else table
    if t.n_trees < 1 or t.n_nodes < 1:
        raise ExportError("Tree table has 0 trees; nothing to export. Keep at least one tree "
                          "(prune_trees(max_trees >= 1)).")
    _check_numbers(t)


def _check_numbers(t: TreeTable) -> None:
    """:class:`ExportError` naming the first leaf, split or base of ``t`` that is NaN.

    A hand-made or edited table with a NaN leaf or threshold gave C that did not compile
    (``nanf``). (An infinite threshold is a split every input goes one way of:
    HistGradientBoosting's NaN-only splits; a leaf beyond float32's range is +-inf in the
    float32 C and ONNX, as a device adds it, but see :func:`check_leaves_float32`.)

    >>> import numpy as np
    >>> from sklearn.tree import DecisionTreeRegressor
    >>> from dataclasses import replace
    >>> X = np.linspace(0, 1, 20)[:, None]
    >>> t = tree_table(DecisionTreeRegressor(max_depth=1).fit(X, X[:, 0]))
    >>> check_trees(replace(t, value=np.array([0.5, 0.2, np.nan])))
    Traceback (most recent call last):
    ...
    edgewise.errors.ExportError: Tree table leaf node 2 holds nan; a leaf must be a number. Repair or retrain the model.
    """  # noqa: E501
    leaf = t.feature < 0
    nan_leaf = leaf & np.isnan(t.value)
    if nan_leaf.any():
        i = int(np.flatnonzero(nan_leaf)[0])
        raise ExportError(f"Tree table leaf node {i} holds nan; a leaf must be a number. "
                          "Repair or retrain the model.")
    nan_split = ~leaf & np.isnan(t.threshold)
    if nan_split.any():
        i = int(np.flatnonzero(nan_split)[0])
        raise ExportError(
            f"Tree table node {i} splits feature {int(t.feature[i])} at nan; a threshold must "
            "be a number (+-inf: every input goes one way). Repair or retrain the model.")
    if math.isnan(t.base):
        raise ExportError("Tree table base is nan; it must be a number. Repair or retrain the "
                          "model.")


def check_leaves_float32(t: TreeTable, what: str) -> None:
    """:class:`ExportError` naming the first leaf of ``t`` beyond float32's range (or
    infinite), for the exports that scale the leaves (``what``: int8, compact).

    They centre and scale every leaf by the leaves' spread, which such a leaf makes
    infinite: a tree whose leaves reach 9.9e38 predicted NaN where the model predicts 0
    (int8 and compact C; the float32 C and ONNX give 0, and +-inf beyond float32 as a
    device's float does), and an infinite leaf gave C that did not compile.

    >>> import numpy as np
    >>> from sklearn.tree import DecisionTreeRegressor
    >>> X = np.arange(4.0)[:, None]
    >>> t = tree_table(DecisionTreeRegressor(max_depth=2).fit(X, X[:, 0] * 3.3e38))
    >>> check_leaves_float32(t, "int8")
    Traceback (most recent call last):
    ...
    edgewise.errors.ExportError: Cannot export to int8: tree table leaf node 5 holds 6.6e+38, beyond float32's range (|v| <= 3.403e+38), and int8 scales every leaf by their spread. Export float32 (format='c' or 'onnx'), where it reads as +-inf as on a device, or rescale the target and retrain.
    """  # noqa: E501
    with np.errstate(invalid="ignore"):
        bad = (t.feature < 0) & ~(np.abs(t.value) <= FLT_MAX)  # NaN too
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ExportError(
            f"Cannot export to {what}: tree table leaf node {i} holds {float(t.value[i]):.6g}, "
            f"beyond float32's range (|v| <= {FLT_MAX:.4g}), and {what} scales every leaf by "
            "their spread. Export float32 (format='c' or 'onnx'), where it reads as +-inf as "
            "on a device, or rescale the target and retrain.")


def _check_limit(value: Any, what: str) -> int | None:
    """``value`` as an int >= 1, or None; else :class:`InvalidParameterError` naming it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidParameterError(
            f"The {what!r} parameter of prune_trees must be an integer >= 1, or None for no "
            f"limit. Got {value!r} instead.", field=what, value=value)
    return int(value)


def prune_trees(
    table: TreeTable, *, max_trees: int | None = None, max_depth: int | None = None
) -> TreeTable:
    """Keep the first ``max_trees`` trees and cut every tree at ``max_depth``.

    A node at ``max_depth`` becomes a leaf carrying its own value, which the readers make
    agree with the leaves under it (for boosting: their mean weighted by training rows, see
    ``_Builder._leaf_means``). Useful for boosted
    ensembles, whose later trees and deeper splits add least. Both are integers >= 1 or
    ``None`` (no limit); anything else raises :class:`InvalidParameterError` (``-1`` dropped
    the last tree, and a depth of ``-1`` cut every tree to its root).

    >>> import numpy as np
    >>> from sklearn.ensemble import GradientBoostingRegressor
    >>> X = np.random.default_rng(0).normal(size=(200, 3)); y = X[:, 0] + X[:, 1] ** 2
    >>> t = tree_table(GradientBoostingRegressor(n_estimators=20, max_depth=3).fit(X, y))
    >>> p = prune_trees(t, max_trees=10, max_depth=2)
    >>> p.n_trees, int(p.depth.max())
    (10, 2)
    >>> prune_trees(t, max_trees=0)
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The 'max_trees' parameter of prune_trees must be an integer >= 1, or None for no limit. Got 0 instead.
    """  # noqa: E501
    if not isinstance(table, TreeTable):
        raise ExportError(
            f"prune_trees takes a TreeTable (tree_table(model)). Got {type(table).__name__} "
            "instead" + (": prune before quantising, quantize_trees(prune_trees(table, ...), X)."
                         if isinstance(table, QuantizedTrees) else "."))
    max_trees = _check_limit(max_trees, "max_trees")
    max_depth = _check_limit(max_depth, "max_depth")
    b = _Builder()
    n_trees = table.n_trees if max_trees is None else min(max_trees, table.n_trees)
    # a forest's leaves hold value / n_trees: the trees kept are averaged over their number
    scale = table.n_trees / n_trees if table.averaged else 1.0
    for root in table.roots[:n_trees]:

        def children(i: int) -> tuple[Any, ...] | None:
            if table.feature[i] < 0 or (max_depth is not None and table.depth[i] >= max_depth):
                return (None, 0, False, 0, 0, table.value[i])
            return (table.feature[i], table.threshold[i], table.missing_left[i], i + 1,
                    table.right[i], table.value[i])

        b.add_tree(int(root), children, scale, None,
                   None if table.count is None else table.count.__getitem__)
    return b.build(table.base, table.n_features, table.zero_missing, table.threshold_rounding,
                   table.averaged)


def float32_thresholds(table: TreeTable) -> TreeTable:
    """The thresholds in float32, as a device compares its float32 inputs with them.

    By default (``table.threshold_rounding == "down"``) each is rounded *down*, so
    ``x32 <= t32`` decides as ``x32 <= t64`` does for every float32 input: exact for models
    that compare float32 inputs (scikit-learn's trees, forests, ``GradientBoostingRegressor``).
    That holds beyond float32's range too: a threshold above it becomes FLT_MAX, one below
    it -inf, and an infinite one stays infinite (clipping +inf to FLT_MAX sent x = +inf right).

    ``HistGradientBoostingRegressor`` compares the float64 input with a float64 threshold,
    and its thresholds are often training values (521.33 in C-MAPSS): rounded down, that
    value itself, which float32 rounds up, went right instead of left (262 of 3,000 FD001
    rows, up to 5.1 cycles). Its table says ``"nearest"``: a threshold that float32 cannot hold
    goes to the nearer float32 (a tie: the lower), so every ``x <= t`` stays ``x32 <= t32``
    (rounding keeps order) and only an ``x > t`` that float32 rounds onto ``t32`` (within half
    a float32 step of ``t``) goes the other way. A threshold that float32 holds to two more
    bits (a float32 value, or the midpoint of two: every split of a model trained on
    float32-precision features) is still rounded down, exact for every float32 input.

    LightGBM (``"lightgbm"``) also compares float64 inputs, and its threshold is one double
    above the midpoint of two training values (``GetDoubleUpperBound``), so that a reading
    equal to the midpoint goes left. Rounded down, a midpoint that is a reading itself (9074.15
    between 9074.14 and 9074.16 in C-MAPSS FD001; float32 rounds it up to 9074.1504) went right
    in the C, compact and ONNX exports (3 of 4,493 FD001 test rows, up to 1.42 cycles). So the
    midpoint (the double below the threshold) is rounded as ``"nearest"`` does: every
    ``x <= midpoint`` stays left, and only an ``x`` above it within half a float32 step, which
    a decimal reading between two training values at a coarser resolution is not, goes left
    too; a midpoint on a quarter of a float32 step (features of float32 precision) is rounded
    down, exact for every float32 input. The zero band's edges (see the LightGBM reader) are
    rounded down, exact for every float32 input.
    No float32 threshold decides as float64 for every input: ``float32(521.33)`` is both
    the value 521.33 (left of t = 521.33) and 521.33002 (right of it).

    >>> import numpy as np
    >>> from dataclasses import replace
    >>> e = np.zeros(1, np.int64)
    >>> t = TreeTable(e, np.array([521.33]), e, np.zeros(1), e.astype(bool), e, e, 0.0, 1)
    >>> x32 = float(np.float32(521.33))
    >>> [x32 <= float(float32_thresholds(t).threshold[0]),
    ...  x32 <= float(float32_thresholds(replace(t, threshold_rounding="nearest")).threshold[0])]
    [False, True]
    """
    mode = table.threshold_rounding
    if mode not in ("down", "nearest", "lightgbm"):
        raise ExportError(f"Tree table threshold_rounding must be 'down', 'nearest' or "
                          f"'lightgbm'. Got {mode!r} instead.")
    t64 = table.threshold
    if mode != "down":  # models that compare float64 inputs (HistGradientBoosting, LightGBM)
        _check_float32_range(table)
    if mode == "lightgbm":
        # LightGBM's split is one double above a midpoint (GetDoubleUpperBound): round the
        # midpoint. Not the zero band's edges (exact float32 decisions already; _read_lightgbm)
        band = np.abs(t64) <= 2 * ZERO
        t64 = np.where(band | ~np.isfinite(t64), t64, np.nextafter(t64, -np.inf))
    t32 = _round32(t64, nearest=mode != "down")
    if mode == "lightgbm":
        t32[band] = _round32(table.threshold[band], nearest=False)
    return replace(table, threshold=t32.astype(np.float64))


#: the largest finite float32 (FLT_MAX): a device's float input beyond it is +-inf
FLT_MAX = float(np.finfo(np.float32).max)
#: the smallest normal float32 (FLT_MIN): below it float32 holds fewer than 24 bits
FLT_MIN = float(np.finfo(np.float32).tiny)


def _check_float32_range(table: TreeTable) -> None:
    """:class:`ExportError` naming the first split of a model that compares float64 inputs
    whose finite threshold lies outside float32's normal range.

    Beyond it (above FLT_MAX) a device's float inputs are all +-inf, so no float32 input
    reaches either side as in Python (an input scaled by 1e39: RMSE 1.65 against the model's
    output std 1.73, with no word). Below it (a nonzero threshold under FLT_MIN, 1.18e-38,
    a subnormal) float32 holds the threshold and the inputs near it in steps of 1.4e-45, so
    fewer than 24 bits: a HistGradientBoostingRegressor (30 iterations) on an input scaled by
    1e-40 gave 7 of 20,000 rows off by up to 0.12 (output std 2.1), by 1e-42 2.5% of rows by
    up to 0.55, by 1e-44 82% (163 splits became 33 float32 values), with no word. Refused
    rather than warned of: such inputs are other units away from float32's normal range,
    and rescaling and retraining is the fix (inputs scaled by 1e-37 or 1e-38, only their
    splits near 0 subnormal, still agreed on all 20,000 rows: refused too, as float32 cannot
    promise it).
    Zero stays exact, and the zero band's edges (:data:`ZERO`, 1e-35) are normal.
    """
    t = table.threshold
    split = (table.feature >= 0) & np.isfinite(t)
    far = split & (np.abs(t) > FLT_MAX)
    if far.any():
        i = int(np.flatnonzero(far)[0])
        raise ExportError(
            f"Feature {int(table.feature[i])} is split at {float(t[i]):.6g}, beyond float32's "
            f"range (+-{FLT_MAX:.4g}): a device reads float inputs, which are +-inf there, so "
            "the export could not decide as the model does. Scale that input into float32's "
            "range (other units) and retrain.")
    tiny = split & (t != 0) & (np.abs(t) < FLT_MIN)
    if tiny.any():
        i = int(np.flatnonzero(tiny)[0])
        f = int(table.feature[i])
        n = int((tiny & (table.feature == f)).sum())
        raise ExportError(
            f"Feature {f} is split at {float(t[i]):.6g}, below float32's normal range "
            f"(|t| >= {FLT_MIN:.4g}; {n} of its splits are): a device reads float inputs, "
            "which float32 holds there in steps of 1.4e-45 (a subnormal, fewer than 24 bits), "
            "so the export could not decide as the model does. Scale that input into "
            "float32's normal range (other units) and retrain.")


def _round32(t64: np.ndarray, nearest: bool) -> np.ndarray:
    """``t64`` in float32, rounded down, or (``nearest``) to the nearer float32 unless ``t64``
    lies on a quarter of a float32 step (see :func:`float32_thresholds`)."""
    with np.errstate(over="ignore"):  # beyond float32: +-inf, then rounded down
        t32 = t64.astype(np.float32)
    up = t32.astype(np.float64) > t64
    t32[up] = np.nextafter(t32[up], np.float32(-np.inf))
    if nearest:
        lo = t32.astype(np.float64)
        hi32 = np.nextafter(t32, np.float32(np.inf))
        hi = hi32.astype(np.float64)
        ok = np.isfinite(lo) & np.isfinite(hi)  # FLT_MAX stays (x = inf goes right)
        with np.errstate(invalid="ignore"):
            frac = np.where(ok, (t64 - lo) / np.where(ok, hi - lo, 1.0), 0.0)  # exact
        nearer = ok & (frac > 0.5) & (frac * 4 != np.floor(frac * 4))
        t32[nearer] = hi32[nearer]
    return t32


@dataclass(frozen=True)
class QuantizedTrees:
    """A tree table for 8-bit inputs: each feature mapped to 0..255, leaves to int16.

    ``q(x) = clip(floor((x - lo) / step), 0, 255)``; a node sends left when
    ``q(x) <= qthreshold``; ``prediction = base + leaf_scale * sum(int16 leaves)``. A missing
    input (NaN, or zero on a ``zero_missing`` feature) is none of the 256 codes: it goes the
    node's missing way (``table.missing_left``), as in the float model.

    ``calibration_rmse`` is how far these predictions are from the float model's on the
    calibration rows only (root mean square): it says nothing of inputs those rows do not
    exercise. ``calibration_std`` is the spread of the float model's predictions there (NaN
    when not measured).
    """

    table: TreeTable  # structure; threshold holds the uint8 thresholds, value the int16 leaves
    lo: np.ndarray
    step: np.ndarray
    leaf_scale: float
    zero_missing: np.ndarray | None = None
    calibration_rmse: float = math.nan
    calibration_std: float = math.nan

    def missing(self, X: np.ndarray) -> np.ndarray:
        """Where the (float32) inputs are missing, as the C tells it."""
        with np.errstate(over="ignore"):
            x = np.asarray(X, np.float32)
        return _missing(x, self.zero_missing)  # ZERO is exact in float32

    def quantize_inputs(self, X: np.ndarray) -> np.ndarray:
        """Map raw features to their uint8 codes (a NaN to 0 here: see :meth:`missing`)."""
        with np.errstate(invalid="ignore", over="ignore"):
            x = np.asarray(X, np.float32)  # float32 arithmetic, as the C code does it
            q = np.floor((x - self.lo.astype(np.float32)) / self.step.astype(np.float32))
        return np.clip(np.nan_to_num(q, nan=0.0), 0, 255).astype(np.uint8)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict exactly as the int8 C code does."""
        q = self.quantize_inputs(X).astype(np.float64)
        q[self.missing(X)] = np.nan
        acc = self.table.predict(q) - self.table.base
        return self.table.base + self.leaf_scale * acc


def _center_leaves(table: TreeTable) -> TreeTable:
    """``table`` with each tree's leaves centred on 0: the midpoint of its lowest and highest
    leaf (subtracted from every node of the tree) moves into ``base``. Predictions are the
    same; int16 leaves then spend their 65,535 steps on the leaves' spread, not on an offset
    (a forest of y = 101325 + x0 has leaves near 101325 / n_trees: int16 steps of 0.62, a
    prediction off by up to 1.26 where the output's std is 0.97).

    >>> import numpy as np
    >>> from sklearn.tree import DecisionTreeRegressor
    >>> X = np.linspace(0, 1, 50)[:, None]; y = 1000.0 + (X[:, 0] > 0.5)
    >>> t = _center_leaves(tree_table(DecisionTreeRegressor(max_depth=1).fit(X, y)))
    >>> t.base, sorted(float(v) for v in t.value[t.feature < 0])
    (1000.5, [-0.5, 0.5])
    """
    if table.n_nodes == 0:
        return table
    tree = np.searchsorted(table.roots, np.arange(table.n_nodes), side="right") - 1
    leaf = table.feature < 0
    lo = np.full(table.n_trees, np.inf)
    hi = np.full(table.n_trees, -np.inf)
    np.minimum.at(lo, tree[leaf], table.value[leaf])
    np.maximum.at(hi, tree[leaf], table.value[leaf])
    mid = np.where(np.isfinite(lo) & np.isfinite(hi), (lo + hi) / 2, 0.0)
    return replace(table, value=table.value - mid[tree],
                   base=math.fsum([table.base, *mid.tolist()]))


def center_leaves_float32(table: TreeTable) -> TreeTable:
    """``table`` for a float32 sum: each tree's leaves centred on 0 (:func:`_center_leaves`)
    and ``base`` a float32 value, the rest of it (under half a float32 step) moved into the
    first tree's values. Predictions are the same. Where the offset is beyond float32's
    range the table comes back as it is.

    A float32 device then sums small leaves and adds the base once, last: summed onto the
    base (``acc = base; acc += leaf``), each of n trees rounded at the base's float32 step,
    so 500 boosted trees on y = 101325 + signal were off by up to 0.21 (a forest of 200,
    whose leaves are each near 101325 / 200, by 0.26) where the output's std is 0.5; now
    about half a float32 step at 101325 (0.004), the output's own rounding.

    >>> import numpy as np
    >>> from sklearn.tree import DecisionTreeRegressor
    >>> X = np.linspace(0, 1, 50)[:, None]; y = 101325.1 + (X[:, 0] > 0.5)
    >>> t = center_leaves_float32(tree_table(DecisionTreeRegressor(max_depth=1).fit(X, y)))
    >>> t.base == float(np.float32(t.base)), np.allclose(t.predict(X), y)
    (True, True)
    """
    t = _center_leaves(table)
    with np.errstate(over="ignore"):
        base32 = float(np.float32(t.base))
    if t.n_nodes == 0 or not math.isfinite(base32):  # an offset beyond float32: as it was
        return table  # (a base of inf with leaves of -inf gave NaN for every input)
    value = t.value.copy()
    end = int(t.roots[1]) if t.n_trees > 1 else t.n_nodes
    value[int(t.roots[0]):end] += t.base - base32
    return replace(t, value=value, base=base32)


def quantize_trees(table: TreeTable, X_calib: np.ndarray) -> QuantizedTrees:
    """Quantise a tree table to uint8 feature codes (range calibrated on ``X_calib``) and int16 leaves.

    >>> import numpy as np
    >>> from sklearn.tree import DecisionTreeRegressor
    >>> X = np.linspace(0, 1, 100)[:, None]; y = (X[:, 0] > 0.5) * 10.0
    >>> q = quantize_trees(tree_table(DecisionTreeRegressor(max_depth=1).fit(X, y)), X)
    >>> float(np.abs(q.predict(X) - y).max()) < 0.01
    True
    >>> quantize_trees(q.table, np.array([[np.inf]]))
    Traceback (most recent call last):
    ...
    edgewise.errors.ExportError: Calibration row 0, column 0 is inf; int8 ranges need finite values (NaN, a missing value, is allowed).

    ``X_calib`` must be real input rows, shape ``(n >= 1, table.n_features)``: finite, or NaN
    for a missing value, with a value in every column; else :class:`ExportError` naming the
    row and column. The range of each feature is its min..max over the rows, so a few rows
    far out make every other value share one code: when the quantised model then strays from
    the float one by more than a quarter of its output's spread on those rows, a warning names
    the column whose range few rows set (``calibration_rmse`` has the figure). A column that
    holds one value in every row, but that the trees split on (one row, or a sensor that sat
    still), takes its range from the trees' thresholds on it, with a warning naming it: its
    splits then keep, though the calibration rows cannot test them.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True):  # one row: the range is the split's
    ...     warnings.simplefilter("always")
    ...     q1 = quantize_trees(tree_table(DecisionTreeRegressor(max_depth=1).fit(X, y)),
    ...                         np.array([[0.3]]))
    >>> [round(float(v), 3) for v in q1.predict(np.array([[0.2], [0.8]]))]
    [0.0, 10.0]
    """  # noqa: E501
    check_trees(table)
    check_leaves_float32(table, "int8")  # a leaf of 9.9e38 made int8 predict NaN for 0
    X = _check_calibration(X_calib, table.n_features)
    lo = np.nanmin(X, axis=0)
    hi = np.nanmax(X, axis=0)
    step = np.where(hi > lo, (hi - lo) / 255.0, 1.0)
    still = _split_range(table, lo, hi, step)
    if still:
        warnings.warn(_still_note(X, still, lo, step), UserWarning, stacklevel=2)
    top = hi.copy()  # a still column's range is its splits' (set by _split_range)
    top[still] = lo[still] + 255.0 * step[still]
    narrow = _outside_note(table, X, lo, top)
    if narrow:
        warnings.warn(narrow, UserWarning, stacklevel=2)
    inner = table.feature >= 0
    thr = np.zeros_like(table.threshold)
    f = table.feature[inner]
    # q(x) <= floor((t - lo) / step) is x <= t up to the bin t falls in. A threshold below
    # lo is -1, which no code 0..255 is <= (always right: every calibrated x > t); clamping
    # it to 0 sent the lowest bin left, the wrong way (C and Python 94.6 vs the model's 124.1)
    thr[inner] = _threshold_codes(table.threshold[inner], lo[f], step[f])
    leaves = ~inner
    centred = _center_leaves(table)  # int16 steps for the leaves' spread, not their offset
    vmax = float(np.abs(centred.value[leaves]).max()) if leaves.any() else 1.0
    leaf_scale = (vmax / 32767.0) if vmax > 0 else 1.0
    val = np.where(leaves, np.round(centred.value / leaf_scale), 0.0)
    # missing inputs keep each split's missing way (zeroing it sent NaN to the lowest bin's
    # side); the codes have no zero band, the inputs' one is the QuantizedTrees' own
    qt = replace(table, threshold=thr, value=val, zero_missing=None, base=centred.base)
    q = QuantizedTrees(qt, lo, step, leaf_scale, table.zero_missing)
    ref = table.predict(X)
    ok = np.isfinite(ref)
    rmse = float(np.sqrt(np.mean((q.predict(X)[ok] - ref[ok]) ** 2))) if ok.any() else math.nan
    std = float(np.std(ref[ok])) if ok.any() else math.nan
    if std > 0 and rmse > 0.25 * std:
        warnings.warn(_deviation_note(X, rmse, std), UserWarning, stacklevel=2)
    return replace(q, calibration_rmse=rmse, calibration_std=std)


def _threshold_codes(t: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
    """The code threshold of each split ``x <= t``: the code of the largest float32 input
    at or below ``t``, computed as the device codes its float32 inputs
    (``floor((x - lo) / step)`` in float32, ``lo`` and ``step`` as float32), clipped to
    -1..255. As that coding never decreases with ``x``, every float32 ``x <= t`` gets a code
    ``<= `` it and goes left, as in the float model.

    In float64, ``floor((t - lo) / step)`` could fall one code below the float32 code of an
    ``x <= t``, sending it right: inputs 11.5..80.08 at 0.01 resolution, t = 57.2199993, the
    float32 x = 57.2199974 codes to 170 while the float64 threshold code was 169.

    >>> lo, step, t = np.array([11.5]), np.array([(80.08 - 11.5) / 255]), np.array([57.2199993])
    >>> float(np.floor((t - lo) / step)[0]), float(_threshold_codes(t, lo, step)[0])
    (169.0, 170.0)
    """
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.asarray(t, np.float64).astype(np.float32)
        x = np.where(x.astype(np.float64) > t, np.nextafter(x, np.float32(-np.inf)), x)
        c = np.floor((x - np.asarray(lo).astype(np.float32)) / np.asarray(step).astype(np.float32))
    return np.clip(c.astype(np.float64), -1, 255)


def _split_range(table: TreeTable, lo: np.ndarray, hi: np.ndarray, step: np.ndarray) -> list[int]:
    """Give each column that holds one value in the calibration rows (``hi == lo``) but that
    the trees split on the range of those splits instead (``lo`` and ``step`` set in place);
    return those columns.

    With step 1.0 around its one value, a small-scale input put every split in one code and
    lost them all (1 calibration row: RMSE 1.54 against the float model on 2,000 real rows,
    its output std 1.45, while the calibration rows said 2.5e-05). The thresholds span codes
    0..254 with about a code's margin on each side: an input below the lowest (code 0) goes
    left at every split, one above the highest (code 255) right, as in the float model."""
    still = []
    for c in np.flatnonzero(hi <= lo):
        t = table.threshold[(table.feature == c) & np.isfinite(table.threshold)]
        if not len(t):
            continue  # no split on it (or only NaN-only ones): its codes decide nothing
        a, b = float(t.min()), float(t.max())
        if b > a:
            gap = (b - a) / 254.0
        else:  # one threshold: a narrow band around it, to the scale of it (or of the value)
            gap = (abs(a) or abs(float(lo[c])) or 1.0) * 2.0**-8
        lo[c] = a - gap
        step[c] = (b - a + 2 * gap) / 255.0
        still.append(int(c))
    return still


#: the words of :func:`_outside_note`'s warning that tell it from the others
OUTSIDE_NOTE = "of the training rows lie outside the range"

#: the share of the training rows that may lie outside the calibration rows' range of an
#: input before :func:`quantize_trees` warns. By a RULModel's LightGBM counts, a random 40
#: of FD001's 20,631 training rows leave at least 4% of them outside (200 rows: 1.2%), each
#: unit's last row only (the units at failure) 93%; a GradientBoostingRegressor's, random
#: forest's or HistGradientBoosting's calibrated on 40 rows 4-5%, on the 10% of rows nearest
#: failure 71%.
OUTSIDE_SHARE = 0.10


def outside_share(table: TreeTable, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per input, at least what share of the training rows lies outside ``lo..hi`` (NaN
    where the table does not say how many rows reached each node, ``TreeTable.count``).

    A split ``x <= t`` with ``t < lo`` sends the rows below ``lo`` left: its left child's
    rows, of its tree's, lie below the range (with ``t >= hi`` its right child's, above it).
    The largest such share over the splits on an input is a lower bound on that input's.

    >>> from sklearn.tree import DecisionTreeRegressor
    >>> X = np.arange(100.0)[:, None]
    >>> t = tree_table(DecisionTreeRegressor(max_depth=3).fit(X, X[:, 0]))
    >>> outside_share(t, np.array([50.0]), np.array([99.0])).round(2).tolist()
    [0.5]
    """
    out = np.full(table.n_features, np.nan if table.count is None else 0.0)
    if table.count is None or table.n_nodes == 0:
        return out
    inner = np.flatnonzero((table.feature >= 0) & np.isfinite(table.threshold))
    f = table.feature[inner]
    t = table.threshold[inner]
    root = table.roots[np.searchsorted(table.roots, inner, side="right") - 1]
    total = table.count[root]
    rows = np.where(t < lo[f], table.count[inner + 1],
                    np.where(t >= hi[f], table.count[table.right[inner]], 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, rows / total, 0.0)
    np.fmax.at(out, f, np.nan_to_num(share, nan=0.0))
    return out


def _outside_note(table: TreeTable, X: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> str | None:
    """One line when at least :data:`OUTSIDE_SHARE` of the training rows lie outside the
    calibration rows' range of an input (``lo..hi``, :func:`outside_share`), else None.

    The int8 model takes such a row's input as the range's end, so decides every split
    beyond the range as for the end, where the float model tells the rows apart; the rows
    ``calibration_rmse`` is measured on cannot show it. Calibrated on each RULModel unit's
    last row (its failure: ages 128..362 of FD001's 1..362), the int8 C's test RMSE was 65
    against the model's 11.6, while the calibration rows said all was well."""
    share = outside_share(table, lo, hi)
    if not np.nanmax(share, initial=0.0) >= OUTSIDE_SHARE:
        return None
    worst = [int(c) for c in np.argsort(-np.nan_to_num(share), kind="stable")[:3]
             if share[c] >= OUTSIDE_SHARE]
    cols = "; ".join(f"column {c}: {100 * share[c]:.0f}% outside its calibrated "
                     f"[{lo[c]:.6g}, {hi[c]:.6g}]" for c in worst)
    more = int((share >= OUTSIDE_SHARE).sum()) - len(worst)
    return (f"int8 calibration: by the trees' own counts, at least {100 * share[worst[0]]:.0f}% "
            f"{OUTSIDE_NOTE} the {len(X)} calibration rows give an input ({cols}"
            f"{f'; and {more} more inputs' if more > 0 else ''}); the int8 model takes such an "
            "input as its range's end, deciding the splits beyond it as for the end, and "
            "calibration_rmse, on these rows only, does not show it. Calibrate on rows that "
            "span what the model will see, such as its training rows.")


def _still_note(X: np.ndarray, still: list[int], lo: np.ndarray, step: np.ndarray) -> str:
    """One line on calibration columns that hold one value while the trees split on them."""
    cols = ", ".join(f"{c} (every row {np.nanmax(X[:, c]):.6g}; range taken "
                     f"[{lo[c]:.6g}, {lo[c] + 255 * step[c]:.6g}])" for c in still[:5])
    more = f" and {len(still) - 5} more" if len(still) > 5 else ""
    one = len(still) == 1
    return (f"int8 calibration: column{'' if one else 's'} {cols}{more} "
            f"{'holds' if one else 'hold'} one value in all {len(X)} calibration rows, yet the "
            f"trees split on {'it' if one else 'them'}: the code range comes from the trees' "
            "split thresholds instead, and calibration_rmse (on the calibration rows only) "
            f"does not test {'it' if one else 'them'}. Calibrate on rows where every input "
            "varies as in real use.")


def _check_calibration(X_calib: Any, n_features: int) -> np.ndarray:
    """``X_calib`` as a float array of shape (n >= 1, n_features), finite or NaN, a value in
    every column; else :class:`ExportError` naming what is wrong."""
    try:
        X = np.asarray(X_calib, np.float64)
    except (TypeError, ValueError):
        raise ExportError(f"Calibration rows must be numbers, shape (rows, {n_features}). "
                          f"Got {type(X_calib).__name__} instead.") from None
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] != n_features:
        raise ExportError(f"Calibration rows must have shape (rows >= 1, {n_features}): one "
                          f"row of {n_features} inputs each. Got shape {X.shape} instead.")
    inf = np.isinf(X)
    if inf.any():
        r, c = (int(i) for i in np.argwhere(inf)[0])
        raise ExportError(f"Calibration row {r}, column {c} is {X[r, c]}; int8 ranges need "
                          "finite values (NaN, a missing value, is allowed).")
    far = np.abs(np.nan_to_num(X)) > FLT_MAX
    if far.any():
        r, c = (int(i) for i in np.argwhere(far)[0])
        raise ExportError(f"Calibration row {r}, column {c} is {X[r, c]:.6g}, beyond float32's "
                          f"range (+-{FLT_MAX:.4g}); int8 ranges need values a device's float "
                          "inputs can hold (the C did not compile).")
    empty = np.isnan(X).all(axis=0)
    if empty.any():
        c = int(np.flatnonzero(empty)[0])
        raise ExportError(f"Calibration column {c} has no value (all {X.shape[0]} rows are "
                          "NaN); give rows where that input has real values.")
    return X


def _deviation_note(X: np.ndarray, rmse: float, std: float) -> str:
    """One line on a quantised model that strays from the float one on the calibration rows,
    naming the column whose range is most set by a few rows far out."""
    note = (f"int8 quantisation strays from the float model by RMSE {rmse:.4g} on the "
            f"{len(X)} calibration rows (the float model's output std is {std:.4g})")
    worst, ratio = -1, 1.0
    for c in range(X.shape[1]):
        v = X[:, c][~np.isnan(X[:, c])]
        a, b = np.percentile(v, [1.0, 99.0])
        full = float(v.max() - v.min())
        r = full / float(b - a) if b > a else (math.inf if full > 0 else 1.0)
        if r > ratio:
            worst, ratio = c, r
    if worst < 0 or ratio < 10:
        return (note + ": its splits are finer than the 256 codes per input resolve over the "
                "calibration range; export float32, or dtype='compact' (exact splits).")
    col = X[:, worst]
    mid = float(np.nanmedian(col))
    row = int(np.nanargmax(np.abs(col - mid)))
    a, b = np.nanpercentile(col, [1.0, 99.0])
    return (note + f": column {worst}'s range is set by a few rows (row {row} holds "
            f"{col[row]:.6g}, while 98% of the column lies in [{a:.6g}, {b:.6g}]); drop or "
            "clip such rows in the calibration data.")
