"""A Flower ``Grid`` that delivers messages to ClientApps in this process.

For experiments and benchmarks with many simulated devices where spawning a SuperNode per
device is too slow (Flower's own simulation engine needs Ray, which Edgewise does not
install). Everything above the transport is Flower's: the strategy's ``start`` round loop,
its sampling, its aggregation, and our ``ClientApp`` unchanged. Messages are serialised
and parsed on the way like on the wire, so each device works on its own copy.

>>> from edgewise.federated.client_app import app
>>> grid = InProcessGrid(app, [{"partition-id": i, "num-partitions": 2} for i in range(2)])
>>> len(list(grid.get_node_ids()))
2
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

__all__ = ["InProcessGrid"]

SERVER_NODE_ID = 1


class InProcessGrid(Grid):
    """Send each message to the matching in-process ClientApp and collect the replies.

    Parameters
    ----------
    client_app
        The ClientApp every node runs.
    node_configs
        One node config per simulated device (``partition-id``, ``num-partitions``, …).
    run_config
        The run config every node sees (``dataset``, ``local-epochs``, …).
    """

    def __init__(
        self,
        client_app: ClientApp,
        node_configs: list[Mapping[str, Any]],
        run_config: Mapping[str, Any] | None = None,
        run_id: int = 1,
    ) -> None:
        self.client_app = client_app
        self.run_id = run_id
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SERVER_NODE_ID
        TaskIdentity.task_id = 0
        self.contexts = {
            1000 + i: Context(run_id=run_id, node_id=1000 + i, node_config=dict(cfg),
                              state=RecordDict(), run_config=dict(run_config or {}))
            for i, cfg in enumerate(node_configs)
        }
        self.bytes_down = 0
        self.bytes_up = 0
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Any) -> None:
        """Runs are implicit in-process; nothing to do."""

    @property
    def run(self) -> Any:
        """An empty Flower ``Run`` carrying only the run id (Flower's legacy workflows,
        e.g. SecAgg+, read ``grid.run.run_id``)."""
        from flwr.supercore.run import Run

        return Run.create_empty(self.run_id)

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        """Build an instruction message for ``dst_node_id``."""
        return Message(content, dst_node_id=dst_node_id, message_type=message_type,
                       group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        """Every simulated device is always connected."""
        return list(self.contexts)

    def _deliver(self, msg: Message) -> Message:
        from flwr.common.serde import message_from_proto, message_to_proto

        node = msg.metadata.dst_node_id
        wire = message_to_proto(msg)
        self.bytes_down += wire.ByteSize()
        inbound = message_from_proto(wire)
        try:
            reply = self.client_app(inbound, self.contexts[node])
        except Exception as exc:  # a failing device is a failed reply, not a dead server
            reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"),
                            reply_to=inbound)
        wire = message_to_proto(reply)
        self.bytes_up += wire.ByteSize()
        return message_from_proto(wire)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Run each device now; keep its reply under a fresh id."""
        ids = []
        for msg in messages:
            mid = f"m{len(self._replies)}-{time.monotonic_ns()}"
            self._replies[mid] = self._deliver(msg)
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Hand back the replies of ``message_ids``."""
        return [self._replies.pop(m) for m in message_ids if m in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        """Push, then pull every reply."""
        return list(self.pull_messages(self.push_messages(messages)))
