"""A Flower ``Grid`` that hands every call to the grid it wraps: the base of the wrappers
that change one thing (how a round's replies are collected, or what is made of them).

>>> from flwr.serverapp import Grid
>>> class Counting(DelegatingGrid):
...     calls = 0
...     def get_node_ids(self):
...         Counting.calls += 1
...         return super().get_node_ids()
>>> class Fake:
...     def get_node_ids(self): return [1, 2]
...     def close(self): return "closed"
>>> g = Counting(Fake())
>>> list(g.get_node_ids()), Counting.calls, g.close()
([1, 2], 1, 'closed')
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

__all__ = ["DelegatingGrid"]


class DelegatingGrid(Grid):
    """``grid``'s own behaviour for every method; subclasses override what they change.
    Anything else (``close()``, ``get_nodes()``, …) is looked up on ``grid``."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def __getattr__(self, name: str) -> Any:
        if name == "grid":  # not set yet (a copy): no recursion
            raise AttributeError(name)
        return getattr(self.grid, name)

    def set_run(self, run: Any) -> None:
        """``grid.set_run``."""
        self.grid.set_run(run)

    @property
    def run(self) -> Any:
        """``grid.run``."""
        return self.grid.run

    def create_message(self, content: Any, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        """``grid.create_message``."""
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        """``grid.get_node_ids``."""
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """``grid.push_messages``."""
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """``grid.pull_messages``."""
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        """``grid.send_and_receive``."""
        return self.grid.send_and_receive(messages, timeout=timeout)
