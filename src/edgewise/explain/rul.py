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
"""

from __future__ import annotations

import pandas as pd

from edgewise.errors import InvalidParameterError
from edgewise.explain.base import Explanation
from edgewise.models.rul import RULModel
from edgewise.models.windows import FEATURE_KINDS

__all__ = ["by_sensor", "rul_explanations"]


def rul_explanations(model: RULModel, X: pd.DataFrame) -> dict[object, Explanation]:
    """Signed TreeSHAP contributions per window feature, at the last row of each unit."""
    model._fitted()
    if "gbm" not in model.core_:
        raise InvalidParameterError(
            "rul_explanations needs a RULModel with the 'gbm' member; "
            f"this one has models={tuple(model.models)!r}."
        )
    feats = model.features(X)
    contrib = model.core_["gbm"].predict(feats.to_numpy(), pred_contrib=True)
    weight = float(model.weights_[list(model.models).index("gbm")])
    contrib = contrib * weight
    out = {}
    for unit, row in zip(feats.index, contrib, strict=True):
        parts = {name: float(c) for name, c in zip(feats.columns, row[:-1], strict=True)}
        out[unit] = Explanation(value=float(row.sum()), base=float(row[-1]), contributions=parts)
    return out


def by_sensor(explanation: Explanation) -> Explanation:
    """Sum the contributions of each sensor's window features (``s2_mean`` … into ``s2``)."""
    suffixes = tuple(f"_{k}" for k in FEATURE_KINDS)
    folded: dict[str, float] = {}
    for name, c in explanation.contributions.items():
        key = next((name[: -len(s)] for s in suffixes if name.endswith(s)), name)
        folded[key] = folded.get(key, 0.0) + c
    return Explanation(explanation.value, explanation.base, folded)


