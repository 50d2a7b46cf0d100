"""The transport protocol: how messages arrive and how their acknowledgements leave.

A transport (embedded MQTT broker, external MQTT broker, HTTP) receives device
messages and passes them, in batches, to a :data:`Handler` that the gateway provides.
The handler commits them and returns one :class:`Outcome` per device touched; only then
does the transport tell the device (MQTT: a retained ``{"seq": w}`` on
``edgewise/<device>/ack``; dead letters on ``edgewise/<device>/deadletter``).

Topics are built by :func:`topic`:

>>> topic("pump-1", "telemetry"), topic("pump-1", "ack")
('edgewise/pump-1/telemetry', 'edgewise/pump-1/ack')
>>> device_of("edgewise/pump-1/telemetry")
'pump-1'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "TOPIC_PREFIX",
    "Handler",
    "Message",
    "Outcome",
    "Transport",
    "device_of",
    "topic",
]

TOPIC_PREFIX = "edgewise"


def topic(device_id: str, kind: str) -> str:
    """The MQTT topic of ``kind`` (``telemetry``, ``ack``, ``deadletter``) for a device."""
    return f"{TOPIC_PREFIX}/{device_id}/{kind}"


def device_of(topic_name: str) -> str | None:
    """The device id in an ``edgewise/<device>/<kind>`` topic, else ``None``."""
    parts = topic_name.split("/")
    if len(parts) == 3 and parts[0] == TOPIC_PREFIX and parts[1]:
        return parts[1]
    return None


@dataclass(slots=True)
class Message:
    """One message from a device, as the transport received it."""

    device_id: str
    payload: bytes
    received_ns: int = 0
    token: Any = None  # transport-private (e.g. the MQTT message to ack to the broker)


@dataclass(slots=True)
class Outcome:
    """What the handler did with one message.

    ``ack_seq`` is the device's seq watermark after the commit (``None`` when nothing was
    committed for it); ``deadletters`` are problem dicts ``{"reason", "detail", "field",
    "value", "index"}``, one per rejected part.
    """

    device_id: str
    ack_seq: int | None = None
    deadletters: list[dict[str, Any]] = field(default_factory=list)


#: Commits a batch of messages and returns one Outcome per message, in order. Runs on a
#: worker thread. Raises (e.g. StoreError) when the commit failed: nothing is acknowledged.
Handler = Callable[[list[Message]], list[Outcome]]


@runtime_checkable
class Transport(Protocol):
    """A running transport: started and stopped from an asyncio loop."""

    async def start(self) -> None:
        """Begin accepting messages."""
        ...

    async def stop(self) -> None:
        """Stop accepting, finish the batch in flight, release sockets."""
        ...
