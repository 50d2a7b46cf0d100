"""Edgewise exceptions.

Every public exception derives from :class:`EdgewiseError` and, where it fits, from
the builtin a caller would already catch. Each carries its context as attributes,
not only in the text, so the HTTP layer can build a problem body, MQTT can put it on
the dead-letter message and the CLI can print it on one line::

    * EdgewiseError
      x InvalidParameterError (ValueError, TypeError)  a constructor or function arg
      x ConfigError (ValueError)                       a setting from flags or EDGEWISE_* env
      x PayloadError (ValueError)                      a reading from a device failed validation
      x QualityError (ValueError)                      a series cannot be cleaned as asked
      x NotFittedError (ValueError, AttributeError)    a model used before fit()
      x AuthError (PermissionError)                    unknown device, bad secret/token/role
        x ThrottledError                               too many wrong secrets in a row
      x RateLimitError                                 a device sends faster than allowed
      x StoreError (RuntimeError)                      the storage backend failed
        x StoreCorruptError                            cannot open as it is; run repair
        x StoreLockedError                             another process holds the file
      x SignatureError                                 unsigned, tampered, stale or foreign
      x BrokerUnavailableError (ConnectionError)       an external MQTT broker did not accept us
      x ExportError (ValueError)                       model cannot go to that format
      x FederatedRunError (RuntimeError)               a federated run trained nothing
      x PrivacyBudgetError (PermissionError)           a round would pass a device's ε limit

``BrokerUnavailableError`` is raised by :mod:`edgewise.transport.client`. The last two live
with the federated code (``edgewise.federated.server_app`` and
``edgewise.federated.ledger``), which needs the optional ``federated`` extra.
"""

from __future__ import annotations

import reprlib
from typing import Any

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
    "SignatureError",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "ThrottledError",
]


class EdgewiseError(Exception):
    """Base of every Edgewise exception."""


class InvalidParameterError(EdgewiseError, ValueError, TypeError):
    """A constructor or function argument is out of its allowed range or type.

    ``field`` names the argument at fault and ``value`` is what it was given, where the
    raiser says (``None`` otherwise): a caller tells errors apart by them, never by the
    wording of the message.

    >>> e = InvalidParameterError("Group name 'a/b' is not valid.", field="groups",
    ...                           value="a/b")
    >>> (e.field, e.value, str(e))
    ('groups', 'a/b', "Group name 'a/b' is not valid.")
    >>> InvalidParameterError("Bad.").field is None
    True
    """

    def __init__(self, *args: object, field: str | None = None, value: Any = None) -> None:
        super().__init__(*args)
        self.field = field
        self.value = value


class ConfigError(EdgewiseError, ValueError):
    """A setting (CLI flag or ``EDGEWISE_*`` variable) has a value that cannot be used."""



def folder_not_made(what: str, path: object, exc: OSError, remedy: str) -> ConfigError:
    """The error for a folder ``what`` at ``path`` whose ``mkdir`` raised ``exc``: a file
    there or above, a parent this user may not write.

    >>> str(folder_not_made("The data directory", "/d", FileExistsError(17, "x", "/d"), "x."))
    "The data directory '/d' cannot be made: it is a file ('/d'); x."
    """
    why = "it is a file" if isinstance(exc, FileExistsError) else exc.strerror or exc
    return ConfigError(f"{what} {str(path)!r} cannot be made: {why} "
                       f"({str(exc.filename or path)!r}); {remedy}")

class PayloadError(EdgewiseError, ValueError):
    """A reading from a device failed validation.

    Parameters
    ----------
    device_id
        The device the payload came from (``None`` when unknown).
    field
        The JSON field at fault, e.g. ``"ts"`` or ``"metrics.temp_c"``.
    value
        The offending value, as received.
    allowed
        What would have been accepted.
    reason
        A short machine-readable reason (``"bad_type"``, ``"future_ts"``, …) used as a
        counter label.
    index
        Position of the record inside a batch, when the payload was a batch.

    Examples
    --------
    >>> e = PayloadError(device_id="pump-7", field="ts", value="2024-13-01",
    ...                  allowed="an RFC 3339 UTC timestamp or epoch seconds",
    ...                  reason="bad_ts")
    >>> print(e)  # doctest: +NORMALIZE_WHITESPACE
    Reading from device 'pump-7': field 'ts' must be an RFC 3339 UTC timestamp or epoch
    seconds. Got '2024-13-01' instead.
    """

    def __init__(
        self,
        *,
        field: str,
        value: Any,
        allowed: str,
        reason: str = "invalid",
        device_id: str | None = None,
        index: int | None = None,
    ) -> None:
        self.device_id = device_id
        self.field = field
        self.value = value
        self.allowed = allowed
        self.reason = reason
        self.index = index
        plain = isinstance(value, str | int | float | bool | None)
        shown = value if plain else type(value).__name__
        if isinstance(shown, str) and len(shown) > 80:
            shown = shown[:77] + "..."
        who = f"Reading from device {device_id!r}" if device_id else "Reading"
        where = f" (record {index})" if index is not None else ""
        super().__init__(f"{who}{where}: field {field!r} must be {allowed}. Got {shown!r} instead.")

    def to_problem(self) -> dict[str, Any]:
        """Return the RFC 9457 problem fields describing this error.

        >>> PayloadError(field="v", value="x", allowed="a number", reason="bad_type").to_problem()["reason"]
        'bad_type'
        """  # noqa: E501
        value = self.value
        if not isinstance(value, str | int | float | bool | None):
            value = _shown_value(value)
        elif isinstance(value, float) and value != value:  # NaN is not JSON
            value = "NaN"
        elif isinstance(value, float) and value in (float("inf"), float("-inf")):
            value = str(value)
        return {
            "field": self.field,
            "value": value,
            "allowed": self.allowed,
            "reason": self.reason,
            "index": self.index,
            "detail": str(self),
        }


_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxdict, _SHOWN.maxlist, _SHOWN.maxtuple = 3, 4, 4, 4
_SHOWN.maxset = _SHOWN.maxfrozenset = _SHOWN.maxdeque = _SHOWN.maxarray = 4
_SHOWN.maxstring, _SHOWN.maxlong, _SHOWN.maxother = 40, 40, 40
#: The longest text :func:`_shown_value` gives.
_MAX_SHOWN_CHARS = 200


def _shown_value(value: Any) -> str:
    """A bounded summary of a value that is no JSON scalar (an object or array as a device
    sent it), as a problem body shows it: at most ``_MAX_SHOWN_CHARS`` characters, three
    levels deep and four items a level at most. A value nested hundreds of levels deep
    (``json.loads`` builds one from a few kilobytes) is never walked whole: ``repr`` of it
    raised ``RecursionError`` in the request handler, after the message was handled.

    >>> _shown_value({"a": [1, 2, 3, 4, 5, 6]})
    "{'a': [1, 2, 3, 4, ...]}"
    >>> deep = 1
    >>> for _ in range(100_000):
    ...     deep = {"a": deep}
    >>> _shown_value(deep)
    "{'a': {'a': {'a': {...}}}}"
    """
    try:
        text = _SHOWN.repr(value)
    except Exception:  # a repr that fails (an integer past 4300 digits, a broken class)
        text = f"<{type(value).__name__}>"
    if len(text) > _MAX_SHOWN_CHARS:
        text = text[:_MAX_SHOWN_CHARS - 3] + "..."
    return text


class QualityError(EdgewiseError, ValueError):
    """A series cannot be cleaned or checked as asked (bad limits, unsorted input, …)."""


class NotFittedError(EdgewiseError, ValueError, AttributeError):
    """A batch model was used before ``fit()``; call ``fit(X, y)`` first."""


class AuthError(EdgewiseError, PermissionError):
    """Authentication or authorisation failed. The message never contains a secret."""


class ThrottledError(AuthError):
    """Too many consecutive wrong secrets for one device; attempts are refused for a while."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimitError(EdgewiseError):
    """A device sends readings faster than its rate limit allows."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StoreError(EdgewiseError, RuntimeError):
    """The storage backend failed; nothing was acknowledged for the batch at hand."""


class StoreCorruptError(StoreError):
    """The store cannot be opened as it is (e.g. a WAL that does not replay).

    The message names the file and the ``edgewise repair`` command; nothing is deleted.
    """


class StoreLockedError(StoreError):
    """Another process (its ``pid``, ``"unknown"`` when the backend does not say) holds the
    store's file (``path``, where known), e.g. a running gateway holding its DuckDB file.

    >>> StoreLockedError("in use", pid="42").pid
    '42'
    """

    def __init__(self, message: str, pid: str = "unknown", path: str | None = None) -> None:
        super().__init__(message)
        self.pid = pid
        self.path = path


class SignatureError(EdgewiseError):
    """A signed artefact failed verification: tampered, unknown key, stale or foreign; or the
    registry cannot sign (``reason="key_lost"``: its issued key's private half is gone)."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class BrokerUnavailableError(EdgewiseError, ConnectionError):
    """An external MQTT broker did not accept the connection in time: nothing answers at
    its address, it refused the credentials, or it was too slow. ``host`` and ``port`` say
    which broker; the message never holds a password.

    >>> e = BrokerUnavailableError("MQTT broker b:1883 did not answer.", host="b", port=1883)
    >>> (e.host, e.port, isinstance(e, ConnectionError))
    ('b', 1883, True)
    """

    def __init__(self, message: str, *, host: str, port: int) -> None:
        super().__init__(message)
        self.host = host
        self.port = port


class ExportError(EdgewiseError, ValueError):
    """A model cannot be exported in the requested format or dtype."""
