"""Cleaning and checks between validation and storage: make a fleet's data trustworthy.

Batch checks over one metric's series (numpy arrays of UTC nanosecond times and float
values) live one per file: :mod:`~edgewise.quality.order`, :mod:`~edgewise.quality.duplicates`,
:mod:`~edgewise.quality.resample`, :mod:`~edgewise.quality.gaps`,
:mod:`~edgewise.quality.spikes`, :mod:`~edgewise.quality.stuck`,
:mod:`~edgewise.quality.drift`, :mod:`~edgewise.quality.limits`,
:mod:`~edgewise.quality.units`, :mod:`~edgewise.quality.counters`.
:class:`~edgewise.quality.stream.StreamCleaner` applies the removing checks to readings
one at a time, per (device, metric), and counts every removed reading by reason;
:func:`~edgewise.quality.report.device_report` summarises a device's data quality. Bad
arguments raise :class:`~edgewise.errors.QualityError`.
"""
