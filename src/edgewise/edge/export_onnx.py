"""ONNX graphs that onnxruntime runs: the detector's scoring step, tree ensembles, torch nets.

Tree ensembles go through the same :class:`~edgewise.edge.compress.TreeTable` as the C
exporter and become one ``ai.onnx.ml.TreeEnsembleRegressor`` node (behind a few elementwise
nodes that make LightGBM's zero-as-missing band NaN, where the table has it), so any tree
library the table reads (scikit-learn, HistGradientBoosting, LightGBM) exports without a
converter per library. Torch modules use ``torch.onnx.export``; int8 is onnxruntime's static
post-training quantisation (8-bit weights and activations, U8U8 QDQ), calibrated on data the
caller gives: outputs are clipped to the range the calibration rows reach, a row with a NaN
or infinite input gives NaN, and a bias that int32 cannot hold at its scale is refused
(:func:`quantize_int8`).

>>> import numpy as np
>>> from edgewise.detect.zscore import EWZScore
>>> g = export_ewzscore(EWZScore(warmup=1))
>>> s, *_ = g.run({"value": np.array([5.0], np.float32), "mean": np.array([0.0]),
...                "var": np.array([1.0]), "n": np.array([10.0])})
>>> round(float(s[0]), 4)   # z = 5, z0 = 3: 1 - exp(-2)
0.8647
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.edge.compress import (
    ZERO,
    TreeTable,
    center_leaves_float32,
    check_trees,
    float32_thresholds,
)
from edgewise.edge.export_c import _F32_LIMIT, GENERATED_KEY, write_files
from edgewise.errors import ExportError

__all__ = ["CALIBRATION_KEYS", "EWZ_STATE_KEYS", "OnnxExport", "check_onnx_name",
           "export_ewzscore", "export_torch", "export_trees", "quantize_int8",
           "quiet_root_warnings"]


def check_onnx_name(name: str) -> str:
    """Return ``name`` if it is a usable graph and file name, else raise :class:`ExportError`.

    ``<name>.onnx`` is written into the output folder and the name is put into the generated
    host test, so it is a plain file name: letters, digits, ``_``, ``-`` and ``.``, not
    starting with ``.`` or ``-``, no ``..``, at most 64 characters.

    >>> check_onnx_name("rul-v2.1")
    'rul-v2.1'
    >>> check_onnx_name("../../escaped")
    Traceback (most recent call last):
    ...
    edgewise.errors.ExportError: Graph name '../../escaped' must be a plain file name: letters, digits, '_', '-' or '.', not starting with '.' or '-', no '..', at most 64 characters (e.g. 'model').
    """  # noqa: E501
    if (not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", name)
            or ".." in name):
        raise ExportError(f"Graph name {name!r} must be a plain file name: letters, digits, "
                          "'_', '-' or '.', not starting with '.' or '-', no '..', at most 64 "
                          "characters (e.g. 'model').")
    return name


def _onnx() -> Any:
    try:
        import onnx
        import onnxruntime  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the install
        msg = "ONNX export needs the 'onnx' extra: pip install 'edgewise[onnx]'"
        raise ExportError(msg) from None
    return onnx


#: onnxruntime's names of the input types :meth:`OnnxExport.predict` can feed.
_ORT_FLOAT_TYPES = {"tensor(float)": np.dtype(np.float32), "tensor(double)": np.dtype(np.float64)}


@dataclass
class OnnxExport:
    """A serialised ONNX model and an onnxruntime session to run it from Python.

    ``feature_names`` names the columns of the first input, in order, where the model names
    them (a RULModel's window features: :mod:`edgewise.edge.export_rul`); ``sidecar`` holds
    text files (file name to text) that :meth:`save` writes beside the graph;
    ``initial_state`` is a streaming detector's learned state (EWZScore: ``n``, ``mean``,
    ``var``), which the graph also carries in its metadata, or ``None``.

    An int8 graph (:func:`quantize_int8`) has, as an int8 C export does,
    ``calibration_rmse``: how far its outputs are from the float graph's on the calibration
    rows it was calibrated on (root mean square; those rows only: it says nothing of inputs
    they do not exercise), ``calibration_std``: the spread of the float graph's outputs
    there, and ``calibration_rows``: how many rows (those without a NaN). ``None`` else.
    ``calibration_min`` and ``calibration_max`` are the least and largest value of each
    input over those rows (shaped as one input row; also in the graph's metadata,
    :data:`CALIBRATION_KEYS`): int8 clips every activation to the range the calibration
    rows reach, so an input beyond them can give the output of the range's end, and
    :meth:`predict` warns of rows that hold one.
    """

    name: str
    kind: str
    model_bytes: bytes
    input_names: list[str]
    dtype: str = "float32"
    feature_names: list[str] | None = None
    sidecar: dict[str, str] = field(default_factory=dict)
    initial_state: dict[str, float] | None = None
    calibration_rmse: float | None = None
    calibration_std: float | None = None
    calibration_rows: int | None = None
    calibration_min: np.ndarray | None = None
    calibration_max: np.ndarray | None = None
    _sess: Any = field(default=None, repr=False)

    @property
    def size_bytes(self) -> int:
        """Size of the serialised graph."""
        return len(self.model_bytes)

    def save(self, out_dir: str | Path, extra: dict[str, str] | None = None) -> list[Path]:
        """Write ``<name>.onnx``, :attr:`sidecar` (and ``extra`` files, name to text: the
        CLI's README and host check) into ``out_dir`` as one set
        (:func:`~edgewise.edge.export_c.write_files`); return the paths.
        :class:`ExportError`, with nothing written, for a name that is not a plain file name
        (:func:`check_onnx_name`) or would land outside ``out_dir``, or where ``out_dir``
        holds one of these files that an export did not write."""
        check_onnx_name(self.name)
        d = Path(out_dir)
        p = d / f"{self.name}.onnx"
        if p.resolve().parent != d.resolve():
            raise ExportError(f"Graph file {str(p)!r} would be written outside --out "
                              f"{str(d)!r}; give a plain graph name.")
        files: dict[str, str | bytes] = {p.name: self.model_bytes, **self.sidecar,
                                         **(extra or {})}
        for f in files:
            q = d / f
            if q.resolve().parent != d.resolve():
                raise ExportError(f"File {str(q)!r} would be written outside --out {str(d)!r}; "
                                  "give a plain graph name.")
        return write_files(d, files)

    def session(self) -> Any:
        """The (cached) onnxruntime inference session, one thread."""
        if self._sess is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            self._sess = ort.InferenceSession(self.model_bytes, opts,
                                              providers=["CPUExecutionProvider"])
        return self._sess

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run the graph on ``feeds``, each float array cast to the float type its input
        declares (float32 or float64); return all outputs."""
        types = {i.name: _ORT_FLOAT_TYPES.get(i.type) for i in self.session().get_inputs()}
        cast = {}
        for k, v in feeds.items():
            want = types.get(k)
            arr = np.asarray(v)
            if want is not None and arr.dtype.kind == "f" and arr.dtype != want:
                with np.errstate(over="ignore"):  # beyond float32's range: inf, as a device
                    arr = arr.astype(want)
            cast[k] = arr
        return list(self.session().run(None, cast))

    def score_many(self, values: np.ndarray) -> np.ndarray:
        """Run a streaming detector's graph over ``values`` in order, one stream, from its
        :attr:`initial_state` (the learned state); return the scores (float64).

        >>> from edgewise.detect.zscore import EWZScore
        >>> det = EWZScore(warmup=3)
        >>> det.score_many(np.array([20.0, 20.5, 19.5, 20.2])).tolist()[-1]
        0.0
        >>> g = export_ewzscore(det)
        >>> round(float(g.score_many(np.array([26.0]))[0]), 4) == round(det.score_one({"v": 26.0}), 4)
        True
        """  # noqa: E501
        if self.kind != "detector" or self.initial_state is None:
            raise ExportError(f"{self.name} is a {self.kind} graph with no streaming state; "
                              "use run() or predict().")
        st = {k: np.array([self.initial_state[k]], np.float64) for k in ("mean", "var", "n")}
        out = np.empty(len(values))
        for i, v in enumerate(np.asarray(values, dtype=np.float64)):
            s, m, va, n = self.run({"value": np.array([v]), **st})
            st = {"mean": m, "var": va, "n": n}
            out[i] = float(s[0])
        return out

    def input_dtype(self) -> np.dtype:
        """The numpy dtype of the graph's first input, as the graph declares it.

        ``float32`` for the regressors and the int8 graphs (they quantise inside), ``float64``
        for a graph with double inputs such as the Mahalanobis T^2.

        >>> from edgewise.detect.zscore import EWZScore
        >>> export_ewzscore(EWZScore()).input_dtype()
        dtype('float32')
        """
        ort_type = self.session().get_inputs()[0].type
        if ort_type not in _ORT_FLOAT_TYPES:
            raise ExportError(f"Graph {self.name!r} takes {ort_type} input; predict() feeds "
                              f"only {', '.join(_ORT_FLOAT_TYPES)}. Call run() with feeds "
                              "of that type instead.")
        return _ORT_FLOAT_TYPES[ort_type]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Run a one-input graph on the rows of ``X``, cast to the dtype the graph takes
        (float32 or float64: a float64 graph is not rounded to float32 on the way in);
        return one float64 value per row.

        >>> import torch
        >>> net = torch.nn.Linear(2, 1)
        >>> _ = torch.nn.init.zeros_(net.weight), torch.nn.init.constant_(net.bias, 2.5)
        >>> export_torch(net, 2).predict(np.zeros((3, 2))).tolist()
        [2.5, 2.5, 2.5]
        """
        with np.errstate(over="ignore"):  # beyond float32's range: inf, as a device reads it
            x = np.ascontiguousarray(X, dtype=self.input_dtype())
        shape = self.session().get_inputs()[0].shape  # ints fixed, names or None free
        if x.ndim != len(shape) or any(isinstance(d, int) and d != n
                                       for d, n in zip(shape, x.shape, strict=False)):
            want = ", ".join(str(d) if isinstance(d, int) else "rows" for d in shape)
            raise ExportError(f"Graph {self.name!r} takes input of shape ({want}). Got shape "
                              f"{x.shape} instead.")
        if self.calibration_min is not None and self.calibration_max is not None:
            note = _outside_calibration_note(x, self.calibration_min, self.calibration_max,
                                             self.feature_names)
            if note:
                warnings.warn(f"int8 graph {self.name!r}: {note}", UserWarning, stacklevel=2)
        out = self.run({self.input_names[0]: x})[0]
        return np.asarray(out, dtype=np.float64).reshape(len(X))


#: ``metadata_props`` keys of an int8 graph holding the least and largest value of each
#: input over its calibration rows (JSON lists, one entry per input of a row, flattened)
CALIBRATION_KEYS = {"min": "edgewise.calibration_min", "max": "edgewise.calibration_max"}


def _outside_calibration_note(x: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                              names: list[str] | None = None) -> str | None:
    """One line on the rows of ``x`` holding a finite input below ``lo`` or above ``hi``
    (the calibration rows' least and largest value of each input): how many, and the input
    furthest out, with its value and range. ``None`` where there is none. A row with a NaN
    or an infinite input is left out: the int8 graph gives NaN for it.

    >>> print(_outside_calibration_note(np.array([[0.5, 3.0], [0.2, 0.1], [np.nan, 9.0]]),
    ...                                 np.array([0.0, 0.0]), np.array([1.0, 1.0])))
    1 of the 3 rows holds an input beyond the range of the calibration rows (input 1: 3 outside [0, 1]); int8 clips each activation to the range the calibration rows reach, so such a row's output can be that of the range's end (calibration_rmse does not show it). Calibrate on rows that span the inputs the device will see, or export float32.
    """  # noqa: E501
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    lo_f = np.asarray(lo, np.float64).ravel()
    hi_f = np.asarray(hi, np.float64).ravel()
    if flat.shape[1] != lo_f.size or not len(flat):
        return None
    finite = np.isfinite(flat).all(axis=1)
    span = np.maximum(hi_f - lo_f, np.finfo(np.float64).tiny)
    with np.errstate(invalid="ignore", over="ignore"):
        beyond = np.where(flat < lo_f, lo_f - flat, np.where(flat > hi_f, flat - hi_f, 0.0))
    beyond[~finite] = 0.0
    rows = beyond.any(axis=1)
    if not rows.any():
        return None
    r, c = np.unravel_index(int(np.argmax(beyond / span)), beyond.shape)
    label = repr(names[c]) if names is not None and len(names) == lo_f.size else str(c)
    n = int(rows.sum())
    return (f"{n} of the {len(flat)} rows {'holds' if n == 1 else 'hold'} an input beyond "
            f"the range of the calibration rows (input {label}: {flat[r, c]:.6g} outside "
            f"[{lo_f[c]:.6g}, {hi_f[c]:.6g}]); int8 clips each activation to the range the "
            "calibration rows reach, so such a row's output can be that of the range's end "
            "(calibration_rmse does not show it). Calibrate on rows that span the inputs the "
            "device will see, or export float32.")


#: ``metadata_props`` keys of an EWZScore graph holding the detector's learned state, the
#: state a device starts from (:attr:`OnnxExport.initial_state`; host_test.py reads them)
EWZ_STATE_KEYS = {"n": "edgewise.initial_n", "mean": "edgewise.initial_mean",
                  "var": "edgewise.initial_var"}


def export_ewzscore(det: Any, name: str = "ewz") -> OnnxExport:
    """The scoring-and-learning step of an EWZScore as a graph over state arrays.

    Inputs ``value`` (float32: a reading, as a device reads it) and the state ``mean``,
    ``var``, ``n`` (float64), one entry per stream; outputs ``score`` (float32) and the next
    ``mean``, ``var``, ``n`` (float64): many streams advance in one call. The state is double,
    as in Python and the C export: a float32 mean loses every update below half its last
    place, so on a stream with a large offset (101325 Pa +- 0.1) it stuck and scores differed.

    The detector's learned state (``n_``, ``mean_``, ``var_``) is the start: it is kept in
    the graph's metadata (:data:`EWZ_STATE_KEYS`), read back as
    :attr:`OnnxExport.initial_state`, and :meth:`OnnxExport.score_many` and the CLI's
    host_test.py start from it.

    As in Python and the C export, a NaN or infinite ``value`` (a reading beyond float32's
    range arrives as inf) is missing: it scores 0 and the state passes through unchanged; a
    reading whose update would take the mean or variance beyond float32's range scores (1 if
    far out) but is not learned, so one huge reading cannot leave the state inf or NaN.

    >>> import numpy as np
    >>> from edgewise.detect.zscore import EWZScore
    >>> g = export_ewzscore(EWZScore(warmup=1))
    >>> s, m, v, n = g.run({"value": np.array([np.inf, 3e38], np.float32),
    ...                     "mean": np.array([1.5, 1.5]), "var": np.array([0.25, 0.25]),
    ...                     "n": np.array([40.0, 40.0])})
    >>> s.tolist(), m.tolist(), v.tolist(), n.tolist()
    ([0.0, 1.0], [1.5, 1.5], [0.25, 0.25], [40.0, 40.0])
    """
    onnx = _onnx()
    from onnx import TensorProto, helper

    def const(nm: str, v: float) -> Any:
        return helper.make_node("Constant", [], [nm], value=helper.make_tensor(
            nm, TensorProto.DOUBLE, [], [float(v)]))

    def non_finite(x: str) -> list[Any]:
        """Nodes giving ``<x>_bad``: true where ``x`` is NaN, inf or -inf."""
        return [N("IsNaN", [x], [f"{x}_nan"]), N("IsInf", [x], [f"{x}_inf"]),
                N("Or", [f"{x}_nan", f"{x}_inf"], [f"{x}_bad"])]

    N = helper.make_node
    nodes = [
        const("alpha", det.alpha), const("z0", det.z0), const("warm", det.warmup),
        const("one", 1.0), const("zero", 0.0), const("eps", 1e-9),
        const("sd_min", 1e-300),  # Python's _SD_MIN
        const("limit", _F32_LIMIT),
        # the reading as a double; a NaN or +-inf one is missing (scores 0), as in Python
        N("Cast", ["value"], ["v"], to=TensorProto.DOUBLE), *non_finite("v"),
        N("Sqrt", ["var"], ["sd0"]), N("Abs", ["mean"], ["am"]), N("Mul", ["eps", "am"], ["rel"]),
        N("Add", ["sd0", "rel"], ["sd1"]), N("Add", ["sd1", "sd_min"], ["sd"]),
        N("Sub", ["v", "mean"], ["d"]), N("Abs", ["d"], ["ad"]), N("Div", ["ad", "sd"], ["z"]),
        N("Sub", ["z", "z0"], ["zz"]), N("Neg", ["zz"], ["nzz"]), N("Exp", ["nzz"], ["e"]),
        N("Sub", ["one", "e"], ["s0"]), N("Greater", ["z", "z0"], ["above"]),
        N("Where", ["above", "s0", "zero"], ["s1"]), N("Less", ["n", "warm"], ["cold"]),
        N("Or", ["cold", "v_bad"], ["mute"]), N("Where", ["mute", "zero", "s1"], ["s2"]),
        N("Cast", ["s2"], ["score"], to=TensorProto.FLOAT),
        # learn: n' = n + 1; a = max(alpha, 1/n'); first reading sets the mean
        N("Add", ["n", "one"], ["n1"]), N("Div", ["one", "n1"], ["inv"]),
        N("Max", ["alpha", "inv"], ["a"]), N("Mul", ["a", "d"], ["ad1"]),
        N("Add", ["mean", "ad1"], ["m1"]), N("Mul", ["ad1", "d"], ["add2"]),
        N("Add", ["var", "add2"], ["v0"]), N("Sub", ["one", "a"], ["oma"]),
        N("Mul", ["oma", "v0"], ["v1"]), N("Equal", ["n1", "one"], ["first"]),
        N("Where", ["first", "v", "m1"], ["m2"]), N("Where", ["first", "var", "v1"], ["v2"]),
        # not learned: a missing reading, or (after the first) an update beyond float32's
        # range (Python's abs(m1) < _F32_LIMIT and v1 < _F32_LIMIT; NaN fails both)
        N("Abs", ["m1"], ["am1"]), N("Less", ["am1", "limit"], ["m_ok"]),
        N("Less", ["v1", "limit"], ["v_ok"]), N("And", ["m_ok", "v_ok"], ["fits"]),
        N("Not", ["fits"], ["over"]), N("Not", ["first"], ["later"]),
        N("And", ["later", "over"], ["overflow"]), N("Or", ["v_bad", "overflow"], ["keep"]),
        N("Where", ["keep", "mean", "m2"], ["mean_next"]),
        N("Where", ["keep", "var", "v2"], ["var_next"]),
        N("Where", ["keep", "n", "n1"], ["n_next"]),
    ]
    ins = [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["streams"])] + [
        helper.make_tensor_value_info(k, TensorProto.DOUBLE, ["streams"])
        for k in ("mean", "var", "n")]
    outs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["streams"])] + [
        helper.make_tensor_value_info(k, TensorProto.DOUBLE, ["streams"])
        for k in ("mean_next", "var_next", "n_next")]
    graph = helper.make_graph(nodes, name, ins, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="edgewise")
    model.ir_version = 8
    state = {"n": float(det.n_), "mean": float(det.mean_), "var": float(det.var_)}
    helper.set_model_props(model, {EWZ_STATE_KEYS[k]: repr(v) for k, v in state.items()})
    onnx.checker.check_model(model)
    return OnnxExport(name, "detector", model.SerializeToString(), ["value", "mean", "var", "n"],
                      initial_state=state)


def _zero_band_nodes(zero_missing: np.ndarray, x: str, out: str) -> list[Any]:
    """Nodes mapping ``x`` to ``out`` with LightGBM's zero band, ``|x| <= ZERO`` on a
    ``zero_missing`` feature, made NaN: the tree node then sends it the missing way, as it
    does a NaN (``nodes_missing_value_tracks_true``). An input NaN stays NaN."""
    from onnx import TensorProto, helper

    def const(nm: str, dtype: int, v: Any) -> Any:
        v = np.atleast_1d(v)
        return helper.make_node("Constant", [], [nm], value=helper.make_tensor(
            nm, dtype, list(v.shape), v.tolist()))

    p = f"{out}_"
    return [
        const(p + "zm", TensorProto.BOOL, np.asarray(zero_missing, dtype=bool)),
        const(p + "zero", TensorProto.FLOAT, np.float32(ZERO)),
        const(p + "nan", TensorProto.FLOAT, np.float32(np.nan)),
        helper.make_node("Abs", [x], [p + "abs"]),
        helper.make_node("LessOrEqual", [p + "abs", p + "zero"], [p + "small"]),
        helper.make_node("And", [p + "small", p + "zm"], [p + "band"]),
        helper.make_node("Where", [p + "band", p + "nan", x], [out]),
    ]


def export_trees(table: TreeTable, name: str = "model") -> OnnxExport:
    """One ``TreeEnsembleRegressor`` node over float32 inputs, thresholds in float32 as
    :func:`~edgewise.edge.compress.float32_thresholds` rounds them (down: exact decisions for
    every float32 input; HistGradientBoosting's to nearest, as it compares float64 inputs;
    LightGBM's midpoints to nearest, so a reading at a midpoint goes left, as in LightGBM).

    A table with ``zero_missing`` features (LightGBM's ``zero_as_missing``) first maps
    ``|x| <= ZERO`` on them to NaN, so the zero band takes each split's missing way, as in
    LightGBM, the C export and :meth:`TreeTable.predict`.

    onnxruntime sums the leaves in float32 and adds ``base_values`` last, so each tree's
    leaves are centred on 0 with the offset in the base
    (:func:`~edgewise.edge.compress.center_leaves_float32`): a forest of 200 trees on
    y = 101325 + x summed leaves near 507 each and was off by up to 0.26 (output std 0.3).
    """
    onnx = _onnx()
    from onnx import TensorProto, helper

    check_trees(table)
    t = center_leaves_float32(float32_thresholds(table))
    tree_of = np.zeros(t.n_nodes, dtype=np.int64)
    for k, r in enumerate(t.roots):
        tree_of[r:] = k
    local = np.arange(t.n_nodes) - t.roots[tree_of]
    leaf = t.feature < 0
    left_local = np.where(leaf, 0, local + 1)
    right_local = np.where(leaf, 0, t.right - t.roots[tree_of])
    attrs = dict(
        n_targets=1,
        aggregate_function="SUM",
        base_values=[float(t.base)],
        nodes_treeids=tree_of.tolist(),
        nodes_nodeids=local.tolist(),
        nodes_featureids=np.where(leaf, 0, t.feature).tolist(),
        nodes_values=np.where(leaf, 0.0, t.threshold).astype(np.float32).tolist(),
        nodes_modes=["LEAF" if lf else "BRANCH_LEQ" for lf in leaf],
        nodes_truenodeids=left_local.tolist(),
        nodes_falsenodeids=right_local.tolist(),
        nodes_missing_value_tracks_true=t.missing_left.astype(np.int64).tolist(),
        target_ids=[0] * int(leaf.sum()),
        target_nodeids=local[leaf].tolist(),
        target_treeids=tree_of[leaf].tolist(),
        target_weights=t.value[leaf].astype(np.float32).tolist(),
    )
    pre = [] if t.zero_missing is None else _zero_band_nodes(t.zero_missing, "X", "X_missing")
    x_in = pre[-1].output[0] if pre else "X"
    node = helper.make_node("TreeEnsembleRegressor", [x_in], ["y"], domain="ai.onnx.ml", **attrs)
    graph = helper.make_graph(
        [*pre, node], name,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", t.n_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("ai.onnx.ml", 3)],
                              producer_name="edgewise")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return OnnxExport(name, "regressor", model.SerializeToString(), ["X"])


def export_torch(model: Any, n_features: int, name: str = "model",
                 example_shape: tuple[int, ...] | None = None) -> OnnxExport:
    """``torch.onnx.export`` of a module taking ``(N, n_features)`` (or ``example_shape``).

    The module is traced in eval mode (Dropout off, BatchNorm's running statistics); each of
    its submodules is left in the mode it was in (a module in training came back in eval
    mode: training on after the export ran without its Dropout).
    """
    _onnx()
    import torch

    shape = example_shape or (1, n_features)
    buf = io.BytesIO()
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(*shape),), buf, dynamo=False,
                              input_names=["X"], output_names=["y"],
                              dynamic_axes={"X": {0: "N"}, "y": {0: "N"}}, opset_version=17)
    finally:
        for m, training in modes:
            m.training = training
    ex = OnnxExport(name, "regressor", _marked(buf.getvalue()), ["X"])
    _check_one_output(ex, type(model).__name__, shape)
    return ex


def _check_one_output(ex: OnnxExport, what: str, shape: tuple[int, ...]) -> None:
    """:class:`ExportError` unless the graph ``ex`` gives one value per input row: one
    output of shape ``(N,)`` or ``(N, 1)``, as :meth:`OnnxExport.predict`, the host test and
    the int8 guard take it (a module with two outputs exported, then predict() failed with a
    raw ValueError from reshape and the host test printed only the first)."""
    x = np.zeros(shape, np.float32)
    outs = ex.session().run(None, {ex.input_names[0]: x})
    per_row = [tuple(int(d) for d in np.shape(o)[1:]) for o in outs]
    if len(outs) == 1 and np.shape(outs[0])[:1] == (shape[0],) and int(np.prod(per_row[0])) == 1:
        return
    got = ", ".join(f"(N, {', '.join(str(d) for d in p)})" if p else "(N,)" for p in per_row)
    raise ExportError(
        f"Cannot export {what}: on an input of shape {shape} its graph gives "
        f"{len(outs)} output{'s' * (len(outs) != 1)} of shape {got}; an export predicts one "
        "value per row, one output of shape (N,) or (N, 1). Export one module per output "
        "(e.g. a module whose forward returns net(x)[:, k:k + 1]).")


def _marked(model_bytes: bytes) -> bytes:
    """The graph with :data:`~edgewise.edge.export_c.GENERATED_KEY` in its metadata (a torch
    or quantised graph's producer is not "edgewise"): :meth:`OnnxExport.save` rewrites only
    a ``<name>.onnx`` that an export wrote."""
    onnx = _onnx()
    m = onnx.load_model_from_string(model_bytes)
    if any(p.key == GENERATED_KEY for p in m.metadata_props):
        return model_bytes
    entry = m.metadata_props.add()
    entry.key, entry.value = GENERATED_KEY, "edgewise export"
    return m.SerializeToString()


def quantize_int8(exported: OnnxExport, calibration: np.ndarray) -> OnnxExport:
    """Static post-training 8-bit quantisation (QDQ, per-channel), calibrated on real rows.

    Activations and weights are both unsigned 8-bit (onnxruntime's "U8U8"): with int8
    weights, onnxruntime's x86 kernels without VNNI (AVX2) multiply with ``vpmaddubsw``,
    whose int16 pair sums saturate, so a C-MAPSS FD001 MLP's output stopped near 139.7
    (calibration outputs reach 161): RMSE 4.44 and 25.1 cycles at most against torch on the
    4,493 test rows; U8U8 gives 0.43 and 3.65, as the unoptimised QDQ graph computes.
    What remains is int8's own limit: every activation, the output included, is clipped to
    the range the calibration rows reach (MinMax), so an output above the largest one seen
    in calibration (161.1 there; torch says 164.8 for one test row) reads as that largest
    one. Calibrate on rows that cover the outputs you need. An input beyond the calibration
    rows' range is clipped too (a 1-8-1 MLP calibrated on -1..1 gave 0.33 for x = 50, torch
    19.9), and ``calibration_rmse`` cannot show it: the export records each input's range
    (``calibration_min``/``calibration_max``, and the graph's metadata), and
    :meth:`OnnxExport.predict` warns of rows beyond it.

    onnxruntime's QuantizeLinear maps NaN to an ordinary code, so a missing input (NaN) or
    an infinite one gave a plausible number (118.2 cycles for NaN on FD001). The graph adds
    ``0 * x`` summed over each row to the output: a row with a NaN or an infinite input gives
    NaN, as torch, the float graph and the C exports do; every other row is unchanged.
    Calibration rows holding a NaN are left out, with a warning (one took an activation's
    range with it); :class:`ExportError` where every row holds one.

    Each bias is held as int32 in steps of input scale x weight scale: a layer whose weights
    are tiny next to its bias (weights 1e-6, bias 0.5) needs more steps than int32 has, and
    the graph gave 0.0 for every row. That is an :class:`ExportError` naming the layer and
    the bias (:func:`_check_int32_biases`); export float32 for such a model.

    The export records ``calibration_rmse`` and ``calibration_std`` (:class:`OnnxExport`),
    and warns, as the int8 C of a tree ensemble does, where the calibration rows cannot
    stand for real inputs: an input that holds one value in every row (one row: every
    input) gets the int8 ranges of that one point, and the graph gives nearly one output
    whatever the input (a 3-8-1 MLP calibrated on ``np.ones((4, 3))``: RMSE 0.239 against
    torch on 500 normal rows whose output std is 0.231, while the calibration rows said
    0.0; :func:`_still_inputs_note`); or where the int8 graph strays from the float one by
    more than a quarter of its outputs' spread on the calibration rows.

    >>> import torch
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    >>> cal = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    >>> q = quantize_int8(export_torch(net, 2), cal)
    >>> [bool(np.isnan(v)) for v in q.predict(np.array([[0.1, 0.2], [np.nan, 0.2], [np.inf, 0]]))]
    [False, True, True]
    >>> q.calibration_rows, q.calibration_rmse < 0.25 * q.calibration_std
    (64, True)
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    X = _calibration_without_nan(calibration)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{exported.input_names[0]: X[i:i + 64]} for i in range(0, len(X), 64)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "f.onnx", Path(d) / "q.onnx"
        src.write_bytes(exported.model_bytes)
        with warnings.catch_warnings(), quiet_root_warnings():
            warnings.simplefilter("ignore")
            # U8U8, not S8S8: see the docstring (x86 int8 weights saturate without VNNI)
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QUInt8)
        quantized = dst.read_bytes()
    _check_int32_biases(exported, quantized, X)
    data = _marked(_non_finite_guard(quantized, exported.input_names[0]))
    q = OnnxExport(exported.name, exported.kind, data, exported.input_names, dtype="int8",
                   feature_names=exported.feature_names)
    if len(X) == 0:  # nothing to measure on (export() refuses no rows before this)
        return q
    lo, hi = X.min(axis=0), X.max(axis=0)
    q = replace(q, model_bytes=_with_calibration_range(data, lo, hi),
                calibration_min=lo, calibration_max=hi)
    rmse, std = _calibration_fit(exported, q, X)
    still = _still_inputs(X)
    if still:
        warnings.warn(_still_inputs_note(X, still, exported.feature_names), UserWarning,
                      stacklevel=2)
    elif std > 0 and rmse > 0.25 * std:
        warnings.warn(f"int8 quantisation strays from the float graph by RMSE {rmse:.4g} on "
                      f"the {len(X)} calibration rows (the float graph's output std is "
                      f"{std:.4g}); calibrate on rows that cover the inputs the device will "
                      "see, or export float32.", UserWarning, stacklevel=2)
    return replace(q, calibration_rmse=rmse, calibration_std=std, calibration_rows=len(X))


@contextlib.contextmanager
def quiet_root_warnings() -> Iterator[None]:
    """Keep the root logger's warnings (onnxruntime's quantizer logs "Please consider to run
    pre-processing before quantization..." twice through ``logging.warning``: advice to run
    its script on the graph this module makes, which a caller cannot act on) off stderr
    inside the block (:func:`quantize_int8` runs the quantizer in it); the root logger's
    level and handlers are as they were afterwards.

    ``logging.warning`` on a root logger without handlers first calls
    ``logging.basicConfig``, which adds a stderr handler for good: one added inside the
    block is removed again (and closed), so later warnings of other code are not
    reformatted as ``WARNING:root:...``.

    >>> import logging
    >>> before = (logging.getLogger().level, list(logging.getLogger().handlers))
    >>> with quiet_root_warnings():
    ...     logging.warning("not shown")
    >>> (logging.getLogger().level, list(logging.getLogger().handlers)) == before
    True
    """
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(level)


def _with_calibration_range(model_bytes: bytes, lo: np.ndarray, hi: np.ndarray) -> bytes:
    """The graph with the calibration rows' least and largest value of each input in its
    metadata (:data:`CALIBRATION_KEYS`), for a device to tell which inputs int8 clips."""
    import json

    onnx = _onnx()
    m = onnx.load_model_from_string(model_bytes)
    for key, v in ((CALIBRATION_KEYS["min"], lo), (CALIBRATION_KEYS["max"], hi)):
        entry = m.metadata_props.add()
        # each float32 in its shortest form, which reads back as that float32
        entry.key, entry.value = key, json.dumps(
            [float(str(np.float32(a))) for a in np.ravel(v)], separators=(",", ":"))
    return m.SerializeToString()


def _calibration_fit(exported: OnnxExport, quantized: OnnxExport,
                     X: np.ndarray) -> tuple[float, float]:
    """``(rmse, std)``: how far the ``quantized`` graph's outputs are from the float
    graph's (``exported``) on the calibration rows ``X`` (root mean square), and the spread
    of the float graph's outputs there, over the rows where the float graph's is finite
    (NaN where none is), as the int8 C of a tree ensemble reports them."""
    feed = {exported.input_names[0]: np.ascontiguousarray(X, dtype=np.float32)}
    ref = np.ravel(exported.run(feed)[0]).astype(np.float64)
    got = np.ravel(quantized.run(feed)[0]).astype(np.float64)
    ok = np.isfinite(ref)
    if not ok.any():
        return float("nan"), float("nan")
    return (float(np.sqrt(np.mean((got[ok] - ref[ok]) ** 2))), float(np.std(ref[ok])))


def _still_inputs(X: np.ndarray) -> list[int]:
    """The inputs (flat positions of a row of ``X``) that hold one value in every row of
    ``X``: all of them where it has one row.

    >>> _still_inputs(np.array([[1.0, 2.0, 3.0], [1.0, 5.0, 3.0]]))
    [0, 2]
    >>> _still_inputs(np.array([[1.0, 2.0]]))
    [0, 1]
    """
    flat = np.asarray(X).reshape(len(X), -1)
    return [int(c) for c in np.flatnonzero(np.all(flat == flat[:1], axis=0))]


def _still_inputs_note(X: np.ndarray, still: list[int],
                       names: list[str] | None = None) -> str:
    """One line on calibration rows in which the inputs ``still`` never change (by their
    ``names`` where the graph names them, else their position in a row): how many rows, and
    which inputs with their one value.

    >>> print(_still_inputs_note(np.ones((4, 3)), [0, 1, 2]))  # doctest: +ELLIPSIS
    int8 calibration: all 3 inputs (0, 1, 2) hold one value in all 4 calibration rows (every row 1, 1, 1)...
    >>> print(_still_inputs_note(np.ones((1, 2)), [0, 1]))  # doctest: +ELLIPSIS
    int8 calibration on 1 row: each of its 2 inputs (0, 1) holds one value (the row is 1, 1)...
    """  # noqa: E501
    flat = np.asarray(X).reshape(len(X), -1)
    shape = np.asarray(X).shape[1:]

    def label(c: int) -> str:
        if names is not None and len(names) == flat.shape[1]:
            return repr(names[c])
        return str(c) if len(shape) <= 1 else str(tuple(int(i) for i in np.unravel_index(c, shape)))

    shown = still[:6]
    more = f" and {len(still) - 6} more" if len(still) > 6 else ""
    which = ", ".join(label(c) for c in shown) + more
    values = ", ".join(f"{float(flat[0, c]):.6g}" for c in shown) + (", ..." if more else "")
    every = len(still) == flat.shape[1]
    tail = ("the int8 ranges of every activation are those of one point, so the graph "
            "gives nearly one output whatever the inputs" if every else
            f"the int8 ranges of the activations {'it feeds' if len(still) == 1 else 'they feed'} "
            f"are taken as if {'it' if len(still) == 1 else 'they'} never changed, so real "
            "inputs that vary are clipped")
    tail += ("; calibration_rmse, on these rows only, does not show it. Calibrate on rows "
             "where every input varies as in real use.")
    if len(flat) == 1:
        return (f"int8 calibration on 1 row: each of its {flat.shape[1]} inputs ({which}) "
                f"holds one value (the row is {values}): {tail}")
    what = (f"all {flat.shape[1]} inputs ({which}) hold" if every else
            f"input{'' if len(still) == 1 else 's'} {which} (of {flat.shape[1]}) "
            f"{'holds' if len(still) == 1 else 'hold'}")
    return (f"int8 calibration: {what} one value in all {len(flat)} calibration rows (every "
            f"row {values}): {tail}")


#: the int32 range onnxruntime clips a quantised bias to
_I32 = float(np.iinfo(np.int32).max)


def _check_int32_biases(exported: OnnxExport, quantized: bytes, X: np.ndarray) -> None:
    """:class:`ExportError` where a layer's bias does not fit int32 at its scale.

    A static int8 graph holds each bias as int32 in steps of input scale x weight scale.
    Where the weights are tiny next to the bias (a small MLP with weights 1e-6 and bias 0.5:
    the step was 4.3e-11), ``bias / step`` lies beyond int32: onnxruntime only logged a
    warning, clipped it, and the int8 graph gave 0.0 for every row where torch gives 0.5
    (onnxruntime's fused kernels gave 0.0 with a float bias too). Calibration rows whose
    inputs barely vary (scaled by 1e-12) make the input scale, and the step, as small. The
    check reads each int32 bias of the quantised graph with its scale against the float
    graph's bias, so it does not depend on onnxruntime's log.
    """
    onnx = _onnx()
    from onnx import TensorProto, numpy_helper

    fl = onnx.load_model_from_string(exported.model_bytes)
    floats = {t.name: t for t in fl.graph.initializer}
    q = onnx.load_model_from_string(quantized)
    inits = {t.name: t for t in q.graph.initializer}
    made_by = {o: n for n in q.graph.node for o in n.output}
    used_by = {i: n for n in q.graph.node for i in n.input}

    def scale_of(tensor: str) -> np.ndarray | None:
        """The scale of the DequantizeLinear that gives ``tensor``, if one does."""
        n = made_by.get(tensor)
        if n is None or n.op_type != "DequantizeLinear" or n.input[1] not in inits:
            return None
        return numpy_helper.to_array(inits[n.input[1]]).astype(np.float64).ravel()

    for node in q.graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 2:
            continue
        qb, sc = inits.get(node.input[0]), inits.get(node.input[1])
        if qb is None or sc is None or qb.data_type != TensorProto.INT32:
            continue
        name = qb.name.removesuffix("_quantized")
        if name not in floats:
            continue
        b = numpy_helper.to_array(floats[name]).astype(np.float64).ravel()
        step = np.broadcast_to(numpy_helper.to_array(sc).astype(np.float64).ravel(), b.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            steps = np.abs(b) / step
        over = ~(steps <= _I32) & (b != 0)
        if not over.any():
            continue
        k = int(np.argmax(np.where(over, steps, -1.0)))
        layer = name.removesuffix(".bias")
        more = f" ({int(over.sum())} of its {b.size} biases are)" if over.sum() > 1 else ""
        user = used_by.get(node.output[0])
        s_in = scale_of(user.input[0]) if user is not None and len(user.input) > 1 else None
        s_w = scale_of(user.input[1]) if user is not None and len(user.input) > 1 else None
        parts = ""
        if s_in is not None and s_w is not None and s_in.size == 1:
            s_wk = float(s_w[k] if s_w.size == b.size else s_w[0])
            parts = f" = input scale {float(s_in[0]):.3g} x weight scale {s_wk:.3g}"
        raise ExportError(
            f"Cannot quantise layer {layer!r} to int8: its bias {name}[{k}] = {b[k]:.6g} is "
            f"{steps[k]:.3g} steps of its int32 scale {step[k]:.3g}{parts}, beyond int32's "
            f"{_I32:.0f}{more}, and onnxruntime clips it{_int8_gap(exported, quantized, X)}. "
            "int8 needs |bias| <= 2147483647 x input scale x weight scale: the layer's "
            "weights, or the spread of its inputs on the calibration rows, are tiny next to "
            "its bias. Export float32 (dtype='float32') instead, calibrate on rows that vary "
            "as in real use, or rescale the model so its weights are not tiny next to its "
            "biases (e.g. train on standardised inputs and outputs).")


def _int8_gap(exported: OnnxExport, quantized: bytes, X: np.ndarray) -> str:
    """Words on how far the quantised graph's outputs are from the float graph's on the
    calibration rows (the largest difference), for :func:`_check_int32_biases`'s error."""
    try:
        import onnxruntime as ort

        x = {exported.input_names[0]: X}
        f = np.ravel(exported.session().run(None, x)[0]).astype(np.float64)
        sess = ort.InferenceSession(quantized, providers=["CPUExecutionProvider"])
        i = np.ravel(sess.run(None, x)[0]).astype(np.float64)
        r = int(np.nanargmax(np.abs(f - i)))
    except Exception:  # the figure is a courtesy: the error stands without it
        return ""
    if f[r] == i[r]:
        return " (the calibration rows happen not to show it)"
    return (f": on calibration row {r} the int8 graph gives {i[r]:.6g} where the float "
            f"graph gives {f[r]:.6g}")


def _calibration_without_nan(calibration: Any) -> np.ndarray:
    """The calibration rows as float32 without those holding a NaN (a missing value), with a
    warning saying how many were left out; :class:`ExportError` where none is left.

    One NaN among 256 rows reached onnxruntime's MinMax calibration and took an activation's
    range with it: outputs off by up to 0.018 instead of 0.006 (torch's output std 0.22),
    with no word of why.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     X = _calibration_without_nan([[1.0, 2.0], [np.nan, 0.0], [3.0, 4.0]])
    >>> X.tolist(), str(w[0].message)[:45]
    ([[1.0, 2.0], [3.0, 4.0]], 'int8 calibration: 1 of the 3 rows holds a NaN')
    """
    X = np.ascontiguousarray(calibration, dtype=np.float32)
    if X.ndim < 1 or len(X) == 0:
        return X
    bad = np.isnan(X.reshape(len(X), -1)).any(axis=1)
    if bad.all():
        raise ExportError(f"Every one of the {len(X)} calibration rows holds a NaN (a missing "
                          "value); int8 ranges need rows with a value in every input. Give "
                          "real rows without missing values.")
    if bad.any():
        one = int(bad.sum()) == 1
        warnings.warn(f"int8 calibration: {int(bad.sum())} of the {len(X)} rows "
                      f"{'holds' if one else 'hold'} a NaN (a missing value; the first is row "
                      f"{int(np.argmax(bad))}) and {'is' if one else 'are'} left out; "
                      f"calibrated on the other {int((~bad).sum())}.", UserWarning, stacklevel=3)
        X = np.ascontiguousarray(X[~bad])
    return X


def _non_finite_guard(model_bytes: bytes, x: str) -> bytes:
    """The graph with ``sum(0 * x)`` over each row of input ``x`` added to every float
    output: NaN where the row holds a NaN or an infinity (``0 * inf`` is NaN), ``+0``
    elsewhere (the output unchanged). The batch is the first axis of ``x`` and the outputs."""
    onnx = _onnx()
    from onnx import TensorProto, helper

    m = onnx.load_from_string(model_bytes)
    g = m.graph
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        raise ExportError(f"The int8 graph has opset {opset}; its missing-value guard needs "
                          "opset 13 or later (export_torch writes 17).")
    inp = next((i for i in g.input if i.name == x), None)
    if inp is None:
        raise ExportError(f"The int8 graph has no input {x!r}; its inputs are "
                          f"{[i.name for i in g.input]}.")
    rank = len(inp.type.tensor_type.shape.dim)
    N = helper.make_node

    def const(nm: str, dtype: int, v: Any) -> Any:
        v = np.atleast_1d(v)
        return N("Constant", [], [nm], value=helper.make_tensor(nm, dtype, list(v.shape),
                                                                v.ravel().tolist()))

    p = "edgewise_guard_"
    nodes = [const(p + "zero", TensorProto.FLOAT, np.float32(0.0)),
             N("Mul", [x, p + "zero"], [p + "zeros"])]
    row = p + "zeros"
    if rank > 1:
        nodes += [const(p + "axes", TensorProto.INT64, np.arange(1, rank)),
                  N("ReduceSum", [p + "zeros", p + "axes"], [p + "row"], keepdims=0)]
        row = p + "row"
    for k, out in enumerate(g.output):
        if out.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        raw = f"{out.name}_{p}unguarded"
        for n in g.node:
            n.output[:] = [raw if o == out.name else o for o in n.output]
            n.input[:] = [raw if i == out.name else i for i in n.input]
        out_rank = max(len(out.type.tensor_type.shape.dim), 1)
        shape = np.array([-1] + [1] * (out_rank - 1), np.int64)
        nodes += [const(f"{p}shape{k}", TensorProto.INT64, shape),
                  N("Reshape", [row, f"{p}shape{k}"], [f"{p}out{k}"]),
                  N("Add", [raw, f"{p}out{k}"], [out.name])]
    g.node.extend(nodes)
    onnx.checker.check_model(m)
    return m.SerializeToString()
