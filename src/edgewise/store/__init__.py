"""Storage: the Store protocol (``base.py``) and one file per backend."""

from __future__ import annotations

from edgewise.store.base import Alert, AppendResult, Conflict, DeviceSummary, Store

__all__ = ["Alert", "AppendResult", "Conflict", "DeviceSummary", "Store"]
