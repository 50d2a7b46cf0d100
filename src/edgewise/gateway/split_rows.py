"""Rows for the multivariate detector of a device that sends each metric in its own message.

The gateway's per-device detector (Hotelling T², :func:`edgewise.detect.default_multivariate`)
scores a *row*: the device's metrics of one reading. A device that publishes all of them
in one message gives the pipeline that row at one timestamp. Many devices publish one
metric per message instead (temperature, then vibration a few ms later): each timestamp
then holds one metric, and without this module the multivariate detector never runs for
them, so a break of the metrics' relationship (each metric in its own normal range) raised
no alert.

:class:`RowAssembler` puts such a device's row together again. The rule, per device:

* The device's **sampling interval** is the median of the last :data:`STEPS` steps between
  successive readings of one metric (each metric's own steps, pooled). The **tolerance** is
  half of it (at most :data:`MAX_TOLERANCE_S`): the readings of one sample are at most that
  far from the sample's first reading, those of the next sample are about one interval
  away. Until an interval is known (the first two readings of some metric) nothing is
  assembled.
* A one-metric reading joins the device's **open row** when it is within the tolerance of
  the row's first reading and its metric is not in the row yet; else the open row is
  closed and the reading opens the next one. So a row never holds two samples of one
  metric, nor readings an interval apart.
* The device's **expected metrics** are those it sent within the last :data:`RECENT`
  intervals. A row is **scored when it is complete**, when the metric that updates it makes
  it hold every expected metric (no wait: scored with the reading that completed it); a
  row that never completes (a reading lost) is scored when it is closed, on the metrics it
  holds (the detector scores a row on the metrics it has). A row of one metric is never
  scored. Each sample is scored and learned once, at the time of its newest reading.
* A row holding a reading the cleaner flagged as a spike is scored but not learned, as a
  single-message row.
* The cross-sensor gate (:mod:`edgewise.gateway.cross_sensor`) takes an assembled row as a
  row of one time: it learns it, and caps its T² score and the per-metric alarms of its
  readings where the device's sensors agree on the move (an operating change). An
  alarming reading of an open row is held until the row is scored, when that is in the
  same detection batch (else it alarms as it is: no alarm waits for a later batch).

Devices that send several metrics at one timestamp are not assembled: their rows go to the
multivariate detector as they are, exactly as before. A device whose multivariate detector
was made from such rows keeps that behaviour; its one-metric readings (a slower sensor
reporting on its own) are not assembled.

The state (one small :class:`_Device` per assembled device) is saved with the pipeline's
detector state under ``"mv_rows"``, keyed by device; a file without it (written before
this module) starts every device with no open row, which assembles again from its next
readings.

>>> a = RowAssembler()
>>> out = []
>>> for i in range(3):     # one sample a second, each metric in its own message, 3 ms apart
...     for j, m in enumerate(("temp", "vib")):
...         out += a.add("pump-1", m, (1000 + i) * 10**9 + j * 3_000_000, 20.0 + i + j)
>>> [(t // 10**6, row) for t, row, spiked in out]   # the first sample: no interval known yet
[(1001003, {'temp': 21.0, 'vib': 22.0}), (1002003, {'temp': 22.0, 'vib': 23.0})]
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["MAX_TOLERANCE_S", "RECENT", "STEPS", "RowAssembler"]

#: Steps between successive readings of a metric the sampling interval is the median of.
STEPS = 15
#: A metric is expected in a row while its last reading is at most this many sampling
#: intervals old.
RECENT = 3
#: The most the tolerance may be, in seconds: readings of one sample sent a minute or more
#: apart are not one reading.
MAX_TOLERANCE_S = 60.0


@dataclass
class _Device:
    """One device's assembly state: each metric's newest reading time, recent steps, the
    open row (metric -> value), its first and newest reading time, and whether a reading
    in it was a spike."""

    last: dict[str, int] = field(default_factory=dict)
    steps: list[int] = field(default_factory=list)
    row: dict[str, float] = field(default_factory=dict)
    first_ns: int = 0
    newest_ns: int = 0
    spiked: bool = False


class RowAssembler:
    """Assembles a device's one-metric readings into rows for its multivariate detector
    (the rule: see :mod:`edgewise.gateway.split_rows`).

    ``devices_`` is the state, saved with the pipeline's (device -> :class:`_Device`).

    >>> a = RowAssembler()
    >>> a.add("p", "t", 0, 1.0), a.add("p", "t", 10**9, 1.5)   # an interval of 1 s
    ([], [])
    >>> a.add("p", "v", 10**9 + 5_000_000, 7.0)                # joins t's row: complete
    [(1005000000, {'t': 1.5, 'v': 7.0}, False)]
    >>> a.tolerance_ns("p") / 1e9
    0.5
    """

    def __init__(self) -> None:
        self.devices_: dict[str, _Device] = {}

    def __contains__(self, device_id: object) -> bool:
        return device_id in self.devices_

    def tolerance_ns(self, device_id: str) -> int | None:
        """How far from a row's first reading a reading of ``device_id`` may be to join it:
        half its sampling interval (at most :data:`MAX_TOLERANCE_S`); ``None`` while no
        interval is known.

        >>> RowAssembler().tolerance_ns("nobody") is None
        True
        """
        interval = self.interval_ns(device_id)
        return None if interval is None else _tolerance(interval)

    def interval_ns(self, device_id: str) -> int | None:
        """The sampling interval of ``device_id``: the (lower) median of its last
        :data:`STEPS` steps between successive readings of one metric; ``None`` while it
        has none.

        >>> a = RowAssembler()
        >>> for t in (0, 10, 30, 40):
        ...     _ = a.add("p", "t", t * 10**9, 1.0)
        >>> a.interval_ns("p") / 1e9
        10.0
        """
        dev = self.devices_.get(device_id)
        if dev is None or not dev.steps:
            return None
        return sorted(dev.steps)[(len(dev.steps) - 1) // 2]

    def add(self, device_id: str, metric: str, ts_ns: int, value: float,
            spike: bool = False) -> list[tuple[int, dict[str, float], bool]]:
        """Take one reading of ``device_id`` that came alone at its time; return the rows it
        closes or completes, each as (its newest reading time, metric -> value, whether a
        reading in it was a spike): none or one (a row of one metric is never returned,
        so the reading that closes a row cannot complete the next).

        >>> a = RowAssembler()
        >>> a.add("p", "t", 0, 1.0, spike=True)
        []
        """
        dev = self.devices_.get(device_id)
        if dev is None:
            dev = self.devices_[device_id] = _Device()
        prev = dev.last.get(metric)
        if prev is None or ts_ns > prev:
            if prev is not None:
                dev.steps.append(ts_ns - prev)
                del dev.steps[:-STEPS]
            dev.last[metric] = ts_ns
        out: list[tuple[int, dict[str, float], bool]] = []
        interval = self.interval_ns(device_id)  # once a reading: a sort of the steps
        if interval is None:  # no interval yet: which readings are one sample is unknown
            return out
        tol = _tolerance(interval)
        if dev.row and (metric in dev.row or abs(ts_ns - dev.first_ns) > tol):
            out.extend(self._close(dev))
        if not dev.row:
            dev.first_ns = dev.newest_ns = ts_ns
        dev.row[metric] = value
        dev.newest_ns = max(dev.newest_ns, ts_ns)
        dev.spiked = dev.spiked or spike
        recent = ts_ns - RECENT * interval
        if len(dev.row) > 1 and all(m in dev.row for m, t in dev.last.items() if t >= recent):
            out.extend(self._close(dev))
        return out

    def forget(self, device_id: str) -> None:
        """Drop what is kept of ``device_id`` (a deleted device)."""
        self.devices_.pop(device_id, None)

    @staticmethod
    def _close(dev: _Device) -> list[tuple[int, dict[str, float], bool]]:
        """Close the open row of ``dev``: it, when it holds two metrics or more."""
        row, spiked = dev.row, dev.spiked
        dev.row, dev.spiked = {}, False
        return [(dev.newest_ns, row, spiked)] if len(row) > 1 else []


def _tolerance(interval_ns: int) -> int:
    """How far from a row's first reading a reading may be to join it, for a device
    sampled every ``interval_ns``: half of it, at most :data:`MAX_TOLERANCE_S`.

    >>> _tolerance(10**9), _tolerance(3600 * 10**9) // 10**9
    (500000000, 60)
    """
    return min(interval_ns // 2, int(MAX_TOLERANCE_S * 1e9))
