"""The fleet's behaviour groups: :class:`~edgewise.models.cluster.BehaviourGroups` on the
fleet's recent history, fitted on demand and cached.

``GET /v1/fleet/groups?groups=N&reference=METRIC`` groups the devices by how they behaved in
the :data:`WINDOW_DAYS` days up to the fleet's newest reading, and answers each group with
its members and what sets it apart (in words and as numbers), the odd ones out with their
odd score and the feature that sets each furthest from its group, the devices and metrics
left out and why, the metrics used and the window. ``groups`` fixes the number of groups
(1 to :data:`MAX_GROUPS`; default: chosen, one group when nothing separates the fleet);
``reference`` compares each metric at the fleet's median level of that metric ("vibration at
the same speed"). A group needs at least :data:`MIN_GROUP_SIZE` devices, so ``groups`` may
be at most the devices with readings over that (4 devices: at most 2 groups).

Bounded: a fit reads at most :data:`MAX_DEVICES` devices (the most recently seen; the rest
are left out, named) and at most :data:`MAX_POINTS` points per device and metric: the store
averages the window into buckets of the smallest common step (1 s, 2 s, 5 s… 1 h…) that
cuts it into no more, one step for the whole fleet so that every device's profile is
measured alike (a full 7 days: 10-minute buckets): the typical device's span in the window,
or the span of a device with more readings than that, whichever is longer (:func:`_step`:
one stray old reading no longer coarsens the fleet's step). The whole fleet's window is read in
one query (``Store.query_many``: one scan of the readings, where a query per device
scanned them once per device) and profiled in numpy. Measured on 2 cores shared with
other runs (``edgewise bench groups --fleet-scale``, 8-metric pumps, 2 days at 1 min,
5-minute buckets, store read + fit, medians of 3; see ``benchmarks/results/groups.md``):
at load 5-8, 100 pumps 4.9 + 9.0 s (before: 34 + 157 s at the same load), 300 pumps
21 + 18 s (before: 189 + 323 s), 1,000 pumps (23M readings) 97 + 48 s; the cap of 300
keeps a request's fit well under a minute on such a machine (an HTTP request of minutes
meets clients' and proxies' timeouts); the read is now the larger part. Earlier, at load
about 4: 20 pumps of 8 metrics at 1 s, 10 minutes (the fresh demo) 0.6 + 2.4-3.1 s, 6
hours (3.5M readings, 30 s buckets) 0.9 + 2.3-2.5 s; 300 pumps 26 + 42 s uncapped with a
query per device, hence the old cap of 100.

Cached: the answer is kept per (groups, reference) in a :class:`~edgewise.server.fitting.
FitCache` for :data:`TTL_S` seconds, or until the fleet's set of devices (registered or
with data) or of those with readings in the window changes (a registered device that starts
sending, or one back after weeks away, was left out as "no readings yet" or "no readings in
the 7 days" until the TTL passed); failures are never cached. ``DELETE /v1/devices/{id}``
drops every cached grouping (:func:`forget_device`, wired by
:func:`~edgewise.server.app.create_app`). Two requests for one key fit once; at most
:data:`MAX_FITS` grouping fits run at once per app, and a request that has not had its turn
(its key's, then a fit slot) within :data:`FIT_WAIT_S` is a 429 with ``Retry-After``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from edgewise.errors import InvalidParameterError
from edgewise.models.cluster import MAX_MAGNITUDE, BehaviourGroups
from edgewise.models.profile import device_history, finite_metrics
from edgewise.server.deps import SecurityDep, StoreDep, Viewer
from edgewise.server.fitting import (
    FitCache,
    bucket_s,
    busy,
    deadline,
    fit_slot,
    thread_turn,
)
from edgewise.server.problems import Problem
from edgewise.server.query import format_ns

__all__ = ["FIT_WAIT_S", "MAX_DEVICES", "MAX_ENTRIES", "MAX_FITS", "MAX_GROUPS", "MAX_POINTS",
           "TTL_S", "WINDOW_DAYS", "GroupsCache", "cache_of", "forget_device", "router"]

router = APIRouter(tags=["devices"])

#: Days of history the groups are fitted on, up to the fleet's newest reading.
WINDOW_DAYS = 7
#: Points per device and metric a fit reads at most: a denser window is averaged per bucket.
MAX_POINTS = 1_000
#: Devices a fit reads at most (the most recently seen); the others are left out, named.
MAX_DEVICES = 300
#: Most groups a request may ask for (``groups``); also the most tried when choosing.
MAX_GROUPS = 8
#: Seconds a fitted grouping answers before it is refitted, even with the same devices.
TTL_S = 600.0
#: Groupings kept per app, one per (groups, reference) asked (the least recent goes first).
MAX_ENTRIES = 32
#: Grouping fits one app runs at once (each takes a CPU and a threadpool thread, seconds).
MAX_FITS = 1
#: Seconds a request waits for the fit slot before it is answered 429 with Retry-After.
FIT_WAIT_S = 30.0
#: Devices a group needs; a smaller one's devices are odd ones out (BehaviourGroups').
MIN_GROUP_SIZE = 2
_NS_PER_DAY = 86_400 * 10**9

Key = tuple[int | None, str | None]


@dataclass
class _Entry:
    answer: dict[str, Any]
    devices: frozenset[str]  # the fleet's devices when it was fitted
    fitted_at: float  # time.monotonic()
    recent: frozenset[str] = frozenset()  # those with readings in its window then


class GroupsCache(FitCache[Key, _Entry]):
    """Fitted groupings per (groups, reference); thread-safe.

    >>> c = GroupsCache()
    >>> c.put((None, None), _Entry({}, frozenset({"a", "b"}), 0.0))
    >>> c.keys(), c.forget(), c.keys()
    ([(None, None)], 1, [])
    """

    def __init__(self, max_entries: int = MAX_ENTRIES, max_fits: int = MAX_FITS) -> None:
        super().__init__(max_entries, max_fits)

    def forget(self) -> int:
        """Drop every cached grouping (each holds every device); return how many."""
        return self.drop(lambda key: True)


def cache_of(app: Any) -> GroupsCache:
    """The app's groups cache (made on first use)."""
    cache = getattr(app.state, "groupings", None)
    if cache is None:
        cache = app.state.groupings = GroupsCache()
    return cache  # type: ignore[no-any-return]


def forget_device(app: Any, device_id: str) -> int:
    """Drop the cached groupings once ``device_id`` is deleted (each one holds it, or
    lists it as left out); return how many."""
    return cache_of(app).forget()


@dataclass
class _Fleet:
    """What a fit reads: the devices and why the others are left out."""

    devices: frozenset[str]  # every device registered or with data
    chosen: list[Any]  # the store's DeviceSummary of each device the fit reads, by id
    left_out: list[dict[str, str]]
    metrics: list[str]  # every metric the chosen devices send
    start_ns: int
    end_ns: int
    recent: frozenset[str] = frozenset()  # those with readings in the window (cap not applied)


def _fleet(security: Any, store: Any) -> _Fleet:
    """The devices with readings in the window (at most :data:`MAX_DEVICES`, the most
    recently seen), and each other device with why it is left out."""
    seen = [s for s in store.devices() if s.last_ns is not None]
    registered = {rec.id for rec in security.list_devices()}
    ids = frozenset(registered | {s.device_id for s in seen})
    left = [{"device": d, "reason": "no readings yet"}
            for d in sorted(registered - {s.device_id for s in seen})]
    end = max((s.last_ns for s in seen), default=0)
    start = end - WINDOW_DAYS * _NS_PER_DAY
    recent = sorted((s for s in seen if s.last_ns >= start),
                    key=lambda s: (-s.last_ns, s.device_id))
    left += [{"device": s.device_id, "reason": f"no readings in the {WINDOW_DAYS} days up to "
              f"the fleet's newest reading (its last: {format_ns(s.last_ns)})"}
             for s in seen if s.last_ns < start]
    left += [{"device": s.device_id, "reason": f"over the cap of {MAX_DEVICES} devices a "
              "fit reads (the most recently seen are read)"} for s in recent[MAX_DEVICES:]]
    chosen = sorted(recent[:MAX_DEVICES], key=lambda s: s.device_id)
    metrics = sorted({m for s in chosen for m in s.metrics})
    return _Fleet(ids, chosen, sorted(left, key=lambda d: d["device"]), metrics, start, end,
                  frozenset(s.device_id for s in recent))


def _step(fleet: _Fleet) -> int:
    """The bucket (s) the fleet's window is averaged to: the step that cuts the fleet's
    typical (median) device's span in the window into at most :data:`MAX_POINTS`, or a
    coarser one where a device with more readings than that needs it to keep within them.
    A device with no more readings than that has no more points at any step: before, the
    oldest first reading alone set the step, so one stray reading 6 days old put a fleet of
    3 hours at 1 minute into 10-minute buckets (18 points per metric, not 180)."""
    spans = [(fleet.end_ns - max(s.first_ns, fleet.start_ns)) / 1e9 for s in fleet.chosen]
    dense = [span for s, span in zip(fleet.chosen, spans, strict=True)
             if s.readings > MAX_POINTS]
    return max(bucket_s(span, MAX_POINTS) for span in [float(np.median(spans)), *dense])


def _histories(store: Any, fleet: _Fleet) -> tuple[dict[str, Any], int, list[dict[str, str]]]:
    """Each chosen device's window as a history, the bucket (s) it was averaged to, and the
    devices left out for having no finite reading there."""
    step = _step(fleet)
    # one query for the whole fleet: each per-device query scanned the readings again
    many = store.query_many([s.device_id for s in fleet.chosen], fleet.start_ns,
                            fleet.end_ns + 1, step * 10**9,
                            (MAX_POINTS + 1) * max(1, *(len(s.metrics) for s in fleet.chosen)))
    out, left = {}, []
    for s in fleet.chosen:
        frame = device_history(many.pop(s.device_id, []))
        if len(frame) and finite_metrics(frame):
            out[s.device_id] = frame
        else:
            left.append({"device": s.device_id, "reason": "no finite reading in the window"})
    return out, step, left


def _most_groups(n: int) -> int:
    """The most groups ``n`` devices make when each needs :data:`MIN_GROUP_SIZE`.

    >>> _most_groups(4), _most_groups(5)
    (2, 2)
    """
    return max(1, n // MIN_GROUP_SIZE)


def _problem(exc: InvalidParameterError, groups: int | None, reference: str | None,
             n: int) -> Problem:
    """BehaviourGroups' refusal as the API's problem, naming the request's field."""
    if exc.field == "n_groups":
        # the fit's own count: the devices it groups, less those it left out (sending none
        # of the metrics the others share)
        left = dict(getattr(exc, "left_out_devices", None) or {})
        n = int(getattr(exc, "n_devices", n))
        most = int(getattr(exc, "most_groups", _most_groups(n)))
        which = (f"the {n} devices grouped ({len(left)} more with readings in the last "
                 f"{WINDOW_DAYS} days left out: {', '.join(sorted(left)[:10])}, sending none "
                 "of the metrics the others share)" if left else
                 f"the {n} devices with readings in the last {WINDOW_DAYS} days")
        return Problem(422, "Too many groups", f"Cannot make {groups} groups of {which}: a "
                       f"group needs at least {MIN_GROUP_SIZE} devices, so at most {most} can "
                       "be made.", field="groups", value=groups,
                       allowed=f"a whole number from 1 to {most} (the {n} devices "
                       f"{'grouped' if left else 'with readings'}, at least {MIN_GROUP_SIZE} "
                       "per group), or none to have it chosen",
                       reason="too_many_groups")
    if exc.field == "reference":
        return Problem(422, "Reference not shared", str(exc), field="reference",
                       value=reference, allowed="a metric at least half the devices send, "
                       "or none", reason="reference_not_shared")
    return Problem(422, "Cannot group the fleet", str(exc), field="devices", value=exc.value,
                   allowed="devices that share at least one metric", reason="no_common_metric")


def _answer(model: BehaviourGroups, fleet: _Fleet, left: list[dict[str, str]], step: int,
            hist: dict[str, Any], fit_s: float) -> dict[str, Any]:
    summary = model.summary()
    odd = [{"device": o["device"], "nearest_group": o["nearest_group"],
            "odd_score": o["odd_score"], "reason": o["why"]} for o in summary["odd_ones_out"]]
    groups = [{"id": g["group"], "size": g["size"], "members": g["members"],
               "odd_ones_out": [o["device"] for o in odd if o["nearest_group"] == g["group"]],
               "traits": g["traits"]} for g in summary["groups"]]
    # min, not index[0]: a history's index need not be sorted
    starts = [int(f.index.min().value) for f in hist.values()]
    return {
        "n_groups": summary["n_groups"], "chosen": model.n_groups is None,
        # why fewer groups were made than `groups` asked for (None: as many)
        "fewer_groups": summary["fewer_groups"],
        "n_devices": summary["n_devices"], "groups": groups, "odd_ones_out": odd,
        "odd_cut": round(float(model.odd_cut_), 3),
        # the fleet's devices not read, and those the fit left out (no used metric)
        "left_out": {"devices": sorted(left + [
                         {"device": d, "reason": why}
                         for d, why in summary["left_out_devices"].items()],
                         key=lambda d: d["device"]),
                     "metrics": [{"metric": m, "reason": why}
                                 for m, why in summary["left_out"].items()]},
        "missing": summary["missing"],
        # readings past +-1e160 (a 'no value' sentinel such as 1.7e308) the fit set aside
        "set_aside": {"max_magnitude": MAX_MAGNITUDE, "readings": summary["set_aside"]},
        "metrics": summary["metrics"],
        "reference": model.reference,
        "window": {"days": WINDOW_DAYS, "start": format_ns(min(starts)),
                   "end": format_ns(fleet.end_ns), "bucket_s": step,
                   "max_points": MAX_POINTS, "max_devices": MAX_DEVICES},
        "fitted_at": format_ns(time.time_ns()), "fit_s": round(fit_s, 3),
        "ttl_s": TTL_S,
    }


def _busy() -> Problem:
    return busy("Groups busy", "A grouping of the fleet is being fitted", FIT_WAIT_S,
                "groups_busy", 5)


def _fit(store: Any, fleet: _Fleet, groups: int | None, reference: str | None,
         cache: GroupsCache, until: float) -> dict[str, Any]:
    """Read the window and fit, holding a fit slot (reading is half the cost) taken by
    ``until`` (the request's :func:`~edgewise.server.fitting.deadline`); raise a 422
    problem when the fleet cannot be grouped."""
    with fit_slot(cache.fits, until, _busy):
        t0 = time.perf_counter()
        hist, step, empty = _histories(store, fleet) if fleet.chosen else ({}, 1, [])
        left = fleet.left_out + empty
        if len(hist) < 2:
            raise Problem(
                422, "Too few devices to group",
                f"Grouping needs at least 2 devices with readings in the {WINDOW_DAYS} days "
                f"up to the fleet's newest reading; {len(hist)} has them"
                + (f" ({', '.join(hist)})" if hist else "")
                + (f"; left out: {', '.join(d['device'] for d in left[:10])}" if left else "")
                + ".", field="devices", value=len(hist),
                allowed=f"at least 2 devices with readings in the last {WINDOW_DAYS} days",
                reason="too_few_devices")
        if groups is not None and groups > _most_groups(len(hist)):
            raise _problem(InvalidParameterError(field="n_groups", value=groups), groups,
                           reference, len(hist))
        model = BehaviourGroups(n_groups=groups, max_groups=MAX_GROUPS, reference=reference,
                                min_group_size=MIN_GROUP_SIZE, random_state=0)
        try:
            model.fit(hist)
        except InvalidParameterError as exc:
            raise _problem(exc, groups, reference, len(hist)) from None
        return _answer(model, fleet, left, step, hist, time.perf_counter() - t0)


def _fresh(entry: _Entry | None, fleet: _Fleet) -> bool:
    """Whether a cached grouping still answers: younger than the TTL, with the same devices
    and the same of them with readings in the window."""
    return (entry is not None and time.monotonic() - entry.fitted_at < TTL_S
            and entry.devices == fleet.devices and entry.recent == fleet.recent)


def _groups(request: Request, store: Any, security: Any, groups: int | None,
            reference: str | None, until: float | None = None) -> dict[str, Any]:
    """The grouping, from the cache or fitted; waiting for the key's turn and the fit slot
    until ``until`` (a :func:`~edgewise.server.fitting.deadline`; default: ``FIT_WAIT_S``
    from now)."""
    cache = cache_of(request.app)
    generation = cache.generation
    fleet = _fleet(security, store)
    if reference is not None and reference not in fleet.metrics:
        shown = ", ".join(repr(m) for m in fleet.metrics[:50]) or "none: no device has readings"
        raise Problem(422, "Unknown metric",
                      f"No device read for grouping sends metric {reference!r}; the fleet's "
                      f"metrics: {shown}.", field="reference", value=reference,
                      allowed=f"one of the fleet's metrics ({shown}), or none",
                      reason="unknown_metric")
    key = (groups, reference)
    entry = cache.get(key)
    if _fresh(entry, fleet):
        return {**entry.answer, "cached": True}  # type: ignore[union-attr]
    # one fit per key at a time; the others use its result. The wait for the key's turn and
    # then the fit slot ends at one deadline: a 429 after FIT_WAIT_S, however many wait before
    until = deadline(FIT_WAIT_S) if until is None else until
    with cache.key_turn(key, until, _busy):
        entry = cache.get(key)
        if _fresh(entry, fleet):
            return {**entry.answer, "cached": True}  # type: ignore[union-attr]
        answer = _fit(store, fleet, groups, reference, cache, until)
        if fleet.devices == _fleet(security, store).devices:  # none added or deleted meanwhile
            cache.put(key, _Entry(answer, fleet.devices, time.monotonic(), fleet.recent),
                      generation)
    return {**answer, "cached": False}


@router.get(
    "/v1/fleet/groups",
    summary="Devices grouped by behaviour; what sets each group apart; odd ones out (viewer)",
    description=f"Groups the devices with readings in the {WINDOW_DAYS} days up to the fleet's "
    "newest reading by how they behave (per metric: level, spread, trend, lag-1 "
    "autocorrelation, daily cycle; correlations between metrics; with `reference`, each "
    "metric's level at the fleet's median of that metric). Answers `fewer_groups` (why fewer "
    "groups were made than `groups` asked for; null when as many), `groups` (each with `id`, "
    "`members`, `odd_ones_out` nearest it and up to three `traits`: `text` in words, "
    "`feature`, `group` and `fleet` medians and `effect` in scaled units), `odd_ones_out` "
    "(`device`, `nearest_group`, `odd_score`, `reason`; flagged above `odd_cut`), `left_out` "
    "devices and metrics with why, `missing` metrics per device, `set_aside` (readings "
    "past +-`max_magnitude`, 1e160, such as a 'no value' sentinel 1.7e308, counted per "
    "device and metric under `readings`: not grouped by; a metric with no other reading is "
    "`missing`), `metrics`, `window` "
    f"(`bucket_s`: the window is averaged per bucket to at most {MAX_POINTS:,} points per "
    f"device and metric; at most {MAX_DEVICES} devices, the most recently seen), "
    f"`fitted_at` and `cached`. A fit takes seconds; it is kept per (groups, reference) for "
    f"{int(TTL_S)} s, or until a device is added or deleted, or one starts or stops having "
    "readings in the window.",
    responses={422: {"description": "A bad parameter ('field' names it: 'groups' out of "
                     f"1..{MAX_GROUPS} or above the devices with readings over "
                     f"{MIN_GROUP_SIZE}, the least a group needs (reason "
                     "'too_many_groups'); 'reference' not a metric of the fleet (reason "
                     "'unknown_metric') or sent by too few devices (reason "
                     "'reference_not_shared')), or a fleet that cannot be grouped (field "
                     "'devices': fewer than 2 devices with readings in the window, reason "
                     "'too_few_devices'; no metric in common, reason 'no_common_metric')."},
               429: {"description": f"A grouping was being fitted for {FIT_WAIT_S:g} s "
                     "(reason 'groups_busy'); retry after Retry-After."}},
)
async def fleet_groups(
    who: Viewer, store: StoreDep, security: SecurityDep, request: Request,
    groups: Annotated[int | None, Query(ge=1, le=MAX_GROUPS, description=(
        "Number of groups; default: chosen (1 when nothing separates the fleet)."))] = None,
    reference: Annotated[str | None, Query(min_length=1, max_length=256, description=(
        "A metric at whose fleet-median level the others are compared, e.g. speed_rpm."))]
    = None,
) -> dict[str, Any]:
    """The work runs in the threadpool (a fit never blocks the event loop), once one of the
    route's thread places is free (:func:`~edgewise.server.fitting.thread_turn`)."""
    until = deadline(FIT_WAIT_S)  # the wait for a thread place, the key's turn and the slot
    async with thread_turn(cache_of(request.app).threads, until, _busy):
        return await run_in_threadpool(_groups, request, store, security, groups, reference,
                                       until)
