"""A :class:`~edgewise.models.rul.RULModel` for a device: its boosted member, and what it takes.

A RULModel predicts from raw sensor rows, but what goes to a device is its LightGBM member
(``model.core_["gbm"]``), and that takes **window features**, not readings: for each sensor
the model kept, z-scored within its operating regime, the mean over the trailing window, the
mean of its last ``window // 5`` rows, the least-squares slope over the window, the standard
deviation over the window, the slope over the whole history so far and the last value; then
the unit's age in rows (see :mod:`edgewise.models.windows`). The device must compute the
same features in the same order (``model.feature_names_``) and pass them to the exported
function. The export says so three times: in the C header's comment (one line per input),
in ``<name>_inputs.json`` beside the sources or the graph (the names, the window, the
per-regime means and scales, the regime centres: everything the device needs to compute
them) and in :attr:`~edgewise.edge.export_c.CExport.feature_names`.

The exported function returns the member's raw prediction ``y``; the model's point is
``min(max(weight * y, 0), cap)`` (``weight`` is 1 for a gbm-only model; a model that also
blends in a CNN member warns, as the device's point then differs). A model trained without
the member (``models=("cnn",)``) is refused, naming the members it has.

>>> import pandas as pd
>>> from edgewise.models.rul import RULModel
>>> rng = np.random.default_rng(0)
>>> rows = [(u, t, 1.0 + np.exp((t - 60) / 15) + rng.normal(0, 0.05))
...         for u in range(8) for t in range(60)]
>>> df = pd.DataFrame(rows, columns=["unit", "cycle", "temp"])
>>> model = RULModel(n_estimators=5, calibration_folds=2, window=10, cap=40.0).fit(df)
>>> c = export_rul(model, format="c", name="rul")
>>> c.feature_names
['temp_mean', 'temp_recent', 'temp_slope', 'temp_std', 'temp_hslope', 'temp_last', 'age']
>>> sorted(c.files)
['rul.c', 'rul.h', 'rul_host_test.c', 'rul_inputs.json']
>>> print(c.files["rul.h"].split("Inputs:")[1].split("*/")[0])  # doctest: +ELLIPSIS
 x[0..6], the window features RULModel computes from each unit's rows:...
 *   x[0] "temp_mean"
 ...
 *   x[6] "age"
 ...
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from typing import Any

import numpy as np

from edgewise.edge import compress, export_c, export_onnx
from edgewise.edge.export_c import CExport
from edgewise.edge.export_onnx import OnnxExport
from edgewise.errors import ExportError

__all__ = ["export_rul", "rul_gbm", "rul_inputs"]

#: What a RULModel's boosted member exports to, ``(format, dtype)``.
FORMATS = (("c", "float32"), ("c", "compact"), ("c", "int8"), ("onnx", "float32"))


def rul_gbm(model: Any) -> Any:
    """The boosted member (``model.core_["gbm"]``) of a fitted RULModel, or
    :class:`~edgewise.errors.ExportError` naming the members it has and what exports.

    >>> class Stub:  # a RULModel trained with models=("cnn",)
    ...     models, core_ = ("cnn",), {"norm": None, "cnn": None}
    >>> rul_gbm(Stub())
    Traceback (most recent call last):
    ...
    edgewise.errors.ExportError: Cannot export this RULModel: it was trained with models=['cnn'] and has no 'gbm' member; only the gbm member (LightGBM on window features) exports (to c/float32, c/compact, c/int8, onnx/float32). Retrain with 'edgewise train rul --models gbm' (or gbm,cnn).
    """  # noqa: E501
    core = getattr(model, "core_", None)
    if not isinstance(core, dict):
        raise ExportError("Cannot export this RULModel: it is not fitted (no core_); fit it on "
                          "run-to-failure histories or load one with edgewise.models.rul."
                          "load_model.")
    if "gbm" not in core:
        combos = ", ".join(f"{f}/{d}" for f, d in FORMATS)
        raise ExportError(
            f"Cannot export this RULModel: it was trained with models={list(model.models)} "
            "and has no 'gbm' member; only the gbm member (LightGBM on window features) "
            f"exports (to {combos}). Retrain with 'edgewise train rul --models gbm' "
            "(or gbm,cnn).")
    return core["gbm"]


def _floats(a: Any) -> Any:
    """``a`` as nested lists of floats for JSON, a non-finite value as ``None``."""
    arr = np.asarray(a, dtype=float)
    out = np.where(np.isfinite(arr), arr, np.nan).tolist()
    if arr.ndim == 0:
        return None if np.isnan(out) else out

    def clean(v: Any) -> Any:
        return [clean(x) for x in v] if isinstance(v, list) else (None if v != v else v)

    return clean(out)


def rul_inputs(model: Any) -> dict[str, Any]:
    """What the exported member takes and how its output becomes the model's point, as JSON.

    Keys: ``features`` (the input names, in order), ``sensors`` (the kept sensors, in
    feature order), ``window``/``recent_window`` (rows), ``feature_kinds`` (what each
    per-sensor feature is), ``normalisation`` (per-regime ``mean`` and ``scale`` of the kept
    sensors, regimes ``[regime][sensor]``; ``settings_mean``, ``settings_scale`` and
    ``regime_centers`` to find a row's regime: nearest centre to the standardised settings,
    ``null`` when the model found one regime), ``output`` (``weight``, ``cap``, the formula,
    members that are not exported, with their weights).
    """
    gbm = rul_gbm(model)
    names = [str(n) for n in model.feature_names_]
    norm = model.core_["norm"]
    keep = np.asarray(norm.keep_, dtype=bool)
    sensors = [s for s, k in zip(model.sensors_, keep, strict=True) if k]
    regimes = norm.kmeans_ is not None
    models = list(model.models)
    weights = np.asarray(model.weights_, dtype=float)
    w = float(weights[models.index("gbm")])
    others = {m: float(weights[i]) for i, m in enumerate(models) if m != "gbm"}
    cap = None if model.cap is None else float(model.cap)
    point = "min(max(weight * y, 0), cap)" if cap is not None else "max(weight * y, 0)"
    n_in = compress.tree_table(gbm).n_features
    if n_in != len(names):  # the member was fitted on these features; anything else is a bug
        raise ExportError(f"This RULModel's gbm member takes {n_in} inputs but the model names "
                          f"{len(names)} features; refit it.")
    return {
        "model": "RULModel",
        "member": "gbm",
        "n_features": len(names),
        "features": names,
        "unit_column": model.unit_column,
        "time_column": model.time_column,
        "condition_columns": list(model.conditions_) if regimes else [],
        "sensors": sensors,
        "window": int(model.window),
        "recent_window": max(1, int(model.window) // 5),
        "feature_kinds": {
            "mean": "mean of the sensor's z-score over the last `window` rows (fewer early on)",
            "recent": "mean over the last `recent_window` rows",
            "slope": "least-squares slope per row over the last `window` rows",
            "std": "standard deviation (population) over the last `window` rows",
            "hslope": "least-squares slope per row over every row of the unit so far",
            "last": "the row's own z-score",
            "age": "rows of the unit's history so far, this one included (1, 2, ...)",
        },
        "normalisation": {
            "z": "(value - mean[regime][sensor]) / scale[regime][sensor]; a missing value "
                 "is carried forward within the unit (the last value before it); before "
                 "the sensor's first value in the unit z is 0; in a row where a setting has "
                 "not had its first value in the unit yet the regime is unknown and every "
                 "sensor's z is 0",
            "mean": _floats(np.asarray(norm.mean_)[:, keep]),
            "scale": _floats(np.asarray(norm.scale_)[:, keep]),
            "settings_mean": _floats(norm.settings_mean_) if regimes else None,
            "settings_scale": _floats(norm.settings_scale_) if regimes else None,
            "regime_centers": _floats(norm.kmeans_.cluster_centers_) if regimes else None,
        },
        "output": {"weight": w, "cap": cap, "point": point,
                   "not_exported": others},
    }


def _c_comment(text: str) -> str:
    """``text`` safe inside a C comment: ASCII, no ``*/`` (it ended the comment), no ``/*``
    (``-Werror=comment``, in the README's gcc flags, refused a sensor named ``line/*/temp``)
    and no trigraph.

    >>> print(_c_comment('"line/*/temp", "a*/b", "??="'))
    "line/\\*\\/temp", "a*\\/b", "?\\?="
    """
    # "*/" first: the "\\" put before a "*" then never makes a new "*/" (that "*" is not
    # followed by "/": every "*/" is gone), nor a new "/*"
    return (text.encode("ascii", "backslashreplace").decode().replace("*/", "*\\/")
            .replace("/*", "/\\*").replace("??", "?\\?"))


def _header_note(name: str, spec: dict[str, Any]) -> str:
    n = len(spec["features"])
    lines = [
        f"/* Inputs: x[0..{n - 1}], the window features RULModel computes from each unit's rows:",
        (f" * its {len(spec['sensors'])} kept sensors z-scored per operating regime, over a "
         f"window of {spec['window']} rows"),
        (f" * (recent: {spec['recent_window']}), then age; in this order ({name}_inputs.json "
         "holds the names and"),
        " * the normalisation the device needs to compute them):",
    ]
    lines += [f" *   x[{i}] {_c_comment(json.dumps(f))}" for i, f in enumerate(spec["features"])]
    out = spec["output"]
    lines.append(f" * Output: y = {name}_predict(x), the gbm member's RUL; the model's point is")
    cap = "none" if out["cap"] is None else f"{out['cap']:g}"
    lines.append(f" * {out['point']} with weight = {out['weight']:.9g}, cap = {cap}."
                 + "".join(f" Not exported: {_c_comment(str(m))} (weight {w:.3g}; the point "
                           "blends it in)."
                           for m, w in out["not_exported"].items() if w > 0))
    return "\n".join(lines) + "\n */\n"


def export_rul(
    model: Any, format: str = "c", dtype: str = "float32", *, name: str = "model",
    calibration: np.ndarray | None = None,
) -> CExport | OnnxExport:
    """Export a fitted RULModel's boosted member as ``format``/``dtype`` (see :data:`FORMATS`),
    stating the inputs it takes (the module docstring). Warns when the model also has a
    member that is not exported (its point blends both)."""
    if (format, dtype) not in FORMATS:
        combos = ", ".join(f"{f}/{d}" for f, d in FORMATS)
        raise ExportError(f"Cannot export RULModel to format={format!r} with dtype={dtype!r}. "
                          f"Supported for RULModel: {combos}.")
    spec = rul_inputs(model)
    table = compress.tree_table(rul_gbm(model))
    others = {m: w for m, w in spec["output"]["not_exported"].items() if w > 0}
    if others:  # a member of weight 0 leaves the point as the gbm member gives it
        warnings.warn(
            f"This RULModel blends its gbm member (weight {spec['output']['weight']:.3g}) with "
            f"{', '.join(f'{m} (weight {w:.3g})' for m, w in others.items())}; only gbm "
            "exports, so the device's point differs from the model's. Train with "
            "'--models gbm' for a model the device computes whole.", UserWarning, stacklevel=2)
    sidecar = {f"{name}_inputs.json": json.dumps(spec, indent=1) + "\n"}
    if format == "onnx":
        ox = export_onnx.export_trees(table, name=name)
        return dataclasses.replace(ox, model_bytes=_onnx_with_names(ox.model_bytes, spec),
                                   feature_names=spec["features"], sidecar=sidecar)
    if dtype == "compact":
        from edgewise.edge.export_compact import export_trees_compact

        cx = export_trees_compact(table, name=name)
    elif dtype == "int8":
        cx = export_c.export_trees(compress.quantize_trees(table, calibration), name=name)
    else:
        cx = export_c.export_trees(table, name=name)
    h = cx.files[f"{name}.h"]
    cut = h.index("*/\n") + 3  # after the header's first comment
    files = dict(cx.files)
    files[f"{name}.h"] = h[:cut] + _header_note(name, spec) + h[cut:]
    files.update(sidecar)
    return dataclasses.replace(cx, files=files, feature_names=spec["features"])


def _onnx_with_names(model_bytes: bytes, spec: dict[str, Any]) -> bytes:
    """The graph with the input names in its metadata (``edgewise.features``, JSON)."""
    import onnx

    m = onnx.load_model_from_string(model_bytes)
    entry = m.metadata_props.add()
    entry.key, entry.value = "edgewise.features", json.dumps(spec["features"])
    m.doc_string = (f"RULModel gbm member: input X holds the {spec['n_features']} window "
                    "features named in metadata 'edgewise.features', in that order.")
    return m.SerializeToString()
