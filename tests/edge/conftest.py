"""Real data for the export tests: a NAB series and C-MAPSS FD001 windows."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.bench.edge import cmapss_fd001_windows, nab_values


@pytest.fixture(scope="session")
def nab_series(shared_data):
    return nab_values(shared_data)


@pytest.fixture(scope="session")
def fd001(shared_data):
    Xtr, ytr, Xte, yte = cmapss_fd001_windows(shared_data)
    rng = np.random.default_rng(0)
    tr = rng.choice(len(Xtr), 4000, replace=False)  # keep training quick on a shared machine
    return Xtr[tr], ytr[tr], Xte, yte
