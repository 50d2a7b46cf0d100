"""Why a RUL model predicts what it does: TreeSHAP contributions of its boosted member.

LightGBM computes exact TreeSHAP values (``pred_contrib=True``): for each unit, one
signed contribution per window feature plus a base value (the expected prediction),
summing to the boosted member's raw prediction. :func:`rul_explanations` returns them
per unit; :func:`by_sensor` folds the features of one sensor (level, trend, …) together.
When the model is an ensemble, the explanation is of the boosted member, scaled by its
stacking weight; ``value`` is then that member's share of the prediction.

>>> import numpy as np, pandas as pd
>>> from edgewise.models.rul import RULModel
>>> rng = np.random.default_rng(0)
>>> rows = [(u, t, np.exp((t - 100) / 20) + rng.normal(0, .02), rng.normal())
...         for u in range(12) for t in range(100)]
>>> df = pd.DataFrame(rows, columns=["unit", "cycle", "temp", "noise"])
>>> model = RULModel(n_estimators=30, cap=50.0).fit(df)
>>> ex = rul_explanations(model, df[df.cycle < 90])
>>> all(e.check() for e in ex.values()), sorted(by_sensor(ex[0]).contributions)
(True, ['age', 'noise', 'temp'])
>>> rul_explanations(model, df.iloc[:0])  # no units: none explained
{}
"""

from __future__ import annotations

import pandas as pd

from edgewise.errors import InvalidParameterError
from edgewise.explain.base import Explanation
from edgewise.models.rul import RULModel
from edgewise.models.windows import FEATURE_KINDS

__all__ = ["UNIT_AGE_KEY", "by_sensor", "rul_explanations"]


def rul_explanations(model: RULModel, X: pd.DataFrame) -> dict[object, Explanation]:
    """Signed TreeSHAP contributions per window feature, at the last row of each unit;
    ``{}`` for a frame with no units, as :meth:`RULModel.predict` gives an empty series
    (e.g. once every unscorable unit is left out); see the module doc."""
    model._fitted()
    if "gbm" not in model.core_:
        raise InvalidParameterError(
            "rul_explanations needs a RULModel with the 'gbm' member; "
            f"this one has models={tuple(model.models)!r}."
        )
    feats = model.features(X)
    if len(feats) == 0:  # LightGBM refuses 0 rows
        return {}
    contrib = model.core_["gbm"].predict(feats.to_numpy(), pred_contrib=True)
    weight = float(model.weights_[list(model.models).index("gbm")])
    contrib = contrib * weight
    out = {}
    for unit, row in zip(feats.index, contrib, strict=True):
        parts = {name: float(c) for name, c in zip(feats.columns, row[:-1], strict=True)}
        out[unit] = Explanation(value=float(row.sum()), base=float(row[-1]), contributions=parts)
    return out


#: Key of the unit-age window feature in :func:`by_sensor` when a sensor is named ``age``
#: (a space is never in a metric name, so it cannot be taken by a sensor).
UNIT_AGE_KEY = "unit age"


def by_sensor(explanation: Explanation) -> Explanation:
    """Sum the contributions of each sensor's window features (``s2_mean`` … into ``s2``).

    A feature that belongs to no sensor (the unit's age, ``age``) keeps its own entry. When
    a sensor is itself named ``age``, its features fold into ``age`` and the unit's age is
    reported as ``"unit age"`` (:data:`UNIT_AGE_KEY`), so neither is added into the other.

    >>> e = Explanation(6.0, 1.0, {"age_mean": 1.0, "age_last": 2.0, "age": 2.0})
    >>> by_sensor(e).contributions
    {'age': 3.0, 'unit age': 2.0}
    """
    suffixes = tuple(f"_{k}" for k in FEATURE_KINDS)
    folded: dict[str, float] = {}
    own: dict[str, float] = {}  # features of no sensor, kept as they are
    for name, c in explanation.contributions.items():
        key = next((name[: -len(s)] for s in suffixes if name.endswith(s) and len(name) > len(s)),
                   None)
        if key is None:
            own[name] = own.get(name, 0.0) + c
        else:
            folded[key] = folded.get(key, 0.0) + c
    for name, c in own.items():
        key = name
        if key in folded:  # a sensor has this name: the feature of none gets another key
            key = UNIT_AGE_KEY if name == "age" else f"{name} (feature)"
            while key in folded or key in own:
                key += "'"
        folded[key] = c
    return Explanation(explanation.value, explanation.base, folded)


