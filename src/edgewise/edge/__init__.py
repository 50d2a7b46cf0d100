"""Ship models to devices: compress, export to ONNX or C, and run them offline (the agent).

:func:`export` is the one entry point. It dispatches on the model's type name (and its base
classes' names), so optional libraries (torch, lightgbm) are never imported to decide, and a new
model type is one function registered with :func:`register`.

>>> from edgewise.detect.zscore import EWZScore
>>> export(EWZScore(), format="c").ram_bytes
24
>>> export(EWZScore(), format="c", dtype="int8")
Traceback (most recent call last):
...
edgewise.errors.ExportError: Cannot export EWZScore to format='c' with dtype='int8'. Supported for EWZScore: c/float32, onnx/float32.
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgewise.edge import compress, export_c, export_onnx
from edgewise.edge.export_c import CExport
from edgewise.edge.export_onnx import OnnxExport
from edgewise.errors import ExportError

__all__ = ["CExport", "OnnxExport", "export", "register", "supported"]

Exporter = Callable[..., CExport | OnnxExport]
_EXPORTERS: dict[str, dict[tuple[str, str], Exporter]] = {}
#: int8 exporters that take no calibration rows
_CALIBRATION_FREE: set[Exporter] = set()


def register(type_name: str, format: str, dtype: str) -> Callable[[Exporter], Exporter]:
    """Decorator: ``fn(model, *, name, calibration)`` exports ``type_name`` as ``format``/``dtype``."""  # noqa: E501

    def deco(fn: Exporter) -> Exporter:
        _EXPORTERS.setdefault(type_name, {})[(format, dtype)] = fn
        return fn

    return deco


def supported() -> dict[str, list[str]]:
    """Every exportable type name and its ``format/dtype`` combinations."""
    return {t: sorted(f"{f}/{d}" for f, d in combos) for t, combos in sorted(_EXPORTERS.items())}


def export(
    model: Any,
    format: str = "onnx",
    dtype: str = "float32",
    *,
    name: str = "model",
    calibration: np.ndarray | None = None,
) -> CExport | OnnxExport:
    """Export ``model`` for a device.

    Parameters
    ----------
    model
        A fitted model or a streaming detector (see :func:`supported`). A RULModel exports
        its boosted member, which takes the window features the model computes from sensor
        rows (named, in order, in ``.feature_names``; see :mod:`edgewise.edge.export_rul`).
    format
        ``"onnx"`` (a graph for onnxruntime) or ``"c"`` (dependency-free C99 sources).
    dtype
        ``"float32"``, or ``"int8"`` (quantised; needs ``calibration`` rows from real data,
        but for a torch MLP to C, whose weights are scaled per row).
    name
        C symbol prefix (a C identifier, :func:`~edgewise.edge.export_c.check_c_name`) / graph
        name (a plain file name, :func:`~edgewise.edge.export_onnx.check_onnx_name`).
    calibration
        Real input rows (n_samples, n_features) for int8 ranges: at least one row, no
        infinity (NaN is a missing value). A DataFrame whose columns are named is matched
        by name where the model names its inputs (``feature_names_in_``, a RULModel's window
        features): its columns are picked in the model's order (others left out; one the
        model needs and the frame lacks is an :class:`ExportError`). Tree ensembles need
        exactly ``n_features`` columns
        and warn when the int8 model strays far from the float one on these rows (see
        :func:`~edgewise.edge.compress.quantize_trees`). A torch module's int8 ONNX is
        calibrated on the rows without a NaN (those are left out, with a warning; none left
        is an :class:`ExportError`). A torch module to ONNX is traced on one input of their
        shape: one whose first layer is not Linear (a Conv1d) needs
        them, shaped as its input (rows, channels, length).

    Returns
    -------
    CExport | OnnxExport
        With ``.save(dir)`` and Python-side runners (``predict``/``score_many``) for parity.
    """
    table: dict[tuple[str, str], Exporter] = {}
    for cls in reversed(type(model).__mro__):  # a subclass's entries override its bases'
        table.update(_EXPORTERS.get(cls.__name__, {}))
    if not table:
        kinds = ", ".join(sorted(_EXPORTERS))
        raise ExportError(f"Cannot export {type(model).__name__}. Supported: {kinds}.")
    fn = table.get((format, dtype))
    if fn is None:
        combos = ", ".join(sorted(f"{f}/{d}" for f, d in table))
        raise ExportError(
            f"Cannot export {type(model).__name__} to format={format!r} with dtype={dtype!r}. "
            f"Supported for {type(model).__name__}: {combos}."
        )
    _check_detector_overrides(model)
    if format == "c":
        export_c.check_c_name(name)
    else:  # a file name: '../x' or '/abs' wrote outside the output folder
        export_onnx.check_onnx_name(name)
    # "compact" (trees) needs none: splits stay exact; nor does an MLP's int8 C (per-row
    # weight scales, from the weights alone)
    if dtype == "int8" and calibration is None and fn not in _CALIBRATION_FREE:
        raise ExportError(f"dtype='int8' export of {type(model).__name__} needs calibration rows "
                          "from real data: export(..., calibration=X) in Python, --calibration "
                          "FILE (a CSV of input rows) with 'edgewise export'.")
    if calibration is not None:
        calibration = _calibration_by_name(model, calibration)
        _check_calibration_rows(calibration)
    return fn(model, name=name, calibration=calibration)


#: The streaming detectors the edge exports, by class name: the export reads their state and
#: computes their maths, so a subclass overriding any of their methods is refused.
_DETECTORS = ("ContextLikelihood", "EWZScore", "Mahalanobis")
#: Methods a detector subclass may define without changing what it computes.
_HARMLESS = frozenset({"__init__", "__repr__", "__str__"})


def _check_detector_overrides(model: Any) -> None:
    """Raise :class:`ExportError` where ``model`` is a subclass of an exported detector that
    overrides one of the methods the detector defines or inherits from Edgewise (its
    ``score_one``, ``learn_one`` and their helpers): the C and ONNX compute the base's maths
    only (a subclass doubling ``score_one`` was exported as the base and scored half)."""
    from edgewise.edge.compress import check_not_overridden

    mro = type(model).__mro__
    base = next((c for c in mro if c.__name__ in _DETECTORS), None)
    if base is None or base is type(model):
        return
    methods = tuple(sorted({m for c in base.__mro__ if c.__module__.startswith("edgewise.")
                            for m, v in vars(c).items()
                            if callable(v) and m not in _HARMLESS}))
    check_not_overridden(model, base.__name__, methods, hint=(
        f"Export a plain {base.__name__} with the parameters and state the device should use "
        "(or drop the override if it returns the base's result unchanged)."))


def _input_names(model: Any) -> list[str] | None:
    """The names of the inputs the exported ``model`` takes, in order, where it names them:
    scikit-learn's ``feature_names_in_``, LightGBM's (less its ``Column_0, Column_1, ...``
    stand-ins for a model fitted on an unnamed array), a RULModel's window features."""
    if type(model).__name__ == "RULModel":
        names = getattr(model, "feature_names_", None)
    else:
        names = getattr(model, "feature_names_in_", None)
        if names is None and callable(getattr(model, "feature_name", None)):
            try:
                names = model.feature_name()  # a LightGBM Booster
            except Exception:
                names = None
    if names is None:
        return None
    names = [str(n) for n in names]
    if not names or names == [f"Column_{i}" for i in range(len(names))]:
        return None
    return names


def _calibration_by_name(model: Any, calibration: Any) -> Any:
    """``calibration`` with its columns picked and ordered by the model's input names, where
    both name them (a DataFrame whose column names are all strings, and a model fitted on
    named columns); else as given (rows of numbers in the model's input order).

    A frame of the model's columns in another order was used by position: the int8 ranges of
    two inputs swapped (C off by up to 37.4 on outputs of 125..175) while calibration_rmse,
    measured on the same mis-ordered rows, said 0.0001. A needed name the frame lacks (or
    holds twice) is an :class:`ExportError` naming it; other columns are left out."""
    columns = getattr(calibration, "columns", None)
    if columns is None or isinstance(calibration, np.ndarray):
        return calibration
    try:
        cols = list(columns)
    except TypeError:
        return calibration
    names = _input_names(model)
    if names is None or not cols or not all(isinstance(c, str) for c in cols):
        return calibration
    missing = [n for n in names if n not in cols]
    twice = [n for n in names if cols.count(n) > 1]
    if missing or twice:
        shown = missing or twice
        more = f" and {len(shown) - 6} more" if len(shown) > 6 else ""
        listed = ", ".join(repr(n) for n in shown[:6]) + more
        why = (f"lack {len(missing)} of the {len(names)} inputs {type(model).__name__} was "
               f"fitted on ({listed})" if missing else f"name {listed} more than once")
        raise ExportError(
            f"Calibration columns {cols[:8]}{' ...' if len(cols) > 8 else ''} {why}; give "
            f"a frame with a column for each of {names[:8]}{' ...' if len(names) > 8 else ''} "
            "(others are left out), or rows of numbers in that order.")
    return calibration[names]


def _check_calibration_rows(calibration: Any) -> None:
    """Raise :class:`ExportError` unless ``calibration`` is a non-empty array of numbers with
    no infinity (NaN, a missing value, is allowed): one inf made every int8 range infinite."""
    try:
        X = np.asarray(calibration, dtype=np.float64)
    except (TypeError, ValueError):
        raise ExportError("Calibration rows must be an array of numbers, one real input row "
                          f"each. Got {type(calibration).__name__} instead.") from None
    if X.ndim < 2 or X.shape[0] < 1 or X.size == 0:
        raise ExportError("Calibration rows must be at least one real input row, shape "
                          f"(rows >= 1, inputs). Got shape {X.shape} instead.")
    inf = np.isinf(X)
    if inf.any():
        at = tuple(int(i) for i in np.argwhere(inf)[0])
        where = f"column {at[1]}" if len(at) == 2 else f"position {at[1:]}"
        raise ExportError(f"Calibration row {at[0]}, {where} is {X[at]}; give finite values "
                          "(NaN, a missing value, is allowed).")


# -- the registrations: one function per model type and format ---------------------------------


@register("EWZScore", "c", "float32")
def _ewz_c(model: Any, *, name: str, calibration: Any) -> CExport:
    return export_c.export_ewzscore(model, name=name)


@register("EWZScore", "onnx", "float32")
def _ewz_onnx(model: Any, *, name: str, calibration: Any) -> OnnxExport:
    return export_onnx.export_ewzscore(model, name=name)


def _trees_c(model: Any, *, name: str, calibration: Any) -> CExport:
    return export_c.export_trees(compress.tree_table(model), name=name)


def _trees_c_int8(model: Any, *, name: str, calibration: Any) -> CExport:
    q = compress.quantize_trees(compress.tree_table(model), calibration)
    return export_c.export_trees(q, name=name)


def _trees_onnx(model: Any, *, name: str, calibration: Any) -> OnnxExport:
    return export_onnx.export_trees(compress.tree_table(model), name=name)


def _trees_c_compact(model: Any, *, name: str, calibration: Any) -> CExport:
    from edgewise.edge.export_compact import export_trees_compact

    return export_trees_compact(compress.tree_table(model), name=name)


for _t in (*compress.TREE_MODELS, "TreeTable"):
    register(_t, "c", "float32")(_trees_c)
    register(_t, "c", "compact")(_trees_c_compact)
    register(_t, "c", "int8")(_trees_c_int8)
    register(_t, "onnx", "float32")(_trees_onnx)


def _rul(format: str, dtype: str) -> Exporter:
    def fn(model: Any, *, name: str, calibration: Any) -> CExport | OnnxExport:
        from edgewise.edge.export_rul import export_rul

        return export_rul(model, format, dtype, name=name, calibration=calibration)

    return fn


# a RULModel (edgewise.models.rul): its boosted member, with the window features it takes
# named in the C header and in <name>_inputs.json (edgewise.edge.export_rul)
for _f, _d in (("c", "float32"), ("c", "compact"), ("c", "int8"), ("onnx", "float32")):
    register("RULModel", _f, _d)(_rul(_f, _d))


@register("Sequential", "c", "float32")
def _mlp_c(model: Any, *, name: str, calibration: Any) -> CExport:
    return export_c.export_mlp(model, name=name)


@register("Sequential", "c", "int8")
def _mlp_c_int8(model: Any, *, name: str, calibration: Any) -> CExport:
    return export_c.export_mlp(model, name=name, dtype="int8")


_CALIBRATION_FREE.add(_mlp_c_int8)


#: attributes of torch layers that take no (rows, features) input: Conv*, RNN/LSTM/GRU,
#: Embedding
_NOT_ROWS = ("in_channels", "input_size", "num_embeddings")


def _n_features(model: Any, calibration: Any) -> tuple[int, tuple[int, ...] | None]:
    """The input width of a torch module and the shape to trace it with: ``calibration``'s
    shape, else the ``in_features`` of its first Linear; :class:`ExportError` where a layer
    that takes no (rows, features) input comes first (a Conv1d: its input shape is unknown,
    and tracing with the first Linear's width failed inside torch with a RuntimeError)."""
    if calibration is not None:
        shape = np.shape(calibration)
        return int(shape[-1]), (1, *shape[1:])
    for m in model.modules():
        if any(hasattr(m, a) for a in _NOT_ROWS):
            raise ExportError(
                f"Cannot infer the input shape of {type(model).__name__}: its first layer is "
                f"{type(m).__name__}, not Linear. Export it from Python with calibration=X, a "
                "few real inputs of its input shape (e.g. (rows, channels, length) for a "
                "Conv1d): edgewise.edge.export(model, format='onnx', calibration=X).")
        if hasattr(m, "in_features"):
            return int(m.in_features), None
    raise ExportError(f"Cannot infer the input shape of {type(model).__name__}; pass "
                      "calibration=X (a few real input rows).")


@register("Module", "onnx", "float32")
def _torch_onnx(model: Any, *, name: str, calibration: Any) -> OnnxExport:
    nf, shape = _n_features(model, calibration)
    try:
        return export_onnx.export_torch(model, nf, name=name, example_shape=shape)
    except RuntimeError as exc:  # torch could not run the module on an input of that shape
        first = " ".join(str(exc).strip().split("\n")[0].split())[:200]
        raise ExportError(
            f"torch could not export {type(model).__name__} traced on an input of shape "
            f"{shape or (1, nf)}: {first}. Where that is not the module's input shape, pass "
            "calibration=X, a few real inputs of that shape.") from None


@register("Module", "onnx", "int8")
def _torch_onnx_int8(model: Any, *, name: str, calibration: Any) -> OnnxExport:
    return export_onnx.quantize_int8(_torch_onnx(model, name=name, calibration=calibration),
                                     calibration)


# -- the default detectors (edgewise.detect.default_detector / default_multivariate) --------


@register("ContextLikelihood", "c", "float32")
def _clik_c(model: Any, *, name: str, calibration: Any) -> CExport:
    # the C computes in double (the symbol grid and hash need it for parity); "float32" is
    # this entry point's name for "not quantised"
    from edgewise.edge.export_detectors import export_context_likelihood_c

    return export_context_likelihood_c(model, name=name)


@register("Mahalanobis", "c", "float32")
def _maha_c(model: Any, *, name: str, calibration: Any) -> CExport:
    from edgewise.edge.export_detectors import export_mahalanobis_c

    return export_mahalanobis_c(model, name=name)


@register("Mahalanobis", "onnx", "float32")
def _maha_onnx(model: Any, *, name: str, calibration: Any) -> OnnxExport:
    from edgewise.edge.export_detectors import export_mahalanobis_onnx

    return export_mahalanobis_onnx(model, name=name)
