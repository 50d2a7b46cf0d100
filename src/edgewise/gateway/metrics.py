"""Gateway counters and gauges, rendered in the Prometheus text format.

Names are the agreed ones (``edgewise_readings_ingested_total`` …); labels are plain
strings. Thread-safe: the MQTT loop, the HTTP server and the detection worker all count.

>>> m = Metrics()
>>> m.inc("edgewise_readings_rejected_total", 2, reason="bad_type")
>>> m.get("edgewise_readings_rejected_total", reason="bad_type")
2.0
>>> print([l for l in m.render().splitlines() if "bad_type" in l][0])
edgewise_readings_rejected_total{reason="bad_type"} 2
"""

from __future__ import annotations

import threading

__all__ = ["HELP", "Metrics"]

#: Every metric the gateway exports, with its help text and type.
HELP: dict[str, tuple[str, str]] = {
    "edgewise_readings_ingested_total": ("counter", "Readings received and decoded (valid)."),
    "edgewise_readings_rejected_total": ("counter", "Readings or payloads rejected, by reason."),
    "edgewise_messages_deadlettered_total": (
        "counter", "MQTT messages sent to a dead-letter topic, by reason."),
    "edgewise_readings_stored_total": ("counter", "Readings committed to the store."),
    "edgewise_readings_duplicate_total": ("counter", "Re-delivered readings stored once."),
    "edgewise_readings_conflict_total": (
        "counter", "Readings whose value differed from the stored one (kept as conflicts)."),
    "edgewise_alerts_total": ("counter", "Alerts raised, by kind."),
    "edgewise_alerts_suppressed_total": (
        "counter", ("Anomalies held back: below the bar a false-alarm verdict on an alert "
                    "like them set (EDGEWISE_ALERT_FEEDBACK); one that grows past it is "
                    "raised then.")),
    "edgewise_seq_gaps_total": (
        "counter", "Message seq gaps still missing after the grace period."),
    "edgewise_seq_missing_total": ("counter", "Messages missing in reported seq gaps."),
    "edgewise_auth_failures_total": ("counter", "Failed device authentications, by reason."),
    "edgewise_mqtt_connections_closed_total": (
        "counter", ("MQTT connections closed by the broker, by reason (revoked, too_large, "
                    "taken_over, no_session, connect_timeout, protocol_error, keepalive: "
                    "silent for 1.5x its keep-alive, write_stalled: took nothing written to "
                    "it for 30 s, pending_per_source, pending_total: over the caps on "
                    "connections not yet logged in, per_device: over its connection cap, "
                    "qos2_backlog: over 64 QoS 2 messages or 8 MiB waiting for PUBREL, "
                    "slow_packet: a packet body not sent in time, takeover_loop: a CONNECT "
                    "refused, CONNACK 2, that would take over its client id again after 5 "
                    "take-overs in 60 s of connections under 10 s old).")),
    "edgewise_http_connections_closed_total": (
        "counter", ("HTTP connections closed by the gateway, by reason (idle: no request "
                    "under way for 10 s, per_source, total: over the caps on open HTTP "
                    "connections, or an idle keep-alive one closed to make room for a new "
                    "one at the total cap).")),
    "edgewise_mqtt_deliveries_dropped_total": (
        "counter", ("Acks and dead letters not sent to an MQTT connection whose outbox was "
                    "full, by reason (outbox_full).")),
    "edgewise_mqtt_client_ids_released_total": (
        "counter", "MQTT client ids released, with their session, after 16 newer ones."),
    "edgewise_messages_refused_total": (
        "counter", ("MQTT messages refused, by reason: revoked (credentials revoked; not "
                    "acknowledged), retained (a broker's replay of retained telemetry at "
                    "subscribe; acknowledged and dropped), bad_device (a topic no device id "
                    "fits; acknowledged and dropped), internal (an error handling it; "
                    "acknowledged and dead-lettered), overloaded (a QoS 0 message past the "
                    "bound of uncommitted bytes; dropped), stopping (a QoS 0 message arriving "
                    "while the gateway stops; dropped, its device resends it).")),
    "edgewise_readings_scored_total": ("counter", "Readings scored by the detectors."),
    "edgewise_readings_late_unscored_total": (
        "counter", ("Readings stored but not scored: older than the stream's scoring "
                    "horizon, or past the 500,000 readings waiting for detection.")),
    "edgewise_readings_unscored_at_stop_total": (
        "counter", ("Readings stored (and acknowledged) but never scored: detection had not "
                    "reached them when the gateway stopped (a restart does not score them).")),
    "edgewise_messages_total": ("counter", "Messages handled by the pipeline, by transport."),
    "edgewise_commit_seconds_sum": ("counter", "Seconds spent in store commits."),
    "edgewise_commit_seconds_count": ("counter", "Store commits."),
    "edgewise_detect_seconds_sum": ("counter", "Seconds spent scoring readings."),
    "edgewise_detection_backlog": ("gauge", "Committed batches waiting for detection."),
    "edgewise_alert_webhook_deliveries_total": (
        "counter", ("Alert webhook POSTs (alerts, acknowledgements, labels) and ones "
                    "skipped, by webhook and outcome: delivered (2xx), failed (retried: no "
                    "answer, timeout, 5xx, 408, 429), refused (any other answer: not "
                    "retried), skipped (merged or deleted before it was sent).")),
    "edgewise_alert_webhook_pending": (
        "gauge", "New alerts not yet delivered, by webhook."),
    "edgewise_audit_syslog_sent_total": (
        "counter", "Audit entries handed to the syslog collector (--audit-syslog)."),
    "edgewise_audit_syslog_dropped_total": (
        "counter", ("Audit entries not forwarded as committed, by reason: queue_full (the "
                    "in-memory queue held 10,000: sent later as the file holds them), "
                    "too_large (more than a UDP datagram holds: never sent).")),
    "edgewise_audit_syslog_errors_total": (
        "counter", "Failed connections or sends to the audit syslog collector (retried)."),
    "edgewise_audit_syslog_pending": (
        "gauge", "Committed audit entries queued in memory, not yet handed to the collector."),
    "edgewise_audit_syslog_sent_id": (
        "gauge", "The id of the last audit entry handed to the syslog collector."),
}


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class Metrics:
    """A small registry of labelled counters and gauges."""

    def __init__(self) -> None:
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self._lock = threading.Lock()

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add ``value`` to counter ``name`` with ``labels``."""
        with self._lock:
            series = self._values.setdefault(name, {})
            k = _key(labels)
            series[k] = series.get(k, 0.0) + value

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set gauge ``name`` with ``labels`` to ``value``."""
        with self._lock:
            self._values.setdefault(name, {})[_key(labels)] = float(value)

    def get(self, name: str, **labels: str) -> float:
        """Current value (0.0 if never counted); without labels, the sum over all of them."""
        with self._lock:
            series = self._values.get(name, {})
            if labels:
                return series.get(_key(labels), 0.0)
            return float(sum(series.values()))

    def render(self) -> str:
        """The Prometheus text exposition (version 0.0.4) of every metric."""
        lines: list[str] = []
        with self._lock:
            names = list(HELP) + sorted(set(self._values) - set(HELP))
            for name in names:
                kind, text = HELP.get(name, ("counter", name))
                series = self._values.get(name) or {(): 0.0}
                lines.append(f"# HELP {name} {text}")
                lines.append(f"# TYPE {name} {kind}")
                for labels, v in sorted(series.items()):
                    lab = ",".join(f'{k}="{_escape(val)}"' for k, val in labels)
                    lines.append(f"{name}{{{lab}}} {_fmt(v)}" if lab else f"{name} {_fmt(v)}")
        return "\n".join(lines) + "\n"


def _escape(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
