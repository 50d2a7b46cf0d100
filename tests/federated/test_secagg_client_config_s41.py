"""A SecAgg+ fit instruction the device cannot use is refused by name (the device sits the
round out, as after a dropout), not with a raw KeyError or a zip error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from flwr.common import FitIns, ndarrays_to_parameters
from flwr.compat.common import recorddict_compat as compat

from edgewise.errors import InvalidParameterError
from edgewise.federated import client_app
from edgewise.federated.inprocess import InProcessGrid
from edgewise.federated.model import build_model

NODE = {"partition-id": 0, "num-partitions": 3}
NORM = json.dumps({"mean": [0.0] * 6, "std": [1.0] * 6})


def _fit(config: dict, arrays: list[np.ndarray] | None = None):
    model = [t.numpy() for t in build_model("ae", 6).state_dict().values()]
    content = compat.fitins_to_recorddict(
        FitIns(ndarrays_to_parameters(model if arrays is None else arrays), config),
        keep_input=True)
    grid = InProcessGrid(client_app.app, [NODE], {})  # only builds the message
    msg = grid.create_message(content, "train", 1000, "1")
    return client_app.train(msg, Context(run_id=1, node_id=1000, node_config=NODE,
                                         state=RecordDict(), run_config={}))


@pytest.mark.parametrize(("config", "arrays", "named"), [
    ({"server-round": 2, "n-features": 6}, None, r"'normaliser' missing"),
    ({"server-round": 2, "normaliser": "{not json", "n-features": 6}, None,
     r"Expecting property name"),
    ({"server-round": 2, "normaliser": NORM}, None, r"'n-features' missing"),
    ({"server-round": 2, "normaliser": NORM, "n-features": 6}, [np.zeros(3, np.float32)],
     r"the model has 1 array\(s\) of shapes \[\(3,\)\]"),
])
def test_an_unusable_secagg_instruction_is_refused_by_name(config, arrays, named) -> None:
    """Check that a missing normaliser or width, a normaliser that is no JSON and a model
    of the wrong arrays each raise InvalidParameterError naming what is wrong and the round
    (before: KeyError: 'normaliser', a JSONDecodeError, or 'zip() argument 2 is shorter')."""
    with pytest.raises(InvalidParameterError, match=r"SecAgg\+ fit instruction \(round 2\) "
                                                    r"is unusable: .*" + named):
        _fit(config, arrays)
