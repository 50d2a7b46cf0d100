"""How often `train transfer`'s keep rule saves a fine-tuned model worse than the fleet's.

A fleet model on 600 simulated windows (3 features, faults 2.5 sd along the first); each
of 300 devices has LABELS labelled windows (half with a 1 sd offset on a feature that
carries no fault signal) and goes through the command's own hold-out and keep rule; the
saved model is then scored on 2,000 fresh windows of that device.

    PYTHONPATH=src python benchmarks/scripts/transfer_keep_sim.py 20
    PYTHONPATH=src python benchmarks/scripts/transfer_keep_sim.py 60

A second argument, 0, puts the offset on the first feature instead, the one that carries
the faults: there the fleet model flags much of an offset device's normal, and
re-centring can make a better model, so the run also shows how often the keep rule
saves a fine-tuned model that is better (``... 60 0``).

Prints, per offset and saved model, whether a warning came with it and whether the saved
model was worse / the same / better than the fleet's (by 0.01 balanced accuracy), and
then the fine-tuned model's count of each of these had it always been saved.
"""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np

from edgewise.label.fleet_transfer import _alarms, _holdout, _keep
from edgewise.transfer import FleetModel, _balanced_accuracy, fine_tune


def main(labels: int, feature: int = 1) -> None:
    rng = np.random.default_rng(0)

    def draw(n: int, off: float) -> tuple[np.ndarray, np.ndarray]:
        X = rng.normal(0, 1, (n, 3))
        y = (rng.random(n) < 0.3).astype(int)
        X[y == 1, 0] += 2.5
        X[:, feature] += off
        return X, y

    fleet = FleetModel().fit(*draw(600, 0.0))
    c: Counter[tuple[object, ...]] = Counter()
    always: Counter[str] = Counter()
    for trial in range(300):
        off = [0.0, 1.0][trial % 2]
        Xd, yd = draw(labels, off)
        Xt, yt = draw(2000, off)
        tuned = fine_tune(fleet, Xd, yd)
        h, why = _holdout(fleet, Xd, yd)
        kept, _, warn = _keep(tuned, yd, h, why, _alarms(fleet, tuned, Xd))
        s = _balanced_accuracy(tuned.predict(Xt).astype(bool), yt == 1)
        f = _balanced_accuracy(fleet.predict(Xt).astype(bool), yt == 1)
        verdict = "worse" if s < f - 0.01 else "better" if s > f + 0.01 else "same"
        always[verdict] += 1
        if kept != "device":
            c[(off, "fleet")] += 1
            continue
        c[(off, "device", "warned" if warn else "silent", verdict)] += 1
    for k in sorted(c, key=str):
        print(k, c[k])
    print("fine-tuned model, had it always been saved:", dict(sorted(always.items())))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20,
         int(sys.argv[2]) if len(sys.argv) > 2 else 1)
