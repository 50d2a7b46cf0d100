"""The streaming cleaner the gateway applies per (device, metric) before storage and detection.

Each reading is judged by itself, then against what was *kept* before it for its
(device, metric): removed as ``invalid`` (NaN/inf), ``out_of_range`` (outside the
metric's limits, or impossible for its SenML unit as
:data:`~edgewise.quality.units.PHYSICAL_RANGE` says), ``out_of_order`` (older than the
last kept time, at no time the spike window holds), ``duplicate`` (same time, same value),
``conflict`` (same time, another value: the first one kept wins; a late re-delivery of a
time the window holds is one of these, as :mod:`~edgewise.quality.order` counts it, not
out of order), ``rate`` (changed faster than the metric's ``max_rate`` from the last kept
reading; a too-fast reading holds no time, so a fitting one at the same time is kept);
flagged but kept as ``spike`` (Hampel test against the last kept values) and ``stuck`` (a
run of identical readings that is long for the series).

The spike test judges a reading against the window's median, or, where the window
follows a trend more closely than it scatters about its median (a ramp, a cycle's rise
and fall), against its resistant line (the slope between the medians of its last two
thirds) extrapolated to the reading; where that line misses the window's
own last reading, no outlier, by :data:`TURN` noise floors (the series turned: a peak, a
morning rise), an outlier of the line is judged also against the median and the last
readings' path. Its scale is the window's spread about that centre, never below the
stream's long-run noise: the median change between kept readings that are no outliers
since it started (repeats carry none: a sensor polled more often than it refreshes),
less the trend, in logarithmic bins (:data:`MAX_NOISE_BINS`, halved past
:data:`NOISE_MEMORY` changes), a sample-and-hold sensor's moves to a value it then
repeats counted too. A window of one value, after a freeze or between a held sensor's
moves, thus judges by the noise the sensor showed (every value read ten times was a
spike at each change: 20 % of the readings), a ramp's glitches stand out from its line
(two of 2 C on a ramp of 0.1 C a reading went unseen), and a clean daily cycle is no
spike at its turns (NAB's nyc_taxi: 583 spikes, now 4).
The first readings, before the window holds 5 values, are not judged; their steps count
as an outlier's for the resolution below (their moves towards the usual step), so a
dropout among them hides no later one.

Spikes and stuck runs mean what they mean in the batch report, judged on the readings seen
so far (no look-ahead) with a bounded state per stream. A series is two-state
(:func:`~edgewise.quality.states.two_state`: a boolean stored as 1/0 that has shown both
values, or two levels such as a heater's 0 and 1500 W whose rarer one has come
:data:`~edgewise.quality.states.MIN_STATE_COUNT` times, in
:data:`~edgewise.quality.states.MIN_STATE_SHARE` of the readings, with two switches) from
the reading on which that rule holds on the readings judged so far; its switches are then
no spikes. The first pulses of a heater, before the rule can hold, are judged as a
measurement's. So is a series of two noisy levels (a pump at 0 and 7.5 +- 0.05 A,
:func:`~edgewise.quality.states.level_bands`, as the batch report's spike test takes it)
until those levels show in its last :data:`BAND_HISTORY` readings judged (each of them,
where all its readings there are one value, a level of the whole stream as below): then
a reading at a level is no spike, one further from both than the gap between them (and
than ``n_sigmas`` steps the series moves in) is one (a 30 A reading), and one between is
judged as any. A series that has shown between two and
:data:`~edgewise.quality.stuck.FEW_LEVELS` distinct values (a setpoint, a mode, a
two-level signal) holds its values by nature and is never stuck
(:func:`~edgewise.quality.stuck.stuck_runs`); the distinct values are tracked up to one
past that, and their counts and switches. A run is stuck when it holds ``stuck_run``
readings *and* lasts ``stuck_run`` times the series' typical hold: the time-weighted median
of the holds (a run's first reading to the next change) of the runs before it, kept in
at most :data:`MAX_HOLD_BINS` logarithmic bins of :data:`HOLD_BINS_PER_OCTAVE` to the
octave (exact while the holds in a bin are equal, as for readings at a fixed interval);
the run's own hold so far is its first reading to the latest plus the latest spacing, as
the batch takes a last run's. As there, a run of more than ``stuck_run`` readings counts
its hold scaled to ``stuck_run`` of them towards the median, so one long freeze does not
make the next one typical, and an interval counts in a hold for at most
:data:`~edgewise.quality.gaps.GAP_FACTOR` expected spacings (the lower median of the
intervals so far, kept in the same bins), so a value held across an outage is not stuck
for it. A noisy sensor's typical hold is one reading, so 20 readings
in a row are stuck; a sensor that reports tenths and warms slowly is not stuck for holding
a tenth for its usual minutes. A stream that has held one value since its first reading
has no hold to compare with and cannot be told from a sensor stuck from the start: its
run's length alone decides, as it did before, and as the batch report decides for a
series of one value throughout (30 readings of 21.3: 30 stuck in both). As in the batch
report, a stuck run counts whole once it qualifies: the reading at which it qualifies
adds the whole run so far to the ``stuck`` count (the earlier ones were handed on before
the run could be told from a live sensor's repeats), each later one one more, so a run of
25 counts 25 here and there. Nor is a run stuck at the value the series rests at
(:data:`~edgewise.quality.stuck.REST_SHARE`, a disk idle at 0 bytes written between its
writes): one whose earlier runs at its value hold more than half the time the finished
runs count with towards the typical hold (each as there, a long run as ``stuck_run`` of
its readings), decided once per run when it would qualify.

A reading at one of the series' levels (:func:`~edgewise.quality.spikes.levels`: a value
judged :data:`~edgewise.quality.states.MIN_STATE_COUNT` times and in
:data:`~edgewise.quality.states.MIN_STATE_SHARE` of the readings judged so far) is no
spike, however far it lies from the window: a CPU idling at 0.066 % that reads 0.134 % one
reading in seven. And the spike test's floor is the step the sensor moves in
(:func:`~edgewise.quality.spikes.usual_step`) where its resolution is jitter
:data:`~edgewise.quality.spikes.JITTER_GAP` times below the next recurring size of its
moves (changes between kept values with no outlier on either side, or small beside both
and no larger than the finest such move),
and the moves of that size and above are routine (``MIN_STATE_SHARE`` of the steps so
far): NAB's AWS CPU series, 0.066 / 0.068 idle, 0.132 / 0.134 / 0.136 busy, move by 0.067
and are flagged only where the batch report flags them (16 and 14 jumps to 0.6 % and
over, 479 and 785 before) once their first window is past. The values and the sizes of
the moves are counted in bounded summaries (Misra-Gries: :data:`MAX_TRACKED_VALUES`,
:data:`MAX_TRACKED_STEPS`, each new one when full takes one from every count), exact
while a stream has shown no more of them; a move is counted once the stream has a
resolution or where its value came before, and a value's time at rest from its second
reading while it is among the values counted, so a noisy sensor, whose values and steps
never recur, pays for neither.

Where these differ from the batch report, which sees the whole series, and why (no
look-ahead, bounded state): a value is a level from its third reading, once it is 5 % of
those so far, so its first readings are judged as a measurement's (flagged where they
stand out), and a value common early but rarer over the whole (a dropout in 3 of the
first 60 readings, 3 of 100 in all) is a level from its third where the report calls it
a spike each time; past :data:`MAX_TRACKED_VALUES` distinct values a count can be short
by 1/(MAX_TRACKED_VALUES + 1) of the readings, so a level held in 5 to 8 % of them can go
unseen (its readings judged as any); the usual step needs its moves counted, and a move
into or out of an outlier is none, so a CPU's idle-to-busy moves count once those
values are levels (its first window), and above the resolution only moves count towards
a size's recurrence (the report also counts steps into and out of spikes that lay both
above and below); the finest move between readings that are no outliers is the finest
so far (the report takes the whole series'), so a small step into and out of a glitch
that came before it counted; a re-delivered time older than the window's is out of order
(the report, which keeps every time, counts it a duplicate or conflict); a stream's
first five readings cannot be judged (a valve's dropout at its third reading is no spike,
its 19 later ones are; before, none was: the first one's steps set the resolution); the
rest is judged on the runs before the run (the report also counts
those after it), so a stream that rests from its first reading has no earlier run to
show it: that run is stuck by its length, as before (NAB's ec2_disk_write_bytes_1ef3de:
its first 461 readings, at 0, are stuck here and not in the report; 2007 before, each
idle night), and a value the series rests at only later is judged by what came before.

A level shift is no spike: once :data:`LEVEL_SHIFT_RUN` readings in a row are outliers on
the same side of the window's median and either lie closer to each other than to that
median (or within the test's own threshold of each other: a step) or move steadily away
from the level they left (a ramp, or a first-order approach to a new setpoint, as a pump's
speed takes one: :meth:`_State.shifted`), the last of them and every outlier that goes on
with that run are kept unflagged, until the window has learnt the new level; a reading of
the run that the threshold, grown with the run's first readings, takes in does not end it.
With no look-ahead the first ``LEVEL_SHIFT_RUN - 1`` readings of a real step or ramp
cannot be told from a spike yet, and stay flagged (dropped with ``drop_spikes=True``); the
new level itself is never lost: a setpoint moved from 20.0 to 25.0, at once or over a few
readings, is kept from its third reading on, where the drop mode kept none of it, and the
flag mode flagged the new level until half the window held it (the batch report, which
looks both ways, flags none), and a ramp each time its spread outgrew its distance from
the old level (5 readings of a 6-reading ramp, the first at the new level among them). An
isolated outlier, a pair that returns, or a burst whose readings lie further apart than
from the old level and do not move steadily away from it (60, 80, 100 off a flat 20: a
first step of 40, then of 20) is still a spike. The
spike test's scale never drops below the
sensor's resolution as :func:`~edgewise.quality.spikes.resolution` takes it: the smallest
step between kept values seen :data:`~edgewise.quality.spikes.RESOLUTION_SEEN` times
(none until one recurs) with its outliers (the readings that stood out from the window
by every floor but this one, level shifts aside, and the first readings, not judged): a
step into or out of an outlier counts only when it is small beside both its values and
no larger than the finest move between readings that are no outliers so far, or once
outliers of its size lay both above and below, so a spike's own way up and down on a
flat stream, however often the same dropout recurs, hides no later spike (a dropout in
5 % of the readings is a level, above), nor does a glitch by 4 of a sensor whose
readings move by tenths. ``drop_spikes=True`` removes spikes
instead. Every removed reading is counted by reason, so ``kept + sum(removed) == seen``;
and because every decision looks only at kept history (and, for a level shift, at the
run of outliers just before, dropped ones too: a dropped reading leaves nothing else),
cleaning already-clean readings keeps them all (idempotent) unless spikes are dropped.

Readings near the largest float are judged as ordinary ones: where a reading, a value of
the window or of the run of outliers under way lies beyond
:data:`~edgewise.quality.spikes.BIG_VALUE` (2**960), the spike test works in units of
:data:`~edgewise.quality.spikes.BIG_UNIT` (2**-64, exact), as the batch report's does, and
so do the long-run noise's totals once one would pass the largest float. Before, the
spread of a window half of whose values lay near +-1.7e308 overflowed to inf, and no
reading was flagged however far it lay; now a stream multiplied by 1e300 is flagged where
the stream itself is. What cannot be so (no look-ahead to scale by) is a change past the
largest float (1e308 to -1e308): it counts towards no resolution, usual step or noise.

>>> from edgewise.telemetry import Reading
>>> c = StreamCleaner(limits={"temp": Limits(low=-40, high=125)})
>>> rs = [Reading("d", "temp", t, v) for t, v in [(1, 20.0), (1, 20.0), (2, 900.0), (3, 21.0)]]
>>> [r.value for r in c.clean(rs)], dict(c.removed)
([20.0, 21.0], {'duplicate': 1, 'out_of_range': 1})
"""

from __future__ import annotations

import bisect
import math
import numbers
from array import array
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from edgewise.errors import QualityError
from edgewise.quality.gaps import GAP_FACTOR
from edgewise.quality.limits import Limits, changes_too_fast
from edgewise.quality.spikes import (
    BIG_UNIT,
    BIG_VALUE,
    JITTER_GAP,
    MAD_SCALE,
    RESOLUTION_SEEN,
    RESOLUTION_SHARE,
)
from edgewise.quality.states import MIN_STATE_COUNT, MIN_STATE_SHARE, level_bands, two_levels
from edgewise.quality.stuck import FEW_LEVELS, REST_SHARE
from edgewise.quality.units import PHYSICAL_RANGE
from edgewise.telemetry import Reading

__all__ = ["StreamCleaner"]

#: Candidate steps (below the resolution, not yet seen RESOLUTION_SEEN times) a stream
#: keeps; past it the largest go. Bounds the memory and per-reading cost of a stream of
#: unquantised noise, whose steps never recur.
MAX_CANDIDATE_STEPS = 16

#: Values a stream counts at most (its most frequent, a Misra-Gries summary: a value that
#: comes while it is full takes one from each count, and the counts at 0 go), for its
#: levels and the value it rests at. Exact while a stream has shown no more values; past
#: that each count is short by at most 1/(MAX_TRACKED_VALUES + 1) of the readings, so a
#: level in 5 % of them is known once it holds 8 %, and a value read in 3 % never is.
MAX_TRACKED_VALUES = 32
#: Sizes of the moves between kept values a stream counts at most (the same summary), for
#: the step it moves in above its jitter (:func:`~edgewise.quality.spikes.usual_step`).
MAX_TRACKED_STEPS = 32

#: Outliers in a row, on one side of the spike window's median and consistent with each
#: other, that make a level shift: the last of them is no spike, nor is any outlier that
#: goes on with the run (the first ``LEVEL_SHIFT_RUN - 1`` are, while still ambiguous).
LEVEL_SHIFT_RUN = 3

#: How far, in spike thresholds, a step of a run of outliers may go back towards the
#: old level, or exceed what the run's path allows, and the run still move steadily (a
#: ramp, a first-order approach to a new level): two, for the noise of a noisy stream's
#: steps, of which each is the difference of two noisy readings.
STEADY_SLACK = 2.0
#: How many times the largest step of a run of outliers so far (its first step, from the
#: old level, until it has another) a later step may be and the run still move steadily:
#: a counter's or a ramp's steps vary, a spike on top of a ramp is a jump beyond them.
STEADY_GROWTH = 3.0

#: Changes between kept values after which the long-run noise level's counts so far
#: weigh half: the level follows a sensor whose noise changes over some thousands of
#: readings, and one noisy day does not hide a quiet month's spikes for good.
NOISE_MEMORY = 4096
#: Bins of the long-run noise's changes a stream keeps at most (8 to the octave: 6
#: octaves); past it the lightest goes, the far tail of a noisy sensor's smallest changes.
MAX_NOISE_BINS = 48
#: How many times the stream's long-run noise the window's spread about its median must
#: be for its trend to be worked out: a spread at the noise shows none worth following
#: (and costs nothing to judge).
TREND_NOISE = 2.0

#: How many times the long-run noise the noise floor is for a reading judged against the
#: window's trend: the line, a slope between two medians of a third of the window each,
#: extrapolated past the last third, errs by 0.7 to 1 noise levels where the window's
#: median errs by a third, so a reading misses it by 1.2 to 1.4 noise levels where it
#: misses the median by 1.05.
TREND_ERROR = 1.2
#: How many noise floors the window's line (its median, or its trend) may miss the last
#: reading by, that reading no outlier, before the series counts as turning there, and an
#: outlier of the line is judged also against the window's median and the last readings'
#: path (a cycle's peak, its morning rise, which a line through the window lags).
TURN = 2.0

#: Logarithmic bins to the octave the holds of a stream's runs are counted in, for its
#: typical hold (a bin is 9% wide; its hold is the mean of the holds in it).
HOLD_BINS_PER_OCTAVE = 8
#: Bins of hold a stream keeps at most; past it the two nearest are merged. Bounds the
#: memory of a stream whose holds spread over many octaves (32 bins: 4 octaves unmerged).
MAX_HOLD_BINS = 32

#: Judged readings a stream keeps, the last ones, to tell a series of two noisy levels
#: (:func:`~edgewise.quality.states.level_bands`: a pump at 0 and 7.5 +- 0.05 A) by; its
#: readings are judged against the nearest level, and only one at neither is a spike.
BAND_HISTORY = 64
#: Judged readings after which a stream that has two noisy levels works them out anew
#: (also at each reading off them; one that has none, at each outlier of its window, or
#: reading beyond the window by the window's span).
BAND_EVERY = 32

#: The layout of :meth:`StreamCleaner.export_state`; bumped when :class:`_State` changes,
#: so a gateway restarted from an older layout starts its streams afresh instead.
STATE_VERSION = 1


#: How a reading stands against the kept window (:meth:`StreamCleaner._judge`): no
#: outlier; an outlier kept unflagged (or not judged: the stream's first readings); a
#: spike.
_IN, _OUT, _SPIKE, _SHIFT = 0, 1, 2, 3
_OUTLIERS = (_OUT, _SPIKE)

#: Where a reading lies against a series' two noisy levels (:meth:`_State.band`): at one,
#: between them and the far limit (judged as any), or beyond it (a spike).
_AT, _BETWEEN, _FAR = 0, 1, 2

#: How a change between kept values counts towards the resolution: not at all, by
#: itself, or as a change into or out of one spike that lies above or below its
#: neighbour (bits: such changes of one size count once spikes were seen both ways).
_NONE, _CLEAN, _UP, _DOWN = -1, 0, 1, 2


@dataclass
class _State:
    last_ts: int
    last_value: float
    window: deque = field(default_factory=deque)
    run: int = 1
    # the sensor's resolution, spikes.resolution as the stream goes with its flagged
    # spikes for the outliers: the smallest change between kept values seen
    # RESOLUTION_SEEN times (inf until one is). Below it, the changes seen fewer times,
    # ascending: how often by themselves (no spike, or small beside both values), how
    # often into or out of one spike otherwise, and which ways those spikes lay (bits
    # _UP, _DOWN); steps within 1e-9 of the largest kept |value| count as one (20.1 - 20.0
    # and 20.2 - 20.1 differ in float)
    step: float = math.inf
    cand_steps: list[float] = field(default_factory=list)
    cand_counts: list[int] = field(default_factory=list)
    cand_lone: list[int] = field(default_factory=list)
    cand_ways: list[int] = field(default_factory=list)
    max_abs: float = 0.0
    # the last kept value was flagged as a spike, or kept before the window could judge
    # it (the stream's first readings): its steps count as an outlier's
    last_flagged: bool = False
    # the readings judged so far (kept, or dropped as spikes: the batch report sees both):
    # their distinct values and how often each came while there are at most FEW_LEVELS
    # (``many`` past it, the counts then gone), how many, their switches, the last of them.
    # ``levels`` is None in a state saved before these fields: import_state seeds them.
    levels: dict[float, int] | None = None
    many: bool = False
    judged: int = 0
    switches: int = 0
    prev: float = 0.0
    # the kept run of identical values: the time of its first reading (None: not known, in
    # a state saved before), whether it counts as stuck yet, and the series' typical hold
    # over the runs before it (worked out once the run is long enough to need it: -1.0
    # before; 0.0 with none, the run's length alone decides); the holds of the runs before
    # it as ``[bin, runs, total hold, total time counted]`` (bin: HOLD_BINS_PER_OCTAVE *
    # log2 of a hold; time counted: the hold, scaled to stuck_run readings in a longer
    # run), bins ascending, at most MAX_HOLD_BINS
    run_start: int | None = None
    run_stuck: bool = False
    typical: float = -1.0
    hold_bins: list[list[float]] | None = None
    # the time the gaps inside the run so far lasted past GAP_FACTOR expected spacings
    # (uncounted in its hold); the kept readings' intervals as ``[bin, intervals, total,
    # intervals]`` (the same bins), for the expected spacing; that spacing; the longest an
    # interval counts in a hold (GAP_FACTOR spacings, whole); the spacing's bin where the
    # spacing is that bin's mean (an interval equal to it goes there and the median stays:
    # no search, the fixed spacing's path). Plain defaults: a state saved before these
    # fields loads with no gap counted and learns the spacing anew.
    run_excess: int = 0
    gap_bins: list[list[float]] | None = None
    gap_every: float = 0.0
    gap_max: int = 0
    gap_bin: list[float] | None = None
    # the readings in a row (kept or dropped) that were outliers on one side (+1 above the
    # window's median, -1 below) and consistent with each other: how many, lowest, highest.
    # Plain defaults: a state saved before these fields loads with no run under way.
    shift_n: int = 0
    shift_side: int = 0
    shift_lo: float = 0.0
    shift_hi: float = 0.0
    # how the run goes on: whether it lies together (spread within the threshold or below
    # its distance from the median); its first step (from the window's median, to its first
    # reading; NaN once it no longer moves steadily away); its last value; its largest step
    # after the first (0.0 before one); its last step and that one's ratio to the step
    # before (at most 1; NaN once the steps no longer shrink steadily); whether it is a
    # level shift. Plain defaults: a run under way in a state saved before these fields
    # is judged by its spread alone, as it was, until the next run.
    shift_near: bool = True
    shift_entry: float = math.nan
    shift_last: float = 0.0
    shift_top: float = 0.0
    shift_step: float = 0.0
    shift_ratio: float = math.nan
    shift_found: bool = False
    shift_gap: bool = False  # the last reading was no outlier, and the run went on
    # the unit the run's values and steps are in: 1.0, or BIG_UNIT where the spike test
    # judged in it (a plain default: a state saved before it is in plain units)
    shift_unit: float = 1.0
    # the values judged most often (MAX_TRACKED_VALUES at most) and how often each came, a
    # lower bound; the time the finished runs at each of them counted with towards the
    # typical hold (as ``hold_bins``) while it was counted; whether the run under way is
    # at the value the series rests at (then never stuck). The sizes of the moves between
    # kept values (no spike either side, or small beside both values) and how often each
    # came, a lower bound (MAX_TRACKED_STEPS at most, as computed: sizes within 1e-9 of
    # the largest kept value are one when they are judged). Plain defaults: a state saved
    # before these fields loads with none counted, and counts from there.
    freq: dict[float, int] | None = None
    rest: dict[float, float] | None = None
    run_rest: bool = False
    # whether the value last judged had come before, and the run under way's first one
    # had: a noisy sensor's values never recur, and it pays for no moves and no rest
    known: bool = False
    run_known: bool = False
    moves: dict[float, int] | None = None
    # the times of the window's values and how each was judged (_IN, _OUT: an outlier
    # or kept before the window could judge it, _SPIKE, _SHIFT), aligned with its last
    # values (shorter in a state saved before these fields: the values before them have
    # no time and no mark); the finest move between kept values that are no outliers
    # (inf before one); the long-run noise: the changes between kept values judged _IN,
    # less the window's trend (and a held sensor's moves), as ``{bin: [weight, total]}``
    # (HOLD_BINS_PER_OCTAVE to the octave, at most MAX_NOISE_BINS), how many, their
    # level (MAD_SCALE * median / sqrt 2); the trend (per reading) the last reading was
    # judged on. Plain defaults: a state saved before these fields loads with none
    # known, and learns them from there.
    times: deque | None = None
    marks: deque | None = None
    finest: float = math.inf
    noise_bins: dict[int, list[float]] | None = None
    noise_n: int = 0
    noise: float = 0.0
    slope: float = 0.0
    # the unit of the noise bins' totals: 1.0, or BIG_UNIT once one would overflow (a
    # plain default: a state saved before it has them in plain units)
    noise_unit: float = 1.0
    # the last BAND_HISTORY judged values (a ring of doubles), and the two noisy levels
    # and their tolerance worked out on them (None: none), at the ``judged`` count they
    # were worked out at.
    # Plain defaults: a state saved before these fields loads with none, and learns them.
    recent: array | None = None
    recent_at: int = 0  # the oldest of them once there are BAND_HISTORY (a ring)
    bands: tuple[float, float, float] | None = None
    bands_at: int = -1
    # the time and value of the last spike dropped (drop_spikes; None: none): a reading
    # at that time is its duplicate or conflict. Plain defaults, as above.
    spike_ts: int | None = None
    spike_value: float = 0.0

    def band(self, value: float, outlier: bool, n_sigmas: float = 5.0) -> int | None:
        """Where ``value`` (judged, and tracked) lies against the series' two noisy levels
        (:func:`~edgewise.quality.states.level_bands` on the last :data:`BAND_HISTORY`
        judged values): :data:`_AT` one of them, :data:`_FAR` further from both than the
        gap between them and the tolerance, and than ``n_sigmas`` steps the series moves in
        (:meth:`usual_step`), a spike; :data:`_BETWEEN` (judged as any);
        None where the series has none. Worked out anew every :data:`BAND_EVERY`
        readings and at a value off the levels it had, and, while it had none, at an
        ``outlier`` only (of the spike window, or beyond it by its span: a measurement
        pays for no look at its levels at every reading).

        >>> st = _State(0, 0.0)
        >>> for i in range(40):
        ...     st.track(7.5 + 0.01 * (i % 5) if i // 4 % 2 else 0.0)
        >>> st.band(7.52, False), st.band(7.52, True) == _AT   # no outlier: not looked at
        (None, True)
        >>> [st.band(v, False) == k for v, k in [(30.0, _FAR), (4.0, _BETWEEN), (0.0, _AT)]]
        [True, True, True]
        """
        b = self.bands
        if b is not None:
            lo, hi, tol = b
            if ((abs(value - lo) <= tol or abs(value - hi) <= tol)
                    and self.judged - self.bands_at < BAND_EVERY):
                return _AT
        elif not outlier:
            return None
        if self.bands_at != self.judged and self.recent is not None:
            at = self.recent_at
            b = level_bands(self.recent[at:] + self.recent[:at])  # oldest first
            if b is not None and not (self._exact_ok(b[0], b[2]) and self._exact_ok(b[1], b[2])):
                b = None
            self.bands, self.bands_at = b, self.judged
        if b is None:
            return None
        lo, hi, tol = b
        off = min(abs(value - lo), abs(value - hi))
        if off <= tol:
            return _AT
        if off <= hi - lo + tol:
            return _BETWEEN
        res = self.step  # beyond n_sigmas steps it moves in too (a CPU's ladder of steps)
        return _BETWEEN if 0.0 < res < math.inf and off <= n_sigmas * self.usual_step(
            res) else _FAR

    def _exact_ok(self, level: float, tol: float) -> bool:
        """Whether ``level``, one of two worked out on the last values, is one: where its
        last readings are all that one value, it must be a level of the whole stream as
        :meth:`is_level` takes it (the batch report takes both on the whole series): a
        huge value read in 5 % of the last readings and 4 % of all is a spike there."""
        near = [x for x in self.recent or () if abs(x - level) <= tol]
        return any(x != level for x in near) or self.is_level(level)

    def shifted(self, value: float, side: int, med: float, limit: float) -> bool:
        """Count ``value``, an outlier on ``side`` (+1 above, -1 below) of the window's
        median ``med``, towards the run of outliers in a row; whether that run, with it,
        is a level shift: :data:`LEVEL_SHIFT_RUN` or more on one side that lie together
        (their spread within ``limit``, the spike threshold, or less than their distance
        from ``med``: a step) or move steadily away from the old level (the median the
        run began on): a ramp, whose first step from that level is no larger than its
        largest later one, or a first-order approach to a new level, whose steps shrink,
        each by as much as the one before did at least. Moving steadily, each step goes
        back by at most :data:`STEADY_SLACK` thresholds and is at most
        :data:`STEADY_GROWTH` times the largest step so far, and so many thresholds more.
        Once a shift, the run stays one while it goes on either way. An outlier that goes
        on with it neither way starts a new run.

        >>> st = _State(0, 20.0)
        >>> [st.shifted(v, 1, 20.0, 1e-8) for v in [25.0, 25.0, 25.0, 25.0]]
        [False, False, True, True]
        >>> [st.shifted(v, 1, 20.0, 1e-8) for v in [60.0, 80.0, 100.0]]  # 40, 20, 20: spikes
        [False, False, False]
        >>> [st.shifted(v, 1, 20.0, 0.5) for v in [30.1, 29.9, 30.0]]
        [False, False, True]
        >>> ramp, lag = _State(0, 20.0), _State(0, 20.0)  # steps 1, 1, 1; 4, 3.2, 2.56
        >>> [ramp.shifted(v, 1, 20.0, 1e-8) for v in [21.0, 22.0, 23.0, 24.0, 40.0]]
        [False, False, True, True, False]
        >>> [lag.shifted(v, 1, 20.0, 1e-8) for v in [24.0, 27.2, 29.76, 31.808]]
        [False, False, True, True]
        """
        if self.shift_n and side == self.shift_side:
            lo = value if value < self.shift_lo else self.shift_lo
            hi = value if value > self.shift_hi else self.shift_hi
            spread = hi - lo
            near = self.shift_near and (
                spread <= limit or spread < (lo - med if side > 0 else med - hi))
            moved = self._move(value, limit)
            if near or moved is not None:
                if moved is None:
                    self.shift_entry = math.nan  # no longer steady: its spread alone
                self.shift_near = near
                self.shift_n += 1
                self.shift_lo, self.shift_hi = lo, hi
                self.shift_gap = False
                self.shift_found = bool(near or moved or self.shift_found) and (
                    self.shift_n >= LEVEL_SHIFT_RUN)
                return self.shift_found
        self.shift_n, self.shift_side, self.shift_lo, self.shift_hi = 1, side, value, value
        self.shift_near, self.shift_found, self.shift_gap = True, False, False
        self.shift_last, self.shift_top, self.shift_ratio = value, 0.0, 1.0
        self.shift_entry = self.shift_step = (value - med) * side
        return False

    def in_unit(self, unit: float) -> None:
        """Express the run of outliers under way in ``unit`` (1.0 or :data:`BIG_UNIT`), the
        one the spike test judges the reading in: its values and steps, exactly (powers of
        two), so a run begun among huge readings goes on among ordinary ones and back.

        >>> st = _State(0, 20.0, shift_unit=BIG_UNIT)   # judged among huge readings
        >>> st.shifted(1e300 * BIG_UNIT, 1, -2e300 * BIG_UNIT, 1.0)
        False
        >>> st.in_unit(1.0); st.shift_unit, st.shift_lo, st.shift_entry
        (1.0, 1e+300, 3e+300)
        """
        old = self.shift_unit
        if unit == old:
            return
        self.shift_unit = unit
        if self.shift_n:
            r = unit / old
            self.shift_lo *= r
            self.shift_hi *= r
            self.shift_last *= r
            self.shift_entry *= r
            self.shift_step *= r
            self.shift_top *= r

    def held(self, value: float, limit: float) -> None:
        """Count ``value``, a reading that is no outlier (``limit``: the spike threshold):
        it ends the run of outliers, unless it goes on with the run's steady path, the
        first such in a row anyhow, each later one further from the old level than the one
        before (a reading of a ramp that the threshold, grown with the ramp's first
        readings or with the steps it has learnt from them, takes in): the run then goes
        on from it, uncounted.

        >>> st = _State(0, 20.0)
        >>> [st.shifted(v, 1, 20.0, 0.1) for v in [21.0, 22.0]], st.held(22.9, 3.0)
        ([False, False], None)
        >>> st.held(23.9, 3.0), st.shifted(25.0, 1, 20.0, 1.0), st.shift_n
        (None, True, 3)
        >>> st.held(25.0, 1.0), st.held(24.9, 1.0), st.shift_n  # no further: it is over
        (None, None, 0)
        """
        if self.shift_n and (not self.shift_gap
                             or (value - self.shift_last) * self.shift_side > 0.0):
            if self._move(value, limit) is not None:
                self.shift_gap = True
                return
        self.shift_n = 0

    def _move(self, value: float, limit: float) -> bool | None:
        """Follow the run's steady path (see :meth:`shifted`) on to ``value``: ``None``
        when ``value`` does not go on with it steadily (nothing changes), else whether the
        run, with it, has moved as a ramp or a first-order approach does."""
        entry = self.shift_entry
        if entry != entry:  # NaN: not moving steadily
            return None
        slack = STEADY_SLACK * limit
        step = (value - self.shift_last) * self.shift_side
        top = self.shift_top if self.shift_top > 0.0 else entry
        if not -slack <= step <= STEADY_GROWTH * top + slack:
            return None
        up = step if step > 0.0 else 0.0
        prev, ratio = self.shift_step, self.shift_ratio
        lag = ratio == ratio and up <= prev * ratio + slack
        ratio = (up + slack) / (prev + slack) if lag else math.nan
        self.shift_ratio = 1.0 if ratio > 1.0 else ratio
        self.shift_step = up
        if up > self.shift_top:
            self.shift_top = up
        self.shift_last = value
        return lag or entry <= self.shift_top + slack

    def track(self, value: float) -> None:
        """Count ``value``, a judged reading (kept or dropped as a spike), towards the
        distinct values, their counts and the switches.

        >>> st = _State(0, 0.0, levels={})
        >>> for v in [0.0, 1500.0, 1500.0, 0.0, 0.0, 1500.0]:
        ...     st.track(v)
        >>> st.levels, st.switches, st.judged, st.two_state()
        ({0.0: 3, 1500.0: 3}, 3, 6, True)
        >>> for v in [1.0, 2.0, 3.0, 4.0]:
        ...     st.track(v)
        >>> st.levels, st.many, st.few_levels()
        ({}, True, False)
        """
        if self.judged and value != self.prev:
            self.switches += 1
        self.prev = value
        self.judged += 1
        recent = self.recent
        if recent is None:
            recent = self.recent = array("d")
        if len(recent) < BAND_HISTORY:
            recent.append(value)
        else:  # a ring of doubles: 512 bytes a stream
            at = self.recent_at
            recent[at] = value
            self.recent_at = at + 1 if at + 1 < BAND_HISTORY else 0
        freq = self.freq
        if freq is None:
            freq = self.freq = {}
        n = freq.get(value)
        self.known = n is not None
        if n is not None:
            freq[value] = n + 1
        elif len(freq) < MAX_TRACKED_VALUES:
            freq[value] = 1
        else:  # the new value and each counted one lose one; those at 0 go
            freq = self.freq = {v: c - 1 for v, c in freq.items() if c > 1}
            if self.rest:
                self.rest = {v: w for v, w in self.rest.items() if v in freq}
        levels = self.levels
        if self.many or levels is None:
            return
        n = levels.get(value)
        if n is not None:
            levels[value] = n + 1
        elif len(levels) < FEW_LEVELS:
            levels[value] = 1
        else:
            self.many = True
            levels.clear()

    def two_state(self) -> bool:
        """The batch rule of :func:`~edgewise.quality.states.two_state` on the readings
        judged so far: exactly two values, 0 and 1, or whose rarer one came
        MIN_STATE_COUNT times and in MIN_STATE_SHARE of the readings, with two switches.

        >>> st = _State(0, 0.0, levels={})
        >>> for v in [0.0] * 10 + [1500.0] * 2 + [0.0] * 10:
        ...     st.track(v)
        >>> st.two_state()                     # two readings at 1500 W: not yet
        False
        >>> st.track(1500.0); st.two_state()   # the third, 3 of 23, two switches and more
        True
        """
        levels = self.levels
        if self.many or levels is None or len(levels) != 2:
            return False
        a, b = levels.items()
        return two_levels(a, b, self.switches)

    def few_levels(self) -> bool:
        """Whether the series has shown between two and FEW_LEVELS distinct values: it
        holds its values by nature, and no run of it is stuck (one value all along cannot
        be told from a sensor stuck from the start)."""
        return not self.many and self.levels is not None and len(self.levels) >= 2

    def is_level(self, value: float) -> bool:
        """Whether ``value`` (judged, and counted) is one of the series' levels so far, as
        :func:`~edgewise.quality.spikes.levels` takes them on the readings judged: one
        that came MIN_STATE_COUNT times and in MIN_STATE_SHARE of them.

        >>> st = _State(0, 0.066)
        >>> for v in [0.066] * 6 + [0.134]:
        ...     st.track(v)
        >>> st.is_level(0.134), st.is_level(0.066)
        (False, True)
        >>> for v in [0.066, 0.134, 0.066, 0.134]:   # a third 0.134, 3 of 11
        ...     st.track(v)
        >>> st.is_level(0.134)
        True
        """
        n = self.freq.get(value, 0) if self.freq else 0
        return n >= MIN_STATE_COUNT and n >= MIN_STATE_SHARE * self.judged

    def at_rest(self) -> bool:
        """Whether the run under way (at the last kept value) is at the value the series
        rests at, as :mod:`~edgewise.quality.stuck` takes it on the runs before: the runs
        at its value hold more than REST_SHARE of the time the finished runs count with.

        >>> st = _State(0, 0.0, run_start=0)
        >>> for t, v in enumerate([0.0] * 5 + [7.0] + [0.0] * 5 + [9.0] + [0.0] * 3):
        ...     st.track(v)
        ...     if v != st.last_value:
        ...         st.new_run(t, 0, 20)
        ...     else:
        ...         st.run += 1
        ...     st.last_value = v
        >>> st.rest, st.at_rest()          # 0 held 10 of the 12 (7 and 9: read once)
        ({0.0: 10}, True)
        """
        rest, bins = self.rest, self.hold_bins
        if not rest or not bins:
            return False
        w = rest.get(self.last_value)
        return w is not None and w > REST_SHARE * sum(b[3] for b in bins)

    def count_move(self, d: float) -> None:
        """Count a move of size ``d`` (> 0) between kept values towards the sizes the series
        moves by (MAX_TRACKED_STEPS at most, as computed: :meth:`recurring_moves` takes
        those within 1e-9 of the largest kept value as one).

        >>> st = _State(0, 20.0, max_abs=20.0)
        >>> for d in [0.002, 0.066, 0.002, 0.066, 0.0020000001]:
        ...     st.count_move(d)
        >>> st.moves
        {0.002: 2, 0.066: 2, 0.0020000001: 1}
        >>> st.recurring_moves(0.0)                # within 1e-9 * 20: one size
        [(0.002, 3)]
        """
        moves = self.moves
        if moves is None:
            moves = self.moves = {}
        n = moves.get(d)
        if n is not None:
            moves[d] = n + 1
        elif len(moves) < MAX_TRACKED_STEPS:
            moves[d] = 1
        else:  # the new size and each counted one lose one; those at 0 go
            self.moves = {x: c - 1 for x, c in moves.items() if c > 1}

    def recurring_moves(self, res: float) -> list[tuple[float, int]]:
        """The sizes of the moves above ``res`` seen RESOLUTION_SEEN times, ascending, and
        how often each (sizes within 1e-9 of the largest kept value counted as one)."""
        moves = self.moves
        if not moves:
            return []
        tol = 1e-9 * self.max_abs
        low = res + tol
        sizes: list[list[float]] = []
        for x in sorted(moves):
            if x <= low:
                continue
            if sizes and x - sizes[-1][0] <= tol:
                sizes[-1][1] += moves[x]
            else:
                sizes.append([x, moves[x]])
        return [(x, int(c)) for x, c in sizes if c >= RESOLUTION_SEEN]

    def usual_step(self, res: float) -> float:
        """The step the series moves in above its resolution ``res`` (> 0), as
        :func:`~edgewise.quality.spikes.usual_step` takes it on the moves so far: the first
        size seen RESOLUTION_SEEN times as a move that is JITTER_GAP times the recurring
        size below it (``res`` the first), where the moves of that size and the larger
        recurring ones are MIN_STATE_SHARE of the steps so far; else ``res``.

        >>> st = _State(0, 0.066, max_abs=0.2)
        >>> for d in [0.002] * 4 + [0.068] * 3:
        ...     st.count_move(d)
        >>> st.judged = 20
        >>> round(st.usual_step(0.002), 3)            # 3 of 19 steps: routine
        0.068
        >>> st.judged = 100; st.usual_step(0.002)     # 3 of 99: a few large moves
        0.002
        """
        recur = self.recurring_moves(res)
        need = MIN_STATE_SHARE * (self.judged - 1)
        above = sum(c for _, c in recur)  # the moves of the recurring sizes from here up
        prev = res
        for s, c in recur:
            if s >= JITTER_GAP * prev and above >= need:
                return s
            above -= c
            prev = s
        return res

    def add_noise(self, change: float) -> None:
        """Count ``change`` (> 0: a change between two kept values that are no outliers,
        less the window's trend) towards the long-run noise, and keep its level up to
        date: MAD_SCALE times the median change / sqrt 2, over the bins (past
        :data:`NOISE_MEMORY` changes the counts so far weigh half, so the level follows a
        sensor whose noise changes; past :data:`MAX_NOISE_BINS` bins the lightest goes).

        >>> st = _State(0, 20.0)
        >>> for d in [0.5, 0.7, 0.6, 0.5, 30.0]:
        ...     st.add_noise(d)
        >>> round(st.noise, 2)        # 0.6, the median: one jump moves it little
        0.63
        >>> big = _State(0, 1e308)    # totals past the largest float: kept in BIG_UNIT
        >>> for d in [1e308, 1.01e308, 1e308, 1.01e308, 1e308]:
        ...     big.add_noise(d)
        >>> big.noise_unit == BIG_UNIT, f"{big.noise:.4g}"
        (True, '1.054e+308')
        """
        if not 0.0 < change < math.inf:
            return  # a change past the largest float (1.7e308 to -1.7e308) has no bin
        bins = self.noise_bins
        if bins is None:
            bins = self.noise_bins = {}
        at = int(HOLD_BINS_PER_OCTAVE * math.log2(change))
        b = bins.get(at)
        unit = self.noise_unit
        if b is not None:
            total = b[1] + change * unit
            if total == math.inf:  # changes near the largest float: totals in BIG_UNIT
                unit = self.noise_unit = BIG_UNIT
                for c in bins.values():
                    c[1] *= BIG_UNIT
                total = b[1] + change * unit
            b[0] += 1.0
            b[1] = total
        else:
            bins[at] = [1.0, change * unit]
            if len(bins) > MAX_NOISE_BINS:
                del bins[min(bins, key=lambda k: bins[k][0])]
        n = self.noise_n = self.noise_n + 1
        if n >= NOISE_MEMORY:  # the counts so far weigh half; mean of each bin kept
            for k in [k for k, b in bins.items() if b[0] < 0.5]:
                del bins[k]
            for b in bins.values():
                b[0] /= 2
                b[1] /= 2
            n = self.noise_n = n // 2
        if n < 64 or not n % 16:  # the median moves slowly once many are counted
            half = sum(b[0] for b in bins.values()) / 2
            cum = 0.0
            for k in sorted(bins):
                b = bins[k]
                cum += b[0]
                if cum >= half:
                    self.noise = MAD_SCALE * b[1] / b[0] / math.sqrt(2) / unit
                    break

    def kept_at(self, ts: int) -> float | None:
        """The value kept at time ``ts`` among the window's, or None (a time not kept,
        or older than the window's times).

        >>> st = _State(3, 22.0, times=deque([1, 2, 3]), window=deque([20.0, 21.0, 22.0]))
        >>> st.kept_at(2), st.kept_at(0), st.kept_at(4)
        (21.0, None, None)
        """
        times = self.times
        if not times or ts < times[0]:
            return None
        i = bisect.bisect_left(times, ts)
        if i == len(times) or times[i] != ts:
            return None
        return self.window[len(self.window) - len(times) + i]

    def typical_hold(self) -> float:
        """The series' typical hold over the runs counted: the median of their holds
        weighted by the time each counts with, as :mod:`~edgewise.quality.stuck` takes it
        (0.0 with none).

        >>> st = _State(0, 20.0)
        >>> for h in [1, 1, 1, 50, 50]:   # 3 of its 103 time units in holds of 1
        ...     st.add_hold(h)
        >>> st.typical_hold(), _State(0, 20.0).typical_hold()
        (50.0, 0.0)
        >>> st.add_hold(5000, 100)      # a freeze counts as 100 units: not typical
        >>> st.typical_hold()
        50.0
        """
        return _bins_median(self.hold_bins)

    def add_hold(self, hold: float, weight: float | None = None) -> None:
        """Count a finished run's ``hold`` (its first reading to the next change, > 0) in
        its bin, with the time it counts with towards the typical hold (``weight``, the
        hold itself by default); past MAX_HOLD_BINS bins the two nearest are merged.

        >>> st = _State(0, 20.0)
        >>> for h in [60, 60, 120, 61]:
        ...     st.add_hold(h)
        >>> st.hold_bins                   # 60 and 61 share a bin
        [[47, 3, 181, 181], [55, 1, 120, 120]]
        """
        if self.hold_bins is None:
            self.hold_bins = []
        _bins_add(self.hold_bins, hold, hold if weight is None else weight)

    def gap_cap(self, interval: int) -> int:
        """Count ``interval`` (> 0) between kept readings towards the expected spacing,
        their lower median over the bins (as :func:`~edgewise.quality.gaps.expected_interval`
        takes it, exact while the intervals in a bin are equal); the longest an interval
        counts in a hold: GAP_FACTOR expected spacings, in whole units (as the batch).

        >>> st = _State(0, 20.0)
        >>> [st.gap_cap(dt) for dt in (60, 60, 172800, 60, 61)]
        [150, 150, 150, 150, 150]
        """
        b = self.gap_bin
        if b is not None and interval == self.gap_every:
            # the median's own bin, whose mean it is: the median stays (the fixed spacing)
            b[1] += 1
            b[2] += interval
            b[3] += 1
            return self.gap_max
        if self.gap_bins is None:
            self.gap_bins = []
        bins = self.gap_bins
        _bins_add(bins, interval, 1)
        every = self.gap_every = _bins_median(bins)
        self.gap_max = int(GAP_FACTOR * every)
        self.gap_bin = None
        at = int(HOLD_BINS_PER_OCTAVE * math.log2(every)) if every > 0 else None
        for b in bins:
            if b[0] == at and b[2] / b[1] == every:
                self.gap_bin = b
        return self.gap_max

    def new_run(self, ts: int, excess: int, stuck_run: int) -> None:
        """A kept value that differs from the last one begins a run at ``ts``: the run
        before ends there (its hold is counted, when its start is known, less the time its
        gaps and the interval to ``ts`` lasted past their cap: ``excess`` for the latter),
        and the new one has no typical hold worked out yet."""
        if self.run_start is not None:
            hold = ts - self.run_start - self.run_excess - excess
            n = self.run
            if self.hold_bins is None:
                self.hold_bins = []
            weight = hold * stuck_run // n if n > stuck_run else hold
            _bins_add(self.hold_bins, hold, weight)
            # a value read once is no rest: its time counts from its second reading
            value, freq = self.last_value, self.freq
            if (n > 1 or self.run_known) and freq is not None and value in freq:
                rest = self.rest
                if rest is None:
                    rest = self.rest = {}
                rest[value] = rest.get(value, 0) + weight
        self.run = 1
        self.run_start = ts
        self.run_excess = 0
        self.run_stuck = False
        self.run_rest = False
        self.run_known = self.known
        self.typical = -1.0

    def upgrade(self, stuck_run: int) -> None:
        """Seed the fields a state saved before them lacks: a boolean's levels from its
        counts of 0s and 1s, another series' from its spike window (the best of its past
        still known); no hold yet, so its run's length alone decides until a new run; a
        run the old rule already counted as stuck goes on counting."""
        old = vars(self)
        zero_one = bool(old.pop("zero_one", False))
        kept, ones = int(old.pop("kept", 0)), int(old.pop("ones", 0))
        self.levels, self.many, self.judged, self.switches = {}, False, 0, 0
        if zero_one and kept:
            self.levels = {v: n for v, n in ((0.0, kept - ones), (1.0, ones)) if n}
            self.judged = kept
        else:
            for v in self.window:
                self.track(v)
        self.prev = self.last_value
        self.run_start = None
        self.typical = -1.0
        self.run_stuck = self.run >= stuck_run and not (zero_one and 0 < ones < kept)

    def slot(self, value: float) -> tuple[float, float, int, int]:
        """Where the change to ``value`` from the last kept one goes among the candidate
        steps: ``(value, change, index, found)``, found 1 when that candidate is there, 0
        when it would be new, -1 when the change is no candidate (no change, or not below
        the resolution). Worked out once a reading, for the spike test and for keeping it."""
        d = value - self.last_value
        if d == 0:
            return value, 0.0, 0, -1
        if d < 0:
            d = -d
        a = value if value >= 0 else -value
        tol = 1e-9 * (a if a > self.max_abs else self.max_abs)
        if d >= self.step - tol:
            return value, d, 0, -1
        steps = self.cand_steps
        i = bisect.bisect_left(steps, d - tol)
        return value, d, i, int(i < len(steps) and steps[i] <= d + tol)

    def kind(self, slot: tuple[float, float, int, int], flagged: bool) -> int:
        """How the change of ``slot`` counts towards the resolution if its value is kept,
        ``flagged`` as an outlier or not (``_NONE``, ``_CLEAN``, ``_UP`` or ``_DOWN``), as
        :func:`~edgewise.quality.spikes.resolution` counts it: one between two readings
        that are no outliers by itself; one into or out of an outlier by itself when small
        beside both values (a quantum, not a dropout) and no larger than every move
        between two readings that are no outliers so far (a glitch by 4 of a sensor
        whose readings move by tenths is none), else, large, by the way the outlier lay;
        one between two outliers only when small."""
        value, d, _, found = slot
        if found < 0:
            return _NONE
        last_out = self.last_flagged
        if not (flagged or last_out):
            return _CLEAN
        last = self.last_value
        if d < RESOLUTION_SHARE * min(abs(value), abs(last)):
            return _CLEAN if d <= self.finest + 1e-9 * self.max_abs else _NONE
        if flagged and last_out:
            return _NONE
        spike, other = (value, last) if flagged else (last, value)
        return _UP if spike > other else _DOWN

    def seen(self, slot: tuple[float, float, int, int], kind: int) -> int:
        """Times the candidate step of ``slot`` counts as seen, with its change of ``kind``
        (not ``_NONE``) counted too."""
        _, _, i, found = slot
        n, lone, ways = ((self.cand_counts[i], self.cand_lone[i], self.cand_ways[i])
                         if found else (0, 0, 0))
        if kind == _CLEAN:
            n += 1
        else:
            lone, ways = lone + 1, ways | kind
        return n + (lone if ways == _UP | _DOWN else 0)

    def resolution_after(self, slot: tuple[float, float, int, int],
                         outlier: bool = False) -> float:
        """The resolution (0 if none yet) once the change of ``slot`` is counted too, as
        that of a reading that is an ``outlier`` by the window or not: a batch's
        resolution counts the steps of the very reading it judges, with its outliers
        (no resolution floor) as such, so the third move by a tenth of a sensor that
        reports tenths, or its first blip down after one up, is judged knowing its
        resolution, and a glitch's third way up is not."""
        _, d, i, found = slot
        kind = self.kind(slot, outlier)
        if kind != _NONE and self.seen(slot, kind) >= RESOLUTION_SEEN:
            return self.cand_steps[i] if found else d
        return self.step if self.step < math.inf else 0.0

    def keep(self, slot: tuple[float, float, int, int], flagged: bool = False,
             new: bool = False) -> None:
        """Count the change to the kept value of ``slot`` (after the first) towards the
        resolution as its :meth:`kind` says, and make that value the last one,
        ``flagged`` as an outlier or not.

        >>> st = _State(0, 20.0)
        >>> for v in [100.0, 20.0, 20.5, 20.0, 100.0]:
        ...     st.keep(st.slot(v))
        >>> st.step, st.cand_steps, st.cand_counts   # 80 was seen 3 times: 0.5 only twice
        (80.0, [0.5], [2])
        >>> st.resolution_after(st.slot(100.5)), st.resolution_after(st.slot(101.0))
        (0.5, 80.0)
        >>> st.keep(st.slot(100.5)); st.step, st.cand_steps  # a third 0.5
        (0.5, [])
        >>> st = _State(0, 100.0)
        >>> for v in [0.0, 100.0] * 3:            # the same dropout, flagged each time
        ...     st.keep(st.slot(v), flagged=v == 0.0)
        >>> st.step, st.cand_steps, st.cand_lone  # its ways down and up: no resolution
        (inf, [100.0], [6])
        >>> st = _State(0, 100.0)                 # moves by 0.5, a glitch by 20 thrice
        >>> for v in [100.5, 100.0] + [120.0, 100.0] * 3:
        ...     st.keep(st.slot(v), flagged=v == 120.0)
        >>> st.step, st.finest, st.resolution_after(st.slot(120.0), outlier=True)
        (inf, 0.5, 0.0)
        """
        value, d, i, found = slot
        kind = self.kind(slot, flagged)
        seen = self.seen(slot, kind) if kind != _NONE else 0
        a = value if value >= 0 else -value
        if a > self.max_abs:
            self.max_abs = a
        if d > 0.0:
            clean = not (flagged or self.last_flagged)
            if clean and d > 1e-9 * self.max_abs and d < self.finest:
                self.finest = d  # the finest move between readings that are no outliers
            if ((clean or kind == _CLEAN or new) and (self.known or self.step < math.inf)
                    and d < math.inf):  # a move past the largest float is no usual step
                self.count_move(d)  # a move, as usual_step counts it (a recurring value)
        self.last_value = value
        self.last_flagged = flagged
        if kind == _NONE:
            return  # no change, by the resolution or more, or between two spikes
        steps, counts = self.cand_steps, self.cand_counts
        lone, ways = self.cand_lone, self.cand_ways
        if seen >= RESOLUTION_SEEN:
            # the first of these seen, as spikes.resolution takes it; coarser candidates
            # can no longer become the resolution
            self.step = steps[i] if found else d
            del steps[i:], counts[i:], lone[i:], ways[i:]
        elif found:
            if kind == _CLEAN:
                counts[i] += 1
            else:
                lone[i] += 1
                ways[i] |= kind
        elif i < MAX_CANDIDATE_STEPS:  # else it would be the largest, and dropped
            steps.insert(i, d)
            counts.insert(i, int(kind == _CLEAN))
            lone.insert(i, int(kind != _CLEAN))
            ways.insert(i, 0 if kind == _CLEAN else kind)
            if len(steps) > MAX_CANDIDATE_STEPS:
                for xs in (steps, counts, lone, ways):
                    xs.pop()


def _bins_add(bins: list[list[float]], x: float, weight: float) -> None:
    """Count ``x`` (> 0) with ``weight`` in ``bins`` (``[bin, count, total, total
    weight]``, bin: HOLD_BINS_PER_OCTAVE * log2 of x, ascending); past MAX_HOLD_BINS bins
    the two nearest are merged into one (at the bin of the heavier). An ``x`` that is no
    positive finite number has no bin and is not counted."""
    if not 0 < x < math.inf:
        return
    at = int(HOLD_BINS_PER_OCTAVE * math.log2(x))
    i = 0
    while i < len(bins) and bins[i][0] < at:
        i += 1
    if i < len(bins) and bins[i][0] == at:
        b = bins[i]
        b[1] += 1
        b[2] += x
        b[3] += weight
        return
    bins.insert(i, [at, 1, x, weight])
    if len(bins) > MAX_HOLD_BINS:
        j = min(range(len(bins) - 1), key=lambda k: bins[k + 1][0] - bins[k][0])
        a, b = bins[j], bins[j + 1]
        bins[j] = [a[0] if a[3] >= b[3] else b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]]
        del bins[j + 1]


def _bins_median(bins: list[list[float]] | None) -> float:
    """The mean of the bin in which the cumulative weight of ``bins`` (ascending) first
    reaches half its total: their weighted median (0.0 with none)."""
    if not bins:
        return 0.0
    half = sum(b[3] for b in bins) / 2
    cum = 0.0
    for b in bins:
        cum += b[3]
        if cum >= half:
            return b[2] / b[1]
    return bins[-1][2] / bins[-1][1]  # not reached: the last bin takes cum to the sum


def _mid(a: float, b: float) -> float:
    """The midpoint of ``a`` and ``b``, as ``(a + b) / 2`` gives it, but finite for finite
    ones: two readings near the largest float summed past it (1.7e308 twice gave inf, a
    centre no reading could be judged by).

    >>> _mid(20.0, 20.5), _mid(1.7e308, 1.7e308), _mid(-1.7e308, -1.7e308)
    (20.25, 1.7e+308, -1.7e+308)
    """
    m = (a + b) / 2
    return m if -math.inf < m < math.inf else a / 2 + b / 2


def _unit(st: _State, value: float, window: list[float]) -> float:
    """The unit the spike test judges ``value`` in against ``window`` (the stream's kept
    values) with the run of outliers of ``st`` under way: :data:`BIG_UNIT` where one of
    them lies beyond :data:`BIG_VALUE`, else 1.0 (ordinary readings, not scaled).

    >>> st = _State(0, 20.0, max_abs=20.0)
    >>> _unit(st, 21.0, [20.0] * 5), _unit(st, -1.7e308, [20.0] * 5)
    (1.0, 5.421010862427522e-20)
    """
    big = value if value >= 0 else -value
    if st.shift_n:
        big = max(big, abs(st.shift_lo), abs(st.shift_hi), abs(st.shift_last))
    if big > BIG_VALUE:
        return BIG_UNIT
    if st.max_abs <= BIG_VALUE:  # the largest kept value: the window's are no larger
        return 1.0
    return BIG_UNIT if max(max(window), -min(window)) > BIG_VALUE else 1.0


def _median(xs: list[float]) -> float:
    """The median as numpy computes it (mean of the two middle values for an even count).

    >>> _median([3.0, 1.0, 2.0]), _median([4.0, 1.0, 2.0, 3.0])
    (2.0, 2.5)
    """
    xs.sort()  # the callers' lists are their own
    mid = len(xs) >> 1
    return xs[mid] if len(xs) & 1 else _mid(xs[mid - 1], xs[mid])


def _real(value: object) -> float | None:
    """``value`` as a float when it is a real number, else ``None`` (an invalid reading):
    numpy's int64 and float32 too (``isinstance(x, int | float)`` dropped them, while the
    batch report reads them with ``float()``), and a boolean as 1/0, as the gateway
    stores one; an int too large for a float is none.

    >>> import numpy as np
    >>> _real(np.int64(7)), _real(np.float32(0.5)), _real(True), _real("7"), _real(10**400)
    (7.0, 0.5, 1.0, None, None)
    """
    if not isinstance(value, numbers.Real | np.bool_):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


class StreamCleaner:
    """Clean readings one at a time, per (device, metric), counting every removal.

    Parameters
    ----------
    limits
        Per-metric :class:`~edgewise.quality.limits.Limits` (range and rate).
    spike_window
        Kept values the Hampel test looks back on (at least 5 are needed to judge), and
        whose times a late re-delivery is matched against (a duplicate or conflict).
    n_sigmas
        Hampel threshold in robust standard deviations.
    drop_spikes
        Remove spikes instead of only flagging them.
    stuck_run
        Identical readings in a row that make a stuck run, which must also last
        ``stuck_run`` times the series' typical hold (see the module); the run's readings,
        those before too, count as flagged ``stuck`` from the one at which it qualifies.
    """

    def __init__(
        self,
        limits: Mapping[str, Limits] | None = None,
        spike_window: int = 15,
        n_sigmas: float = 5.0,
        drop_spikes: bool = False,
        stuck_run: int = 20,
    ) -> None:
        if limits is not None and not all(isinstance(v, Limits) for v in limits.values()):
            raise QualityError("The 'limits' of StreamCleaner must map metric names to Limits.")
        if not isinstance(spike_window, int) or spike_window < 5:
            raise QualityError(
                f"The 'spike_window' parameter of StreamCleaner must be an int >= 5. "
                f"Got {spike_window!r} instead."
            )
        if not isinstance(stuck_run, int) or stuck_run < 2:
            raise QualityError(
                f"The 'stuck_run' parameter of StreamCleaner must be an int >= 2. "
                f"Got {stuck_run!r} instead."
            )
        if not (isinstance(n_sigmas, int | float) and n_sigmas > 0):
            raise QualityError(
                f"The 'n_sigmas' parameter of StreamCleaner must be > 0. Got {n_sigmas!r}."
            )
        self.limits = dict(limits or {})
        self.spike_window = spike_window
        self.n_sigmas = n_sigmas
        self.drop_spikes = drop_spikes
        self.stuck_run = stuck_run
        self._state: dict[tuple[str, str], _State] = {}
        self.removed: Counter[str] = Counter()
        self.flagged: Counter[str] = Counter()
        self.by_key: dict[tuple[str, str], Counter[str]] = {}
        self.seen = 0
        self.kept = 0

    def _remove(self, key: tuple[str, str], reason: str) -> None:
        self.removed[reason] += 1
        self.by_key.setdefault(key, Counter())[reason] += 1

    def _judge(self, st: _State, value: float, slot: tuple[float, float, int, int]) -> int:
        """How ``value`` stands against the kept window: :data:`_IN` (no outlier),
        :data:`_OUT` (an outlier by the window kept unflagged: a step of the sensor's
        resolution or usual step; or one kept before the window could judge it),
        :data:`_SHIFT` (an outlier that makes or goes on with a level shift,
        :meth:`_State.shifted`) or :data:`_SPIKE` (a Hampel outlier beyond every floor
        that makes no level shift). The centre is the window's median or, where the
        window's spread about its median is :data:`TREND_NOISE` times the long-run noise
        and its resistant line (the slope between the medians of its last two thirds)
        fits it more closely, that line extrapolated to this reading; the
        scale is the spread about that centre, never below the stream's long-run noise
        (:data:`TREND_ERROR` times it about a line), its resolution or 1e-9 of the
        centre. Where the line misses the window's last reading, no outlier, by
        :data:`TURN` floors, an outlier of it is judged also against the median and the
        last readings' path."""
        # Plain Python on the short window: numpy's per-call overhead made this the
        # gateway's costliest per-reading step (26 us); same medians, same result.
        win = st.window
        n = len(win)
        if n < 5:
            st.shift_n = 0
            st.slope = 0.0
            return _OUT  # not judged: its steps count as an outlier's
        if st.two_state():
            st.shift_n = 0
            st.slope = 0.0
            return _IN  # a two-state series' switch is no spike
        at = st.band(value, False, self.n_sigmas)
        if at == _AT or at == _FAR:  # two noisy levels: a switch is no spike, a far one is
            st.shift_n = 0
            st.slope = 0.0
            return _IN if at == _AT else _SPIKE
        w = list(win)
        # readings near the largest float are judged in BIG_UNIT: exact, and finite
        noise = st.noise
        unit = (1.0 if st.max_abs <= BIG_VALUE and -BIG_VALUE <= value <= BIG_VALUE
                and not st.shift_n else _unit(st, value, w))
        if unit != 1.0:
            w = [x * unit for x in w]
            value *= unit
            noise *= unit
        if unit != st.shift_unit:
            st.in_unit(unit)
        h, odd = n >> 1, n & 1
        srt = sorted(w)
        span = srt[-1] - srt[0]
        if st.bands is None and (value > srt[-1] + span or value < srt[0] - span):
            # beyond the window by its span: where the window spans a switch, a reading
            # far off two noisy levels stands out from no median; look at the levels
            at = st.band(value / unit, True, self.n_sigmas)
            if at == _AT or at == _FAR:
                st.shift_n = 0
                st.slope = 0.0
                return _IN if at == _AT else _SPIKE
        centre = med = srt[h] if odd else _mid(srt[h - 1], srt[h])
        srt = sorted([x - med if x > med else med - x for x in w])
        scale = MAD_SCALE * (srt[h] if odd else (srt[h - 1] + srt[h]) / 2)
        g = n // 3
        slope = 0.0
        if g > 2 and scale > TREND_NOISE * noise:  # a spread beyond the noise
            lo, hi = n - 2 * g, n - g
            mid, last = _median(w[lo:hi]), _median(w[hi:])
            if mid != last:  # the resistant line of the last two thirds
                b = (last - mid) / g
                r = [x - b * k for k, x in enumerate(w[lo:], lo)]
                level = _median(r[g:])
                spread = MAD_SCALE * _median([x - level if x > level else level - x
                                              for x in r])
                if spread < scale:  # a trend clearer than the spread about the median
                    centre, scale, slope = level + b * n, spread, b
        st.slope = slope / unit
        a = centre if centre >= 0 else -centre
        floor = max(scale, noise * TREND_ERROR if slope else noise, 1e-9 * a, 1e-300 * unit)
        dev = abs(value - centre)
        n_sigmas = self.n_sigmas
        out = dev > n_sigmas * floor
        if not (out or st.shift_n):
            st.shift_n = 0
            return _IN  # within the floors the window's own noise only raises
        out = out and not st.is_level(value / unit)
        if out and abs(w[-1] - centre + slope) > TURN * floor:
            # the window's line misses its own last reading: unless that one was an
            # outlier, the series turned (a cycle's peak, its morning rise, a ramp's
            # end); judge against the window's median and the last readings' path too
            mk = st.marks
            k = len(mk) if mk else 0  # a state saved before the marks: none known
            if not (k and mk[-1] in _OUTLIERS):  # type: ignore[index]
                dev = min(dev, abs(value - med))
                if not (k > 2 and (mk[-2] in _OUTLIERS  # type: ignore[index]
                                   or mk[-3] in _OUTLIERS)):  # type: ignore[index]
                    dev = min(dev, abs(value - w[-1] - (w[-1] - w[-3]) / 2))
                out = dev > n_sigmas * floor
        # relative: any units; never below the resolution (a move by a tenth of a sensor
        # that reports tenths is no spike), once a step has recurred enough to be one
        res = st.resolution_after(slot, out)
        if res * unit > floor:
            floor = res * unit
        limit = n_sigmas * floor
        if out and dev > limit and res > 0.0:  # jitter below the step it moves in
            step = st.usual_step(res) * unit
            if step > floor:
                limit = n_sigmas * step
        if not (out and dev > limit):
            st.held(value, limit)
            return _OUT if out else _IN
        at = st.band(value, True, self.n_sigmas)
        if at == _AT or at == _FAR:  # a switch between two noisy levels, or far off both
            st.shift_n = 0
            return _IN if at == _AT else _SPIKE
        return _SHIFT if st.shifted(value, 1 if value > centre else -1, centre, limit) else _SPIKE

    def _outlasts(self, st: _State, hold: float | None) -> bool:
        """Whether the run under way, held ``hold`` so far (None: its start is not known,
        a run under way in a state saved before), lasts ``stuck_run`` times the series'
        typical hold (none yet: it does)."""
        if hold is None:
            return True
        if st.typical < 0:  # once a run: the holds do not change while it goes on
            st.typical = st.typical_hold()
        # a hair under stuck_run holds: float sums of equal steps, as in quality.stuck
        return hold >= self.stuck_run * st.typical * (1 - 1e-9)

    def clean_one(self, reading: Reading) -> Reading | None:
        """Return the reading if it is kept, else ``None`` (and count why)."""
        self.seen += 1
        key = (reading.device_id, reading.metric)
        value = reading.value
        if type(value) is not float:  # the gateway's readings are floats: no look-up
            value = _real(value)
        if value is None or not math.isfinite(value):
            self._remove(key, "invalid")
            return None
        # the value's own faults before its relation to the kept history: an out-of-range
        # reading at a kept time is out of range, as the batch report counts it, no conflict
        lim = self.limits.get(reading.metric)
        lo, hi = PHYSICAL_RANGE.get(reading.unit or "", (-math.inf, math.inf))
        if (lim is not None and not lim.in_range(value)) or not lo <= value <= hi:
            self._remove(key, "out_of_range")
            return None
        st = self._state.get(key)
        if st is not None:
            if reading.ts_ns == st.spike_ts:
                # the time of the last spike dropped (drop_spikes): it holds that time, as
                # a flagged one does (a re-sent spike counted a spike again, and its third
                # delivery made it a level, kept)
                self._remove(key, "duplicate" if value == st.spike_value else "conflict")
                return None
            if reading.ts_ns < st.last_ts:
                # a late re-delivery of a time the window holds is that time's duplicate
                # or conflict, as the batch report counts it; a new time is out of order
                kept = st.kept_at(reading.ts_ns)
                self._remove(key, "out_of_order" if kept is None else
                             "duplicate" if value == kept else "conflict")
                return None
            if reading.ts_ns == st.last_ts:
                self._remove(key, "duplicate" if value == st.last_value else "conflict")
                return None
        if st is not None and lim is not None and lim.max_rate is not None:
            if changes_too_fast(st.last_ts, st.last_value, reading.ts_ns, value,
                                lim.max_rate):  # as the batch report judges it
                self._remove(key, "rate")
                return None
        ts = reading.ts_ns
        if st is None:
            st = self._state[key] = _State(ts, value, deque(maxlen=self.spike_window),
                                           max_abs=abs(value), last_flagged=True,
                                           levels={}, run_start=ts)
            st.track(value)
            out, judged = True, _OUT  # the first reading: nothing to judge it by
        else:
            # the value counts towards the levels before it is judged, as the batch report
            # judges every reading knowing its own (a heater is two-state from its third
            # reading at 1500 W on)
            st.track(value)
            slot = st.slot(value)
            judged = self._judge(st, value, slot)
            spike, out = judged == _SPIKE, judged in (_OUT, _SPIKE)
            if spike:
                if self.drop_spikes:
                    self._remove(key, "spike")
                    st.spike_ts, st.spike_value = ts, value
                    return None
                self.flagged["spike"] += 1
            gap = ts - st.last_ts
            b = st.gap_bin
            if b is not None and gap == st.gap_every:  # gap_cap's path for the fixed spacing
                b[1] += 1
                b[2] += gap
                b[3] += 1
                cap = st.gap_max
            else:
                cap = st.gap_cap(gap)
            # an interval counts in a hold for GAP_FACTOR expected spacings at most
            excess = gap - cap if gap > cap else 0
            if value == st.last_value:
                st.run += 1
                st.run_excess += excess
            else:
                st.new_run(ts, excess, self.stuck_run)
            change = value - st.last_value
            marks = st.marks
            rough = judged != _IN  # an outlier, or of a level shift: shows no noise
            last_rough = marks[-1] != _IN if marks else st.last_flagged
            if change == 0.0:
                if last_rough and st.many and marks and len(marks) > 1 and marks[-2] == _IN:
                    # a sample-and-hold sensor's new value, held: it moved, it did not
                    # glitch, and the move shows its noise (else every move of one read
                    # polled again and again stood out from a window of repeats)
                    change = abs(st.last_value - st.window[-2] - st.slope)
            elif not (rough or last_rough):
                change = abs(change - st.slope)
            else:
                change = 0.0
            if change > 0.0:
                st.add_noise(change)
            st.keep(slot, flagged=out, new=len(st.window) <= 5)
            st.last_ts = ts
            if st.run >= self.stuck_run and not st.few_levels():
                if st.run_stuck:
                    self.flagged["stuck"] += 1
                elif not st.run_rest and self._outlasts(
                        st, ts - st.run_start - st.run_excess + gap - excess
                        if st.run_start is not None else None):
                    if st.at_rest():  # where the series rests: no freeze, all run long
                        st.run_rest = True
                    else:
                        # the whole run once it qualifies, as the batch report counts it
                        st.run_stuck = True
                        self.flagged["stuck"] += st.run
        st.window.append(value)
        times, marks = st.times, st.marks
        if times is None:  # a state saved before the times: they start here
            times = st.times = deque(maxlen=st.window.maxlen)
        if marks is None:
            marks = st.marks = deque(maxlen=st.window.maxlen)
        times.append(ts)
        marks.append(judged)
        self.kept += 1
        return reading

    def forget(self, device_id: str) -> None:
        """Drop the kept history of every metric of ``device_id`` (the device was deleted);
        the global counts stay."""
        for key in [k for k in self._state if k[0] == device_id]:
            del self._state[key]
        for key in [k for k in self.by_key if k[0] == device_id]:
            del self.by_key[key]

    def export_state(self) -> dict[tuple[str, str], object]:
        """The per-stream history (last time and value, spike window and its times,
        stuck run, resolution, long-run noise) to save across a restart
        (:data:`STATE_VERSION` is its layout; a state saved before the window's times and
        the long-run noise were kept loads, and learns them from there); the counts are
        since start and not part of it.

        >>> c = StreamCleaner()
        >>> _ = c.clean_one(Reading("d", "t", 1, 20.0))
        >>> c2 = StreamCleaner(); c2.import_state(c.export_state(), STATE_VERSION)
        True
        >>> c2.clean_one(Reading("d", "t", 1, 20.0)), dict(c2.removed)  # re-sent
        (None, {'duplicate': 1})
        """
        return dict(self._state)

    def import_state(self, state: Mapping[tuple[str, str], object], version: object) -> bool:
        """Take over the per-stream history :meth:`export_state` gave, if its layout
        ``version`` is this one's :data:`STATE_VERSION` (else nothing changes and the streams
        start afresh); returns whether it was taken. The spike windows take this cleaner's
        ``spike_window``.
        """
        if version != STATE_VERSION or not isinstance(state, Mapping):
            return False
        if not all(isinstance(st, _State) for st in state.values()):
            return False
        for st in state.values():
            if st.window.maxlen != self.spike_window:  # type: ignore[attr-defined]
                st.window = deque(st.window, maxlen=self.spike_window)  # type: ignore[attr-defined]
                for name in ("times", "marks"):  # aligned with the window's last values
                    if getattr(st, name) is not None:
                        setattr(st, name, deque(getattr(st, name), maxlen=self.spike_window))
            if st.levels is None:  # type: ignore[attr-defined]
                st.upgrade(self.stuck_run)  # type: ignore[attr-defined]
            for b in st.hold_bins or ():  # type: ignore[attr-defined]
                if len(b) == 3:  # saved before the time counted: the hold, as it was
                    b.append(b[2])
        self._state = dict(state)  # type: ignore[arg-type]
        return True

    def clean(self, readings: Iterable[Reading]) -> list[Reading]:
        """Clean readings in arrival order; return the kept ones."""
        return [r for r in readings if self.clean_one(r) is not None]

    def counts(self) -> dict[str, object]:
        """Seen, kept, removed by reason, flagged by reason."""
        return {
            "seen": self.seen,
            "kept": self.kept,
            "removed": dict(self.removed),
            "flagged": dict(self.flagged),
        }
