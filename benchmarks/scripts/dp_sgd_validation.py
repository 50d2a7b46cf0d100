"""Choose the record-level DP-SGD batch and learning rate on a validation split of FD002.

The test engines are never read. Every fifth training engine (52 of 260) is held out; the
other 208 are dealt to 26 devices; each round every device trains the global model with
DP-SGD (Opacus, its noise calibrated to the budget from its own record count, as
``client_app.dp_sgd_budget`` does) and the server takes the example-weighted mean (FedAvg).
This is a plain loop over the same ``train_local``, not Flower, so that a grid of
configurations fits in minutes; ``edgewise bench federated`` then runs the chosen one through
Flower. Validation RMSE: 5 random truncation points per held-out engine, truth capped at 125.

Usage (from the repository root; one JSON line per configuration):

    PYTHONPATH=src python benchmarks/scripts/dp_sgd_validation.py \\
        --data ../shared/data/cmapss --eps 8 --batch 64 --lr 0.003 [--seed 0] [--rounds 20]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from edgewise.federated.data import load_cmapss
from edgewise.federated.model import build_model, rmse, train_local
from edgewise.federated.privacy import dp_sgd_epsilon, dp_sgd_noise_for_epsilon


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/cmapss")
    ap.add_argument("--eps", type=float, default=8.0, help="0: no DP")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.003)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--clients", type=int, default=26)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    data = load_cmapss(a.data)
    units = sorted(data.train)
    val = units[4::5]
    train = [u for u in units if u not in val]
    parts = [train[i::a.clients] for i in range(a.clients)]
    rng = np.random.default_rng(123)
    Xv, yv = data.pooled(val)
    idx, off = [], 0
    for u in val:
        n = len(data.train[u][1])
        idx += list(off + rng.integers(30, n, 5))
        off += n
    model = build_model("rul", data.n_features, seed=a.seed)
    pooled = [data.pooled(p) for p in parts]
    # each device calibrates its noise once, from its own record count
    zs = [dp_sgd_noise_for_epsilon(a.eps, a.batch, len(y), a.rounds, 1e-5) if a.eps > 0
          else 0.0 for _, y in pooled]
    epss = [dp_sgd_epsilon(z, a.batch, len(y), a.rounds, 1e-5) if z else 0.0
            for z, (_, y) in zip(zs, pooled, strict=True)]
    t0 = time.time()
    for r in range(a.rounds):
        states, weights = [], []
        for i, (X, y) in enumerate(pooled):
            z = zs[i]
            local = copy.deepcopy(model)
            train_local(local, X, y, epochs=1, batch_size=a.batch, lr=a.lr,
                        seed=a.seed * 1000 + r * 100 + i, dp_noise_multiplier=z,
                        dp_max_grad_norm=a.clip)
            states.append(local.state_dict())
            weights.append(len(y))
        w = np.asarray(weights, float) / sum(weights)
        model.load_state_dict({k: sum(wi * s[k] for wi, s in zip(w, states, strict=True))
                               for k in states[0]})
    print(json.dumps({
        "eps": a.eps, "batch": a.batch, "lr": a.lr, "clip": a.clip, "rounds": a.rounds,
        "seed": a.seed, "noise_multiplier_median": round(float(np.median(zs)), 3),
        "epsilon_max": round(max(epss), 3),
        "val_rmse": round(rmse(model, Xv[idx], yv[idx]), 2), "seconds": round(time.time() - t0),
    }))


if __name__ == "__main__":
    main()
