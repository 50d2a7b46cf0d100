"""Edgewise: machine learning on IoT sensor fleets, from raw telemetry to the edge.

The package tree follows the data flow (see ``DESIGN.md``): ``telemetry`` → ``transport``
→ ``quality`` → ``store`` → ``detect`` → ``alerts`` → ``server``; ``models`` learn from the
store and ``edge``/``registry`` ship them back out.
"""

from __future__ import annotations

from edgewise.errors import (
    AuthError,
    BrokerUnavailableError,
    ConfigError,
    EdgewiseError,
    ExportError,
    InvalidParameterError,
    NotFittedError,
    PayloadError,
    QualityError,
    RateLimitError,
    SignatureError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    ThrottledError,
)
from edgewise.telemetry import Reading, decode

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BrokerUnavailableError",
    "ConfigError",
    "EdgewiseError",
    "ExportError",
    "InvalidParameterError",
    "NotFittedError",
    "PayloadError",
    "QualityError",
    "RateLimitError",
    "Reading",
    "SignatureError",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "ThrottledError",
    "__version__",
    "decode",
]
