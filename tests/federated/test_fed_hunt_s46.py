"""Hunt s46: federated learning attacked with broken clients and bad inputs.

1. ``federate client --superlink`` without a port (or with a URL scheme, or a port out of
   range) started the SuperNode, which found out only then: a page of Flower's log, its
   exit code 600 and a traceback of the SuperExec beside it, 12 s later, status 1.
2. ``personalise`` (and :func:`edgewise.federated.model.rmse`) with RUL targets given as a
   column ``(n, 1)`` broadcast them against the ``(n,)`` predictions into an ``n x n``
   table: the fine-tuned model's held-back RMSE came out 40.5 where it is 1.5, and the
   choice of which model to keep was made on those numbers; a global model of the other
   kind raised torch's page of missing keys and size mismatches.
3. one device sending its normaliser statistics as an array of strings ended the whole run
   in numpy's ``ValueError: could not convert string to float`` (no device named, nothing
   trained); a complex array was taken with its imaginary part dropped.
4. under SecAgg+ one device of four dropping out (or sending a reply the screen refuses)
   before it had shared its keys halted every round, and the run failed: Flower 1.41 asked
   the other devices for shares of its key, which none had (``KeyError`` from each).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from edgewise.errors import InvalidParameterError
from edgewise.federated import client_app as ca
from edgewise.federated.inprocess import InProcessGrid
from edgewise.federated.model import build_model, rmse
from edgewise.federated.personalise import personalise
from edgewise.federated.server_app import run_federated
from tests.federated.test_cli_params import edgewise_in_process

torch.set_num_threads(1)


@pytest.mark.parametrize("superlink", ["bad", "http://192.0.2.1:9092", "192.0.2.1:99999",
                                       "192.0.2.1:0", ":9092", "192.0.2.1:port"])
def test_a_superlink_that_is_no_host_and_port_is_one_line(
        superlink: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, err = edgewise_in_process(
        ["federate", "client", "--superlink", superlink, "--data-dir", str(tmp_path)],
        monkeypatch, capsys)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --superlink"), err
    assert repr(superlink) in lines[0]
    assert not (tmp_path / "federated").exists()  # nothing made before the refusal


# -- 2. RUL targets as a column are one target per row -------------------------------------

def test_personalise_reads_column_targets_as_one_per_row() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)).astype(np.float32)
    y = (40 * X[:, 0] + 60).astype(np.float32)
    g = build_model("rul", 3, seed=0).state_dict()
    flat = personalise(g, "rul", X[:150], y[:150], X[150:], y[150:], epochs=30, lr=0.01)
    column = personalise(g, "rul", X[:150], y[:150, None], X[150:], y[150:, None], epochs=30,
                         lr=0.01)
    assert flat["personal_rmse"] < 5  # the fine-tuned model fits this line
    # 63.43 and 40.49 before: every prediction against every target
    assert column["global_rmse"] == pytest.approx(flat["global_rmse"], rel=1e-6)
    assert column["personal_rmse"] == pytest.approx(flat["personal_rmse"], rel=1e-6)
    assert column["kept"] == flat["kept"] == "personal"


def test_rmse_refuses_targets_of_another_count() -> None:
    m = build_model("rul", 3, seed=0)
    with pytest.raises(InvalidParameterError, match="one target per row of X"):
        rmse(m, np.zeros((4, 3), np.float32), np.zeros((2, 2), np.float32).T[:1])


@pytest.mark.parametrize(("built", "asked"), [("ae", "rul"), ("rul", "ae")])
def test_personalise_names_a_global_model_of_the_other_kind(built: str, asked: str) -> None:
    X = np.zeros((10, 3), np.float32)
    g = build_model(built, 3, seed=0).state_dict()
    with pytest.raises(InvalidParameterError, match=f"kind='{asked}'") as exc:
        personalise(g, asked, X, np.zeros(10), X, np.zeros(10))  # RuntimeError before
    assert exc.value.field == "kind"


# -- 3. normaliser statistics that are no real numbers are left out, naming the device ------

def _stats_app(array: str, make: Any) -> ClientApp:
    """The real ClientApp, except that node 1000 replaces one normaliser statistics array
    with ``make(honest array)``."""
    app = ClientApp()

    @app.train()
    def _train(msg: Message, ctx: Any) -> Message:
        reply = ca.train(msg, ctx)
        if (not ctx.node_config.get("bad") or reply.has_error()
                or msg.content["config"].get("phase", "fit") != "stats"):
            return reply
        arrays = {k: v.numpy() for k, v in reply.content["arrays"].items()}
        arrays[array] = make(arrays[array])
        content = RecordDict(dict(reply.content))
        content["arrays"] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
        return Message(content, reply_to=msg)

    return app


@pytest.mark.parametrize(("array", "make", "dtype"), [
    ("count", lambda a: np.full(a.shape, "abc"), "<U3"),  # ValueError ended the run
    ("sum", lambda a: a.astype(np.complex128) * (1 + 1e6j), "complex128"),  # taken, real part
    ("count", lambda a: np.ones(a.shape, dtype=bool), "bool"),
])
def test_statistics_of_another_dtype_leave_the_device_out(array: str, make: Any,
                                                          dtype: str) -> None:
    n = 4
    grid = InProcessGrid(_stats_app(array, make),
                         [{"partition-id": i, "num-partitions": n, "bad": i == 0}
                          for i in range(n)], {"dataset": "pump"})
    res = run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=n, rounds=1,
                        strategy="trimmed")
    assert [(e["node_id"], e["reason"]) for e in res.rejected] == [(1000, "malformed-stats")]
    assert f"{array!r}: {dtype!r}" in res.rejected[0]["detail"]
    assert np.isfinite(res.normaliser.mean).all() and (res.normaliser.std > 0).all()


# -- 4. SecAgg+ survives a device that leaves before sharing its keys ----------------------

def _secagg_run(stage: str, how: str = "drop") -> Any:
    """One SecAgg+ round of 4 pump devices, no DP, device 1000 dropping out at ``stage``
    (``how="drop"``: it raises) or sending a public key that is no bytes at setup
    (``how="bad-key"``)."""

    def tamper(msg: Message, ctx: Any, call_next: Any) -> Message:
        cfg = msg.content.config_records.get(RECORD_KEY_CONFIGS)
        if not ctx.node_config.get("bad") or cfg is None or str(cfg.get(Key.STAGE)) != stage:
            return call_next(msg, ctx)
        if how == "drop":
            raise RuntimeError(f"device dropped out at {stage}")
        reply = call_next(msg, ctx)
        reply.content.config_records[RECORD_KEY_CONFIGS][Key.PUBLIC_KEY_1] = "not a key"
        return reply

    app = ClientApp(mods=[tamper, ca.secagg_when_asked])
    app.train()(ca.train)
    n = 4
    grid = InProcessGrid(app, [{"partition-id": i, "num-partitions": n, "bad": i == 0}
                               for i in range(n)], {"dataset": "pump", "num-server-rounds": 1})
    return run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=n,
                         rounds=1, strategy="fedavg", robust=False, secagg=True)


def _flat(res: Any) -> np.ndarray:
    return np.concatenate([v.numpy().ravel() for v in res.arrays.values()])


@pytest.mark.parametrize(("stage", "how"), [("setup", "drop"), ("share_keys", "drop"),
                                            ("setup", "bad-key")])
def test_secagg_survives_a_device_gone_before_sharing_its_keys(stage: str, how: str) -> None:
    # a device gone after sharing its keys: Flower unmasks the other three's sum already
    later = _flat(_secagg_run("collect_masked_vectors"))
    res = _secagg_run(stage, how)  # FederatedRunError "produced no aggregate" before
    assert res.rounds_done == 1 and res.skipped_rounds == []
    # the same three devices' mean, up to SecAgg+'s quantisation (the four's is 0.02 away)
    assert np.abs(_flat(res) - later).max() < 1e-3
    bad = [(e["node_id"], e["stage"]) for e in res.rejected if e["reason"] == "malformed"]
    assert bad == ([(1000, "setup")] if how == "bad-key" else [])
