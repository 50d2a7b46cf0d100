"""A device's privacy ledger: the record-level DP-SGD it has really run, round by round.

A device's own limit (``edgewise federate client --max-epsilon``, node config
``max-dp-epsilon``) must not depend on what the server declares: a server that announces
one round and then runs four would otherwise make a device calibrate its noise for one
round and spend four times. So before each training round the device writes the round's
mechanism (noise multiplier, Opacus's sampling rate, steps) into its ledger, composes the
whole ledger with the RDP accountant (:func:`edgewise.federated.privacy.composed_epsilon`,
tighter than adding up each round's ε) and refuses the round, without training, when that
would take it past its limit. The entry is written before training, so a round that
crashes half-way still counts (conservative).

Where it lives:

* ``edgewise federate client`` keeps it in
  ``<data-dir>/federated/privacy-ledger-<partition>.json``, the same file whatever
  ``--num-partitions`` is (``--data-dir`` or ``EDGEWISE_DATA_DIR``; ``--privacy-ledger
  PATH`` chooses another file) and hands the path to its SuperNode as node config
  ``privacy-ledger``. The limit holds over every round in that file, across runs and
  restarts: DP losses of the same records add up whichever server asked. A fresh budget
  (new data) needs a new file.
* A ClientApp without a ``privacy-ledger`` path (an in-process grid, a SuperNode started
  by hand) keeps the ledger in its Flower ``Context.state``: for that run only.

The file is plain JSON, one entry per round (``run``, ``server_round``,
``noise_multiplier``, ``sampling_rate``, ``steps``, ``records``, ``batch_size``,
``epsilon_round``: that round alone, ``epsilon_total``: the whole ledger composed, at
``delta``; ``time`` in UTC), written atomically under a lock.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "ledger.json"
>>> ledger = PrivacyLedger(path)
>>> e = LedgerEntry(run="7", server_round=1, noise_multiplier=1.0, sampling_rate=0.05,
...                 steps=20, records=600, batch_size=32)
>>> round(ledger.spend(e, max_epsilon=8.0), 3)
2.481
>>> ledger.spend(e, max_epsilon=2.5)  # the same round again would compose to 2.97
Traceback (most recent call last):
...
edgewise.federated.ledger.PrivacyBudgetError: Privacy ledger ...: round 1 of run 7 would bring this device's record-level epsilon to 2.97 (delta 1e-05), past its limit --max-epsilon 2.5 (1 earlier round spent 2.481); refusing to train. A fresh budget needs a new ledger file.
>>> len(PrivacyLedger(path).entries())
1
"""  # noqa: E501

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgewise._private import replace_atomically
from edgewise.errors import EdgewiseError, InvalidParameterError
from edgewise.federated.privacy import (
    Mechanism,
    composed_epsilon,
    countable_mechanism,
    device_level_epsilon,
    reported_epsilon,
    worst_case_epsilon,
)

__all__ = ["DEVICE_DELTA", "LEDGER_FORMAT", "RUN_LEDGER_FORMAT", "LedgerEntry",
           "PrivacyBudgetError", "PrivacyLedger", "RunLedger"]

LEDGER_FORMAT = "edgewise-privacy-ledger/1"
RUN_LEDGER_FORMAT = "edgewise-run-privacy-ledger/1"
#: The δ a device checks its own ε limit at, whatever δ the server's run config sets (a
#: server could otherwise shrink the ε a device sees by raising δ).
DEVICE_DELTA = 1e-5
#: The ``Context.state`` record the ledger lives in when no file is given.
STATE_KEY = "privacy-ledger"


class PrivacyBudgetError(EdgewiseError, PermissionError):
    """A device refuses a training round: it would spend more than its own ε limit (or its
    ledger cannot be read, so what it spent is unknown)."""


@dataclass(frozen=True)
class LedgerEntry:
    """One training round a device took part in: the DP-SGD mechanism it ran."""

    run: str
    server_round: int
    noise_multiplier: float
    sampling_rate: float
    steps: int
    records: int
    batch_size: int
    epsilon_round: float | None = None
    epsilon_total: float | None = None
    delta: float | None = None
    #: ``"dp-sgd"`` (a training round) or ``"stats"`` (the normaliser statistics' Gaussian
    #: release, :mod:`edgewise.federated.stats_privacy`: one step at sampling rate 1)
    kind: str = "dp-sgd"
    time: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                           time.gmtime()))

    def mechanism(self) -> Mechanism:
        """``(noise_multiplier, sampling_rate, steps)``, the accountant's history form."""
        return (self.noise_multiplier, self.sampling_rate, self.steps)


class PrivacyLedger:
    """The rounds of DP-SGD one device has run, kept in ``path`` (JSON) or, without one, in
    a Flower ``Context.state`` ``state`` (for one run).

    Parameters
    ----------
    path
        The JSON file (created on first spend; its folder too).
    state
        A Flower ``RecordDict`` (``Context.state``) to keep the ledger in when ``path`` is
        ``None``.
    """

    def __init__(self, path: str | Path | None = None, state: Any = None) -> None:
        self.path = Path(path) if path else None
        self.state = state
        self._memory: list[dict[str, Any]] = []

    @property
    def where(self) -> str:
        """Where the ledger lives, for messages."""
        return str(self.path) if self.path else "(in this run's Context.state)"

    # -- storage -------------------------------------------------------------------------
    def _read(self) -> list[dict[str, Any]]:
        if self.path is None:
            if self.state is None:
                return list(self._memory)
            from flwr.app import ConfigRecord

            rec = self.state.config_records.get(STATE_KEY, ConfigRecord())
            return list(json.loads(str(rec.get("rounds", "[]"))))
        if not self.path.exists():
            return []
        try:
            doc = json.loads(self.path.read_text())
            if doc.get("format") != LEDGER_FORMAT or not isinstance(doc.get("rounds"), list):
                raise ValueError(f"not an {LEDGER_FORMAT} document")
            rounds = list(doc["rounds"])
            for i, entry in enumerate(rounds):
                why = _entry_problem(entry)
                if why:
                    raise ValueError(f"entry {i + 1} of {len(rounds)}, "
                                     f"{json.dumps(entry)[:200]}: {why}")
            return rounds
        except (OSError, ValueError, AttributeError) as exc:
            raise PrivacyBudgetError(
                f"Privacy ledger {self.path} cannot be read ({exc}); what this device has "
                "spent is unknown, so it trains no more. Repair the file or move it away "
                "(a new ledger starts a fresh budget)."
            ) from None

    def _write(self, rounds: list[dict[str, Any]]) -> None:
        if self.path is None:
            if self.state is None:
                self._memory = list(rounds)
                return
            from flwr.app import ConfigRecord

            self.state.config_records[STATE_KEY] = ConfigRecord({"rounds": json.dumps(rounds)})
            return
        _write_rounds(self.path, LEDGER_FORMAT, rounds)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the ledger file (POSIX ``flock``) while inside."""
        if self.path is None:
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            try:
                import fcntl
            except ImportError:  # not POSIX: no lock; one SuperNode per ledger
                yield
                return
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- queries -------------------------------------------------------------------------
    def entries(self) -> list[LedgerEntry]:
        """Every round recorded, oldest first."""
        return _entries(self._read())

    def history(self, *, run: str | None = None, exclude_run: str | None = None,
                kind: str | None = None) -> list[Mechanism]:
        """The accountant history of the ledger (of one ``run``, or without one; of one
        ``kind`` of entry, or of all)."""
        return [e.mechanism() for e in self.entries()
                if (run is None or e.run == run) and (exclude_run is None or e.run != exclude_run)
                and (kind is None or e.kind == kind)]

    def epsilon(self, delta: float = DEVICE_DELTA, *, run: str | None = None) -> float:
        """The ε of everything recorded (or of one ``run``), composed, at ``delta``;
        infinite when an entry holds a mechanism no accountant can count (a NaN noise
        multiplier written by an older version): what it spent is unknown.

        >>> led = PrivacyLedger()
        >>> led._write([{"run": "1", "server_round": 0, "noise_multiplier": float("nan"),
        ...              "sampling_rate": 1.0, "steps": 1, "records": 9, "batch_size": 0}])
        >>> led.epsilon()
        inf
        """
        return _composed(self.history(run=run), delta)

    def check_countable(self, *, max_epsilon: float, act: str = "train",
                        entries: list[LedgerEntry] | None = None) -> None:
        """Raise :class:`PrivacyBudgetError` when the ledger (or ``entries`` of it) holds
        an entry no accountant can count
        (:func:`~edgewise.federated.privacy.countable_mechanism`: a NaN or infinite noise
        multiplier, written before such entries were refused): what this device has spent
        is unknown, so it counts as infinite, past any ``max_epsilon``."""
        bad = _uncountable(self.entries() if entries is None else entries)
        if bad:
            raise PrivacyBudgetError(
                f"Privacy ledger {self.where} holds {bad}, which no accountant can count: "
                "what this device has spent is unknown, so it counts as infinite, past its "
                f"limit --max-epsilon {max_epsilon:g}; refusing to {act}. Repair or remove "
                "that entry, or start a fresh budget with a new ledger file.")

    # -- spending ------------------------------------------------------------------------
    def spend(self, entry: LedgerEntry, *, max_epsilon: float = 0.0,
              delta: float = DEVICE_DELTA) -> float:
        """Record ``entry`` and return the ledger's composed ε with it, at ``delta``.

        With ``max_epsilon`` > 0, raise :class:`PrivacyBudgetError` and record nothing when
        the composed ε would exceed it. Check and record happen under one lock, so two
        processes sharing a ledger cannot both pass the check on the same budget.

        An ``entry`` whose mechanism no accountant can count (a NaN or infinite noise
        multiplier, a rate outside (0, 1]) raises
        :class:`~edgewise.errors.InvalidParameterError` and is not recorded; a ledger that
        already holds one counts as spent without bound (ε infinite), so with a limit
        nothing more is spent (:meth:`check_countable`).
        """
        if not countable_mechanism(*entry.mechanism()):
            z, q, steps = entry.mechanism()
            raise InvalidParameterError(
                f"Privacy ledger {self.where}: refusing to record {entry.kind} of run "
                f"{entry.run} (round {entry.server_round}) with noise multiplier {z!r}, "
                f"sampling rate {q!r}, steps {steps!r}: a noise multiplier must be a finite "
                "number > 0, a sampling rate in (0, 1] and steps a finite number >= 0.")
        if math.isnan(max_epsilon) or max_epsilon < 0:
            raise InvalidParameterError(
                f"The device's limit max_epsilon must be a number >= 0 (0: none). Got "
                f"{max_epsilon!r} instead.")
        what, act = ((f"the normaliser statistics of run {entry.run}", "send them")
                     if entry.kind == "stats" else
                     (f"round {entry.server_round} of run {entry.run}", "train"))
        with self._locked():
            rounds = self._read()
            if max_epsilon > 0:
                self.check_countable(max_epsilon=max_epsilon, act=act,
                                     entries=_entries(rounds))
            before = [e.mechanism() for e in _entries(rounds)]
            total = _composed([*before, entry.mechanism()], delta)
            # "not <=": a NaN total (which passed "total > limit") is refused too
            if max_epsilon > 0 and not total <= max_epsilon * (1 + 1e-9):
                spent = _composed(before, delta)
                n = len(before)
                raise PrivacyBudgetError(
                    f"Privacy ledger {self.where}: {what} would bring this device's "
                    f"record-level epsilon to {total:.4g} (delta {delta:g}), past its limit "
                    f"--max-epsilon {max_epsilon:g} ({n} earlier round{'' if n == 1 else 's'} "
                    f"spent {spent:.4g}); refusing to {act}. A fresh budget needs a new "
                    "ledger file."
                )
            own = composed_epsilon([entry.mechanism()], delta)
            rounds.append(asdict(LedgerEntry(**{
                **asdict(entry), "epsilon_round": own, "epsilon_total": total, "delta": delta})))
            self._write(rounds)
            return total


def _devices(nodes: list[str]) -> str:
    """Node ids in words ("?" is a device the server cannot name, under SecAgg+)."""
    named = [n for n in nodes if n != "?"]
    unnamed = len(nodes) - len(named)
    parts = ([f"node(s) {', '.join(named)}"] if named else []) + (
        [f"{unnamed} device(s) under SecAgg+"] if unnamed else [])
    return " and ".join(parts)


def _composed(history: list[Mechanism], delta: float) -> float:
    """:func:`~edgewise.federated.privacy.composed_epsilon` of a device ledger's history,
    infinite when one entry is no mechanism an accountant can count (never smaller than
    what was spent: a NaN entry composed to ε 0, and every later limit check passed)."""
    if any(not countable_mechanism(*m) for m in history):
        return math.inf
    eps = composed_epsilon(history, delta)
    return math.inf if math.isnan(eps) else eps


def _uncountable(entries: list[LedgerEntry]) -> str:
    """The entries no accountant can count, in words ("" when none)."""
    bad = [e for e in entries if not countable_mechanism(*e.mechanism())]
    return "; ".join(f"the {e.kind} entry of run {e.run} round {e.server_round} with noise "
                     f"multiplier {e.noise_multiplier!r}, sampling rate {e.sampling_rate!r}, "
                     f"steps {e.steps!r}" for e in bad[:3]) + (
        f" (and {len(bad) - 3} more)" if len(bad) > 3 else "")


#: What every device ledger entry must hold (the others have defaults).
_REQUIRED = tuple(name for name, f in LedgerEntry.__dataclass_fields__.items()
                  if f.default is MISSING and f.default_factory is MISSING)


def _entry_problem(entry: Any) -> str | None:
    """What makes ``entry`` no device ledger entry, or ``None``: an entry that is no object,
    or lacks a field of :class:`LedgerEntry` without a default, must refuse the ledger in
    one line, not end the device's every round (and ``federate client``) in a
    ``TypeError``. A mechanism of the wrong type or value is left to
    :func:`~edgewise.federated.privacy.countable_mechanism` (counted as infinite).

    >>> _entry_problem({"run": "1", "server_round": 1})
    "'noise_multiplier', 'sampling_rate', 'steps', 'records', 'batch_size' missing"
    >>> _entry_problem(3)
    'not an object'
    """
    if not isinstance(entry, dict):
        return "not an object"
    missing = [name for name in _REQUIRED if name not in entry]
    if missing:
        return f"{', '.join(map(repr, missing))} missing"
    return None


def _entries(rounds: list[dict[str, Any]]) -> list[LedgerEntry]:
    """The stored rounds as :class:`LedgerEntry` (fields they do not know are passed over)."""
    names = set(LedgerEntry.__dataclass_fields__)
    return [LedgerEntry(**{k: v for k, v in r.items() if k in names}) for r in rounds]


def _write_rounds(path: Path, fmt: str, rounds: list[dict[str, Any]]) -> None:
    """Write a ledger document (``fmt``, ``rounds``) to ``path`` atomically and durably: a
    reader sees the old file or the new one, never half of one, and a power loss after a
    round is recorded does not forget the ε it spent (an unsynced rename could come back as
    the old ledger, leaving the budget that much larger)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, json.dumps({"format": fmt, "rounds": rounds}, indent=1).encode(),
                       mode=0o666)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _mechanisms_problem(devices: Any) -> str | None:
    """What is wrong with an entry's ``devices`` (``{node: [z, q, steps]}``), or ``None``."""
    if not isinstance(devices, dict):
        return f"'devices' is {devices!r}, not an object of node: [noise, rate, steps]"
    for node, mech in devices.items():
        if not (isinstance(mech, list) and len(mech) == 3 and _is_number(mech[0])
                and _is_number(mech[1]) and _is_int(mech[2])):
            return (f"device {node}'s mechanism is {mech!r}, not [noise multiplier, "
                    "sampling rate, steps]")
    return None


def _run_entry_problem(entry: Any) -> str | None:
    """What makes ``entry`` no :class:`RunLedger` entry (its fields of its ``kind``, each
    of its type), or ``None``: one that could not be counted must refuse the ledger, not
    end a resume in a ``KeyError`` (``{"round": 1, "kind": "device"}`` did).

    >>> _run_entry_problem({"round": 1, "kind": "aggregated", "segment": 0}) is None
    True
    >>> _run_entry_problem({"round": 1, "kind": "device"})
    "'noise_multiplier' is missing or not a number"
    >>> _run_entry_problem({"round": "one", "kind": "aggregated", "segment": 0})
    "'round' is 'one', not a round number >= 0"
    """
    if not isinstance(entry, dict):
        return "not an object"
    kind = entry.get("kind")
    if kind not in ("record", "device", "aggregated", "stats"):
        return f"'kind' is {kind!r}, not one of record, device, aggregated, stats"
    r = entry.get("round")
    if not _is_int(r) or r < 0:
        return f"'round' is {r!r}, not a round number >= 0"
    if "segment" in entry and not (_is_int(entry["segment"]) and entry["segment"] >= 0):
        return f"'segment' is {entry['segment']!r}, not a number >= 0"
    if kind in ("record", "stats"):
        why = _mechanisms_problem(entry.get("devices"))
        if why:
            return why
    numbers = {"device": ("noise_multiplier",),
               "stats": ("noise_multiplier", "epsilon")}.get(str(kind), ())
    for key in numbers:
        if not _is_number(entry.get(key)):
            return f"{key!r} is missing or not a number"
    if "reported" in entry and not _is_number(entry["reported"]):
        return f"'reported' is {entry['reported']!r}, not a number"
    if kind == "device":
        if not (_is_int(entry.get("num_devices")) and entry["num_devices"] >= 1):
            return f"'num_devices' is {entry.get('num_devices')!r}, not a count >= 1"
        m = entry.get("sample_size")
        if m is not None and not (_is_int(m) and m >= 1):
            return f"'sample_size' is {m!r}, not a count >= 1 (or null)"
    if kind == "aggregated":
        nodes = entry.get("without_dp_sgd", [])
        if not isinstance(nodes, list):
            return f"'without_dp_sgd' is {nodes!r}, not a list of node ids"
        k = entry.get("unnamed_without_dp_sgd", 0)
        if not (_is_int(k) and k >= 0):
            return f"'unnamed_without_dp_sgd' is {k!r}, not a count >= 0"
    if kind == "stats" and entry.get("bounds") is not None \
            and not isinstance(entry["bounds"], dict):
        return f"'bounds' is {entry['bounds']!r}, not an object (or null)"
    return None


class RunLedger:
    """The server's account of what a federated run really spent, round by round.

    Two kinds of entry, each written (atomically, to ``path`` when given) at the moment the
    privacy is spent, before anything that depends on it leaves the server:

    * ``{"round": r, "kind": "record", "segment": s, "devices": {node: [z, q, steps]},
      "reported": e}`` when round ``r``'s training replies arrive: the DP-SGD each replying
      device says it ran that round (the server has seen those updates, whatever it then
      does with them) and the largest ε a device reported for its run so far. ``segment``
      counts the server runs (a resume starts a new one: its devices' ids may differ);
    * ``{"round": r, "kind": "device", "noise_multiplier": z, "num_devices": n,
      "sample_size": m}`` when round ``r``'s update was aggregated with server-side noise,
      before the new global model is sent to any device or checkpointed;
    * ``{"round": r, "kind": "aggregated", "segment": s}`` when round ``r``'s update was
      aggregated at all (with or without noise), right after: a device-level ε covers the
      model only if every aggregated round has a ``device`` entry
      (:meth:`device_epsilon`, :meth:`resume_conflict`); ``"without_dp_sgd": [node, ...]``
      (``"unnamed_without_dp_sgd": k`` under SecAgg+) names the updates aggregated that
      stated no DP-SGD mechanism, and a record-level ε covers the model only if no round
      has any (:meth:`record_epsilon`);
    * ``{"round": 0, "kind": "stats", "segment": s, "devices": {node: [z, 1.0, 1]},
      "noise_multiplier": z, "epsilon": e, "bounds": {...}}`` when the devices' normaliser
      statistics arrive through DP (:mod:`edgewise.federated.stats_privacy`): each device's
      Gaussian release, composed with its DP-SGD in the record-level ε
      (:meth:`record_epsilon`, :meth:`record_rdp`); ``e`` is that release's ε alone.

    A round that was skipped (nothing aggregated) adds no device entry, and a run stopped
    after a round was aggregated but before its checkpoint keeps that round: a run resumed
    from the checkpoint composes with every round in the file, so it neither forgets nor
    counts twice what was spent.

    >>> led = RunLedger()
    >>> led.record_round(1, {"7": (1.0, 0.05, 20)}, reported=2.4)
    >>> led.device_round(1, noise_multiplier=2.0, num_devices=3, sample_size=3)
    >>> led.device_rounds(), round(led.device_epsilon(1e-5), 3)
    (1, 4.729)
    >>> round(led.record_epsilon(1e-5), 3), led.record_rounds()
    (2.481, 1)
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None
        self.rounds: list[dict[str, Any]] = []
        self.segment = 0

    def load(self) -> RunLedger:
        """Read ``path`` (nothing when it does not exist); return ``self``."""
        if self.path is None or not self.path.exists():
            return self
        try:
            doc = json.loads(self.path.read_text())
            if not isinstance(doc, dict) or doc.get("format") != RUN_LEDGER_FORMAT \
                    or not isinstance(doc.get("rounds"), list):
                raise ValueError(f"not an {RUN_LEDGER_FORMAT} document")
            rounds = list(doc["rounds"])
            for i, entry in enumerate(rounds):
                why = _run_entry_problem(entry)
                if why:
                    raise ValueError(f"entry {i + 1} of {len(rounds)}, "
                                     f"{json.dumps(entry)[:200]}: {why}")
            self.rounds = rounds
            self.segment = 1 + max((int(r.get("segment", 0)) for r in self.rounds),
                                   default=-1)
        except (OSError, ValueError, AttributeError) as exc:
            raise PrivacyBudgetError(
                f"Run privacy ledger {self.path} cannot be read ({exc}); what the run's "
                "earlier rounds spent is unknown, so it cannot resume. Start afresh."
            ) from None
        return self

    def reset(self) -> None:
        """Forget every round (a fresh run) and remove ``path``."""
        self.rounds = []
        self.segment = 0
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def _add(self, entry: dict[str, Any]) -> None:
        self.rounds.append(entry)
        if self.path is None:
            return
        _write_rounds(self.path, RUN_LEDGER_FORMAT, self.rounds)

    def record_round(self, server_round: int, devices: dict[str, Mechanism],
                     reported: float = 0.0) -> None:
        """In round ``server_round`` each device of ``devices`` (by node id) ran its DP-SGD
        mechanism; the largest ε a device reported was ``reported`` (a NaN or one below 0
        counts as infinite: no ε smaller than what the devices spent may come of it).

        >>> led = RunLedger()
        >>> led.record_round(1, {}, float("nan"))
        >>> led.record_epsilon(1e-5)
        inf
        """
        reported = reported_epsilon(reported)
        if devices or reported > 0:
            self._add({"round": int(server_round), "kind": "record", "segment": self.segment,
                       "devices": {str(k): [float(z), float(q), int(n)]
                                   for k, (z, q, n) in devices.items()},
                       "reported": float(reported)})

    def device_round(self, server_round: int, *, noise_multiplier: float, num_devices: int,
                     sample_size: int | None) -> None:
        """Round ``server_round`` was aggregated with device-level noise ``noise_multiplier``."""
        self._add({"round": int(server_round), "kind": "device",
                   "noise_multiplier": float(noise_multiplier), "num_devices": int(num_devices),
                   "sample_size": None if sample_size is None else int(sample_size)})

    def stats_round(self, devices: dict[str, Mechanism], *, noise_multiplier: float,
                    epsilon: float, bounds: dict[str, Any] | None = None) -> None:
        """The devices of ``devices`` (by node id) released their normaliser statistics
        through the Gaussian mechanism of ``noise_multiplier`` (ε ``epsilon`` alone), with
        readings clipped to ``bounds``; nothing is recorded when no device did."""
        if devices:
            self._add({"round": 0, "kind": "stats", "segment": self.segment,
                       "devices": {str(k): [float(z), float(q), int(n)]
                                   for k, (z, q, n) in devices.items()},
                       "noise_multiplier": float(noise_multiplier), "epsilon": float(epsilon),
                       "bounds": bounds})

    def stats_release(self) -> dict[str, Any] | None:
        """The run's DP release of the normaliser statistics (its ``stats`` entry: noise
        multiplier, ε alone, bounds), or ``None`` when they were not sent through DP.

        >>> led = RunLedger()
        >>> led.stats_release() is None
        True
        >>> led.stats_round({"7": (4.97, 1.0, 1)}, noise_multiplier=4.97, epsilon=0.8)
        >>> led.stats_release()["noise_multiplier"]
        4.97
        """
        found = self._of("stats")
        return dict(found[-1]) if found else None

    def aggregated_round(self, server_round: int, *, without_dp_sgd: Iterable[str] = (),
                         unnamed_without_dp_sgd: int = 0) -> None:
        """Round ``server_round``'s update was aggregated into the global model;
        ``without_dp_sgd`` are the devices (node ids) whose update went into it stating no
        DP-SGD mechanism, ``unnamed_without_dp_sgd`` how many more such updates whose
        devices the server cannot name (SecAgg+): no record-level ε covers a model such an
        update moved (:meth:`rounds_without_dp_sgd`).

        >>> led = RunLedger()
        >>> led.record_round(1, {"7": (1.0, 0.05, 20)}, reported=2.4)
        >>> led.aggregated_round(1, without_dp_sgd=["9"])
        >>> led.rounds_without_dp_sgd()
        {1: ['9']}
        """
        entry: dict[str, Any] = {"round": int(server_round), "kind": "aggregated",
                                 "segment": self.segment}
        nodes = sorted(str(n) for n in without_dp_sgd)
        if nodes:
            entry["without_dp_sgd"] = nodes
        if unnamed_without_dp_sgd > 0:
            entry["unnamed_without_dp_sgd"] = int(unnamed_without_dp_sgd)
        self._add(entry)

    def rounds_without_dp_sgd(self) -> dict[int, list[str]]:
        """The rounds whose aggregated update took in an update trained without DP-SGD,
        with those devices (node ids; an unnamed one, under SecAgg+, as ``"?"``)."""
        out: dict[int, list[str]] = {}
        for r in self._of("aggregated"):
            nodes = [str(n) for n in r.get("without_dp_sgd", [])] + \
                ["?"] * int(r.get("unnamed_without_dp_sgd", 0))
            if nodes:
                out.setdefault(int(r["round"]), []).extend(nodes)
        return out

    def finished_rounds(self, done: int = 0) -> set[int]:
        """The rounds whose update went into the global model: those with an
        ``aggregated`` or ``device`` entry. A ledger written before ``aggregated`` entries
        existed cannot tell a skipped round from a finished one, so rounds ``1..done`` (the
        checkpoint's) all count as finished there."""
        rounds = {int(r["round"]) for r in self.rounds if r.get("kind") in ("aggregated",
                                                                             "device")}
        if not self._of("aggregated"):
            rounds |= set(range(1, done + 1))
        return rounds

    def unrecorded_rounds(self, done: int) -> list[int]:
        """The rounds of ``1..done`` (a checkpoint's) of which the ledger records nothing
        (no ``record``, ``device`` or ``aggregated`` entry). Each entry is written, durably,
        before the checkpoint of its round, so a private run's checkpoint never holds a
        round its ledger lacks; one that does was paired with a ledger older than itself
        (restored from another time, copied from another run) or cut short, and what those
        rounds spent is unknown.

        >>> led = RunLedger()
        >>> led.record_round(1, {"7": (1.0, 0.05, 20)})
        >>> led.aggregated_round(1)
        >>> led.unrecorded_rounds(3)
        [2, 3]
        """
        seen = {int(r["round"]) for r in self.rounds
                if r.get("kind") in ("record", "device", "aggregated")}
        return [r for r in range(1, int(done) + 1) if r not in seen]

    def resume_conflict(self, *, noise_multiplier: float, num_devices: int,
                        sample_size: int | None, done: int = 0,
                        dp_sgd: bool = False) -> str | None:
        """Why a run resumed after round ``done`` with these device-level DP settings
        (``noise_multiplier`` 0: none) could not state one device-level ε for its model,
        or ``None`` when it can: every finished round aggregated with the same noise, fleet
        and sample, or none with any. With ``dp_sgd`` (the resumed run asks for
        record-level DP-SGD) every finished round must also have carried DP-SGD updates.

        >>> led = RunLedger()
        >>> led.aggregated_round(1)
        >>> print(led.resume_conflict(noise_multiplier=1.0, num_devices=3, sample_size=3))
        round(s) [1] were aggregated without device-level DP noise (--dp-noise 0), so no device-level epsilon covers the model; resume with --dp-noise 0, or start afresh without --resume.
        """  # noqa: E501
        finished = self.finished_rounds(done)
        if dp_sgd:
            bare = sorted((finished - {int(r["round"]) for r in self._of("record")})
                          | set(self.rounds_without_dp_sgd()))
            if bare:
                return (f"round(s) {bare} were trained without record-level DP-SGD (by "
                        "every device, or by one whose update was aggregated), so no "
                        "record-level epsilon covers the model; resume with --dp-epsilon 0 "
                        "(as the first run), or start afresh without --resume.")
        noisy = self._of("device")
        plain = sorted(finished - {int(r["round"]) for r in noisy})
        kinds = {(r["noise_multiplier"], r["num_devices"], r["sample_size"]) for r in noisy}
        if noise_multiplier > 0:
            if plain:
                return (f"round(s) {plain} were aggregated without device-level DP noise "
                        "(--dp-noise 0), so no device-level epsilon covers the model; resume "
                        "with --dp-noise 0, or start afresh without --resume.")
            asked = (float(noise_multiplier), int(num_devices),
                     None if sample_size is None else int(sample_size))
            other = sorted(k for k in kinds if k != asked)
            if other:
                z, n, m = other[0]
                return (f"the earlier rounds were aggregated with device-level DP noise {z:g} "
                        f"over {n} devices ({m} sampled), not --dp-noise "
                        f"{noise_multiplier:g} over {num_devices} ({sample_size} sampled); "
                        "their epsilon composes only with the same settings, so resume with "
                        "those, or start afresh without --resume.")
            return None
        if noisy:
            z = sorted(k[0] for k in kinds)[-1]
            return (f"round(s) {sorted({int(r['round']) for r in noisy})} were aggregated with "
                    f"device-level DP noise {z:g}; resuming without it would leave the model "
                    f"without that guarantee; resume with --dp-noise {z:g}, or start afresh "
                    "without --resume.")
        return None

    def _of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.rounds if r.get("kind") == kind]

    def device_rounds(self) -> int:
        """How many rounds were aggregated with device-level noise."""
        return len(self._of("device"))

    def record_rounds(self) -> int:
        """How many distinct rounds carried DP-SGD updates."""
        return len({r["round"] for r in self._of("record")})

    def device_epsilon(self, delta: float, done: int = 0) -> float | None:
        """Device-level ε of every noisy round (``None``: none). Raises
        :class:`~edgewise.errors.InvalidParameterError` when rounds used different noise
        or fleet settings (resumed with other options): their ε is not accounted; or when
        a finished round (:meth:`finished_rounds`; ``done``: the checkpoint's last round)
        was aggregated without noise: no device-level ε covers a model that round moved.

        >>> led = RunLedger()
        >>> led.aggregated_round(1)
        >>> led.device_round(2, noise_multiplier=1.0, num_devices=3, sample_size=3)
        >>> led.aggregated_round(2)
        >>> led.device_epsilon(1e-5)
        Traceback (most recent call last):
        ...
        edgewise.errors.InvalidParameterError: Run privacy ledger None: round(s) [1] were aggregated without device-level DP noise, so no device-level epsilon covers the model (the ledger's 1 noisy round(s) do not).
        """  # noqa: E501
        noisy = self._of("device")
        if not noisy:
            return None
        plain = sorted(self.finished_rounds(done) - {int(r["round"]) for r in noisy})
        if plain:
            raise InvalidParameterError(
                f"Run privacy ledger {self.path}: round(s) {plain} were aggregated without "
                "device-level DP noise, so no device-level epsilon covers the model (the "
                f"ledger's {len(noisy)} noisy round(s) do not).")
        kinds = {(r["noise_multiplier"], r["num_devices"], r["sample_size"]) for r in noisy}
        if len(kinds) > 1:
            raise InvalidParameterError(
                f"Run privacy ledger {self.path}: its rounds ran with different device-level "
                f"DP settings (noise, devices, sampled) {sorted(kinds, key=str)}; resume with "
                "the settings of the first run, or start afresh.")
        (z, n, m), = kinds
        return device_level_epsilon(z, len(noisy), delta, num_devices=n, sample_size=m)

    def record_epsilon(self, delta: float) -> float | None:
        """Record-level ε bound of every round's DP-SGD, composed with the normaliser
        statistics' release when there was one (:func:`worst_case_epsilon` of the
        mechanisms, at least the largest ε a device reported); ``None``: no DP-SGD. Raises
        :class:`~edgewise.errors.InvalidParameterError` when a finished round carried no
        DP-SGD (a run resumed with DP-SGD after rounds without), or aggregated an update
        that stated none beside the others' (:meth:`rounds_without_dp_sgd`: a device that
        trained without DP-SGD in a run that did not ask for it): no record-level ε covers
        the model then.

        >>> led = RunLedger()
        >>> led.record_round(1, {"7": (1.0, 0.05, 20)}, reported=2.4)
        >>> led.aggregated_round(1, without_dp_sgd=["9"])
        >>> led.record_epsilon(1e-5)
        Traceback (most recent call last):
        ...
        edgewise.errors.InvalidParameterError: Run privacy ledger None: round(s) [1] aggregated updates trained without record-level DP-SGD (round 1: node(s) 9) beside the DP-SGD ones, so no record-level epsilon covers the model.
        """  # noqa: E501
        recs = self._of("record")
        if not recs:
            return None
        bare = sorted(self.finished_rounds() - {int(r["round"]) for r in recs})
        if bare:
            raise InvalidParameterError(
                f"Run privacy ledger {self.path}: round(s) {bare} were aggregated from updates "
                "trained without record-level DP-SGD, so no record-level epsilon covers the "
                "model.")
        mixed = self.rounds_without_dp_sgd()
        if mixed:
            said = "; ".join(f"round {r}: {_devices(nodes)}" for r, nodes in sorted(mixed.items()))
            raise InvalidParameterError(
                f"Run privacy ledger {self.path}: round(s) {sorted(mixed)} aggregated updates "
                f"trained without record-level DP-SGD ({said}) beside the DP-SGD ones, so no "
                "record-level epsilon covers the model.")
        eps = worst_case_epsilon(self._record_parts(), delta)
        return max(eps, max(float(r.get("reported", 0.0)) for r in recs)) or None

    def _record_parts(self) -> list[list[list[Mechanism]]]:
        """Each segment's DP-SGD histories, one per device (node id) of that segment."""
        parts: dict[int, dict[str, list[Mechanism]]] = {}
        # the statistics' release first, then each round; a round re-run after a resume is
        # a second spend, in its own segment
        for r in self._of("stats") + self._of("record"):
            part = parts.setdefault(int(r.get("segment", 0)), {})
            for node, (z, q, n) in r.get("devices", {}).items():
                part.setdefault(node, []).append((float(z), float(q), int(n)))
        return [list(p.values()) for p in parts.values()]

    def record_rdp(self) -> list[float] | None:
        """The RDP curve (at :func:`~edgewise.federated.privacy.rdp_orders`) bounding what
        every device spent in the ledger's rounds (``None``: no DP-SGD round): what a
        resumed run's devices calibrate the rest of their budget after
        (:func:`~edgewise.federated.client_app.dp_sgd_budget`).

        >>> led = RunLedger()
        >>> led.record_rdp() is None
        True
        >>> led.record_round(1, {"7": (1.0, 0.05, 20)})
        >>> from edgewise.federated.privacy import rdp_to_epsilon
        >>> round(rdp_to_epsilon(led.record_rdp(), 1e-5), 3)
        2.481
        """
        from edgewise.federated.privacy import worst_case_rdp

        if not any(r.get("devices") for r in self._of("record") + self._of("stats")):
            return None
        return worst_case_rdp(self._record_parts())
