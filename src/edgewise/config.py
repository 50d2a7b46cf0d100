"""Settings: CLI flags > ``EDGEWISE_*`` environment > defaults that work out of the box.

>>> s = Settings.load(env={"EDGEWISE_HTTP_PORT": "9000"}, data_dir="/tmp/ew")
>>> s.http_port, str(s.data_dir)
(9000, '/tmp/ew')
>>> Settings.load(env={"EDGEWISE_HTTP_PORT": "ten"})
Traceback (most recent call last):
...
edgewise.errors.ConfigError: Setting 'EDGEWISE_HTTP_PORT' has value 'ten'. Not a valid int.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgewise.errors import ConfigError

__all__ = ["Settings", "default_data_dir"]


def default_data_dir() -> Path:
    """Where Edgewise keeps its store, keys and registry when nothing else is said."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "edgewise"


@dataclass(frozen=True)
class Settings:
    """Every knob of a running Edgewise, with its default.

    Attributes mirror the ``EDGEWISE_<NAME>`` environment variables, e.g.
    ``EDGEWISE_DATA_DIR``, ``EDGEWISE_STORE``, ``EDGEWISE_MQTT``.
    """

    data_dir: Path = field(default_factory=default_data_dir)
    store: str = ""  # "" means duckdb:///<data_dir>/edgewise.duckdb
    host: str = "127.0.0.1"
    http_port: int = 8080
    mqtt: str = "embedded"  # or mqtt://host:port
    mqtt_port: int = 1884
    tls_cert: str = ""
    tls_key: str = ""
    max_payload_bytes: int = 256 * 1024  # telemetry, once decompressed
    max_body_bytes: int = 64 * 1024  # every other request body (JSON of the API)
    max_future_s: float = 300.0
    rate_limit_per_s: float = 2000.0  # readings per second per device, sustained
    rate_limit_burst: float = 20000.0
    throttle_after_failures: int = 100
    retention_days: int = 0  # 0 keeps everything
    alert_threshold: float = 0.9
    # the level detector each metric is scored with (two-state streams stay states):
    # one of edgewise.detect.LEVEL_DETECTORS
    detector: str = "context-likelihood"
    # a per-metric alarm on a stream read more than once a minute needs its reading this
    # many running standard deviations off the stream's running mean, and a stuck sensor
    # alarms (edgewise.gateway.fast_streams); 0 turns both off
    fast_stream_z: float = 3.0

    @property
    def store_url(self) -> str:
        """The store URL, defaulting to a DuckDB file under the data directory (made
        absolute: ``duckdb:///`` + a relative path would name a file under ``/``).

        >>> import os
        >>> Settings(data_dir=Path("ew")).store_url == (
        ...     f"duckdb:///{os.getcwd()}/ew/edgewise.duckdb")
        True
        """
        return self.store or f"duckdb:///{(self.data_dir / 'edgewise.duckdb').absolute()}"

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **flags: Any) -> Settings:
        """Build settings from flags (not None), then ``EDGEWISE_*`` env, then defaults."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = f"EDGEWISE_{f.name.upper()}"
            if flags.get(f.name) is not None:
                values[f.name] = _cast(f.name, flags[f.name], f.type, source=f"--{f.name}")
            elif key in env:
                values[f.name] = _cast(key, env[key], f.type, source=key)
        unknown = set(flags) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"Unknown setting(s): {', '.join(sorted(unknown))}.")
        return cls(**values)


def _cast(name: str, raw: Any, typ: Any, source: str) -> Any:
    typ = str(typ)
    try:
        if typ == "Path":  # absolute: a relative data dir in duckdb:///{dir} became root's
            return Path(raw).expanduser().absolute()
        if typ == "int":
            return int(raw)
        if typ == "float":
            return float(raw)
    except (TypeError, ValueError):
        kind = {"int": "int", "float": "float"}[typ]
        raise ConfigError(f"Setting {source!r} has value {raw!r}. Not a valid {kind}.") from None
    return str(raw)
