"""A running gateway: store + security + pipeline + MQTT transport (+ HTTP when available).

:class:`Gateway` wires the parts for ``edgewise serve`` and ``edgewise demo`` and for
tests that need a real gateway in process. It runs on an asyncio loop; the pipeline's
commits run on a worker thread so the loop keeps receiving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from edgewise._private import make_private
from edgewise.config import MAX_WAIT_S, Settings, url_host
from edgewise.errors import ConfigError, PayloadError, RateLimitError, StoreLockedError
from edgewise.gateway.pipeline import IngestResult, Pipeline, per_metric_factory
from edgewise.gateway.presence import GatewayPresence, gateway_running
from edgewise.gateway.webhooks import SECRET_FILE, AlertWebhooks
from edgewise.registry import Registry
from edgewise.security.audit_syslog import CURSOR_FILE, AuditForwarder
from edgewise.security.credentials import Security
from edgewise.store import shown_url
from edgewise.store.base import Alert
from edgewise.telemetry import retention_cut_ns
from edgewise.transport.base import Message, Outcome, Transport

__all__ = ["Gateway", "problem_of"]

log = logging.getLogger(__name__)


def _store_in_use(exc: StoreLockedError, settings: Settings,
                  other_gateway: bool) -> StoreLockedError:
    """The error of a gateway start whose DuckDB store another process holds: another
    gateway on the same data dir (``other_gateway``), or another process."""
    where = exc.path or shown_url(settings.store_url)
    if other_gateway:
        message = (
            f"A gateway already runs on data dir {str(settings.data_dir)!r} (pid {exc.pid} "
            f"holds its DuckDB store {where!r}); stop it before starting another, or give "
            "this one a --data-dir of its own.")
    else:
        message = (
            f"DuckDB store {where!r} is in use by another process (pid {exc.pid}), such as "
            "an edgewise command reading it (a DuckDB store is opened by one process at a "
            "time); start the gateway once that process has ended.")
    return StoreLockedError(message, pid=exc.pid, path=where)


def _shown_wait(seconds: float) -> float:
    """A refusal's wait as a dead letter says it: rounded *up* to the millisecond, at least
    1 ms and at most a day. Rounded to the nearest, a bucket a fraction of a token short
    said ``retry_after_s: 0.0``, "resend at once", which the device did and was refused
    again (found by the CI's rate-limit test); a wait that is no finite number is the day.

    >>> _shown_wait(0.0002), _shown_wait(0.5), _shown_wait(1.0001), _shown_wait(math.inf)
    (0.001, 0.5, 1.001, 86400.0)
    """
    if not math.isfinite(seconds):
        return float(MAX_WAIT_S)
    return min(float(MAX_WAIT_S), max(0.001, math.ceil(round(seconds * 1000, 6)) / 1000))


def problem_of(exc: PayloadError | RateLimitError) -> dict[str, Any]:
    """The dead-letter body ``{"reason", "detail", "field", "value", "index"}`` of an error.

    >>> problem_of(PayloadError(field="ts", value="x", allowed="a time", reason="bad_ts"))["reason"]
    'bad_ts'
    """
    if isinstance(exc, RateLimitError):
        return {"reason": "rate_limited", "detail": str(exc), "field": "payload",
                "value": None, "index": None, "retry_after_s": _shown_wait(exc.retry_after_s)}
    p = exc.to_problem()
    return {k: p[k] for k in ("reason", "detail", "field", "value", "index")}


class Gateway:
    """Everything ``edgewise serve`` runs, on the current asyncio loop.

    Parameters
    ----------
    settings
        Where the data lives, which store and broker, ports, TLS, limits.
        ``seq_gap_grace_s`` (``EDGEWISE_SEQ_GAP_GRACE_S``, default 30) sets how long a seq
        gap may stay open before it is reported. ``retention_days``
        (``EDGEWISE_RETENTION_DAYS``; 0 keeps everything) deletes readings older than that
        many days, at start and every hour, and, where the store purges by default
        (DuckDB, ``Store.PURGES_BY_DEFAULT``), purges them from the disk (a rewrite of
        the store, :meth:`Store.purge`) at the first pass that deletes any and then at
        most once every :attr:`RETENTION_PURGE_EVERY_S` (a day).
        ``detector`` (``EDGEWISE_DETECTOR``) names the level detector of every metric.
        ``alert_webhooks`` (``EDGEWISE_ALERT_WEBHOOKS``) names the URLs each new alert
        (and each acknowledgement and label of one) is POSTed to, signed
        (:mod:`edgewise.gateway.webhooks`, :attr:`webhooks`); a bad one is refused here,
        before anything opens. ``audit_syslog`` (``EDGEWISE_AUDIT_SYSLOG``) names the
        syslog collector each audit entry is forwarded to as it is committed
        (:mod:`edgewise.security.audit_syslog`, :attr:`audit_forwarder`).
    pipeline_options
        Extra keyword arguments for :class:`~edgewise.gateway.pipeline.Pipeline`.
    """

    def __init__(self, settings: Settings, **pipeline_options: Any) -> None:
        self.settings = settings
        if "detector_factory" not in pipeline_options:
            # built here, so an unknown name fails before anything opens, and built once
            pipeline_options["detector_factory"] = per_metric_factory(settings.detector)
        if not settings.fast_stream_z >= 0:
            raise ConfigError(
                f"Setting 'fast_stream_z' (EDGEWISE_FAST_STREAM_Z, --fast-stream-z) has value "
                f"{settings.fast_stream_z!r}. Use a number of standard deviations (3 is the "
                f"default), or 0 to score fast streams as slow ones."
            )
        if settings.retention_days < 0:
            raise ConfigError(
                f"Setting 'retention_days' (EDGEWISE_RETENTION_DAYS) has value "
                f"{settings.retention_days!r}. Use 0 (keep everything) or a number of days."
            )
        _ = settings.alert_webhook_urls  # a bad webhook URL: refused before anything opens
        _ = settings.audit_syslog_target  # and a bad audit log collector URL
        # 0700 (a new one): the store, labels and detector state in it are the fleet's data
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # another gateway on this data dir: asked before this one's own presence counts
        other_gateway = gateway_running(settings.data_dir)
        # held until stop(): `edgewise device delete` then leaves the data to this gateway
        self.presence = GatewayPresence(settings.data_dir)
        try:
            self._open_parts(pipeline_options)
        except StoreLockedError as exc:  # said as a gateway's start, not a command's
            self.presence.release()
            raise _store_in_use(exc, settings, other_gateway) from exc
        except BaseException:
            self.presence.release()
            raise
        self.transport: Transport | None = None
        self.http_server: Any = None
        self._http_task: asyncio.Task[Any] | None = None
        self._retention_task: asyncio.Task[Any] | None = None
        # retention deleted readings not yet purged from the disk: the store notes it in its
        # file (DuckDB), so the first pass after a restart purges what the last run left
        self._unpurged = bool(getattr(self.store, "purge_pending", False))
        self._last_purge_ns: int | None = None

    #: Retention purges what it deleted from the disk at most this often: a purge
    #: rewrites the whole store (about 1.5 s per million readings), an hourly pass does not.
    RETENTION_PURGE_EVERY_S = 86_400

    def _open_parts(self, pipeline_options: dict[str, Any]) -> None:
        """Open the credentials, store, pipeline and registry of the data dir."""
        from edgewise.store import open_store

        settings = self.settings
        self.security = Security(settings.data_dir, throttle_after=settings.throttle_after_failures)
        self.store = open_store(settings.store_url)
        pipeline_options.setdefault("gap_grace_s", settings.seq_gap_grace_s)
        pipeline_options.setdefault("state_path", settings.data_dir / "detectors.pickle")
        self.pipeline = Pipeline(self.store, settings, self.security, **pipeline_options)
        # the model registry and its Ed25519 signing key: made at the first start (mode 0600), so
        # agents can be enrolled before any rollout; never remade once issued and lost
        self.registry = Registry(settings.data_dir)
        self.registry.ensure_key()
        # outgoing alert webhooks: told of each new alert by the alert manager (which only
        # notes it: the POSTs run on the webhooks' own threads, started by start())
        self.webhooks: AlertWebhooks | None = None
        if settings.alert_webhook_urls:
            try:  # a CA file or secret that cannot be used: nothing left open
                self.webhooks = AlertWebhooks(settings, self.store, self.pipeline.metrics)
            except BaseException:
                self._close_opened()
                raise
            counted = self.pipeline.alerts.on_alert
            webhooks = self.webhooks

            def on_alert(alert: Alert) -> None:
                if callable(counted):
                    counted(alert)
                webhooks.notify(alert)

            self.pipeline.alerts.on_alert = on_alert
        # the audit log forwarded off the box: told of each entry as it is committed,
        # sending from its own thread (started by start())
        self.audit_forwarder: AuditForwarder | None = None
        if settings.audit_syslog_target is not None:
            try:  # a CA file that cannot be used: nothing left open
                self.audit_forwarder = AuditForwarder(
                    self.security, settings.audit_syslog,
                    ca_file=settings.audit_syslog_ca_file, metrics=self.pipeline.metrics)
            except BaseException:
                self._close_opened()
                raise
        make_private(*self.private_files())  # 0600 whatever the directory's mode

    def _close_opened(self) -> None:
        """Close what ``__init__`` opened so far, when a later part of it fails."""
        if self.webhooks is not None:
            self.webhooks.close()
        self.pipeline.close()
        self.store.close()
        self.security.close()
        self.registry.close()

    @property
    def webhook_secret_made(self) -> Path | None:
        """The alert webhook secret file this start made (to say where it is, once)."""
        return self.webhooks.secret_made if self.webhooks is not None else None

    def private_files(self) -> list[Path]:
        """The files holding the fleet's data (readings, credentials, registry, labels,
        detector state), with their SQLite/DuckDB companions: made 0600 at start and stop
        (:mod:`edgewise._private`)."""
        d = self.settings.data_dir
        files = [d / "security.sqlite", d / "registry" / "registry.sqlite",
                 d / "labels.sqlite", d / "detectors.pickle", d / SECRET_FILE, d / CURSOR_FILE]
        store_path = getattr(self.store, "path", None)
        if isinstance(store_path, str) and str(getattr(self.store, "url", "")).startswith(
                "duckdb://") and store_path != ":memory:":
            files.append(Path(store_path))
        out = []
        for f in files:
            out += [f, f.with_name(f.name + "-wal"), f.with_name(f.name + "-shm"),
                    f.with_name(f.name + ".wal")]
        return out

    # -- retention ----------------------------------------------------------------------
    def apply_retention(self, now_ns: int | None = None) -> int:
        """Delete readings older than ``retention_days`` (none when it is 0); return how
        many went. Seq watermarks stay, so a device's old seqs are not asked for again.

        Audited as ``readings.expire.requested`` before a deletion (when the store's
        device summaries hold readings older than the cut; an audit log that cannot be
        written stops the pass there), then as ``readings.expire`` with the count."""
        days = self.settings.retention_days
        if days <= 0:
            return 0
        now_ns = time.time_ns() if now_ns is None else now_ns
        # the cut ingest refuses 'expired' readings at, clamped to the int64 range
        cut = retention_cut_ns(days, now_ns)
        if any(d.first_ns < cut for d in self.store.devices()):
            # audited before the deletion (too long to hold the audit log's write lock
            # through): readings never go unaudited; a failing audit log stops the pass
            self.security.audit("retention", "readings.expire.requested", "*",
                                {"older_than_days": days, "before_ns": cut})
        n = self.store.delete_before(cut)
        # a pass that pruned only alert events (no reading old enough) leaves bytes to
        # purge too: the store says so (DuckDB; PostgreSQL never purges by default)
        if n or getattr(self.store, "purge_pending", False):
            self._unpurged = True
        if n:
            self.pipeline.metrics.inc("edgewise_readings_expired_total", n)
            self.security.audit("retention", "readings.expire", "*",
                                {"rows": n, "older_than_days": days})
            log.info("retention: deleted %d readings older than %d days", n, days)
            kept = self.store.set_aside_logs()
            if kept:  # retention cannot reach what they hold
                log.warning("retention: %d write-ahead log(s) that 'edgewise repair' moved "
                            "aside still hold readings of before their crash, older ones "
                            "among them; remove them once no longer needed: %s", len(kept),
                            ", ".join(map(str, kept)))
        last = self._last_purge_ns
        if self._unpurged and self.store.PURGES_BY_DEFAULT and (last is None
                               or now_ns - last >= self.RETENTION_PURGE_EVERY_S * 10**9):
            purged = self.store.purge()  # writers wait for it; readers only for the swap
            self._last_purge_ns = now_ns
            self._unpurged = not purged
            if purged:
                log.info("retention: purged the deleted readings from the disk")
        return n

    async def _retention_loop(self, every_s: float = 3600.0) -> None:
        while True:
            try:
                await asyncio.to_thread(self.apply_retention)
            except Exception:  # a failed pass must not end the loop; the next one retries
                log.exception("retention pass failed")
            await asyncio.sleep(every_s)

    # -- the handler every MQTT transport commits through ------------------------------
    def handle(self, messages: list[Message]) -> list[Outcome]:
        """Commit a batch of MQTT messages; one Outcome per message (dead letters included)."""
        results = self.pipeline.ingest_many(
            [(m.device_id, m.payload, m.received_ns) for m in messages], via="mqtt")
        outcomes = []
        for m, r in zip(messages, results, strict=True):
            if isinstance(r, IngestResult):
                outcomes.append(Outcome(m.device_id, r.ack_seq,
                                        [problem_of(e) for e in r.rejected]))
            else:
                outcomes.append(Outcome(m.device_id, None, [problem_of(r)]))
        return outcomes

    def forget_device(self, device_id: str) -> None:
        """Drop what the running transport keeps for a deleted device: with the embedded
        broker, its live connections (closed at once: its credentials are gone); with an
        external MQTT broker, its retained ack (else a device registered again under the
        same id would be told the old watermark). ``DELETE /v1/devices/{id}`` calls it
        after the deletion."""
        forget = getattr(self.transport, "forget_device", None)
        if forget is None:
            return
        try:
            forget(device_id)
        except Exception:  # the device and its data are gone already; say what was left
            log.exception("could not clear what the MQTT transport keeps for deleted device %r "
                          "(its retained ack)", device_id)

    def make_transport(self) -> Transport:
        """The MQTT transport the settings ask for (embedded broker or an external one)."""
        s = self.settings
        count = self.pipeline.metrics.inc
        if s.mqtt == "embedded":
            from edgewise.transport.broker import EmbeddedBroker

            return EmbeddedBroker(
                self.handle, self.security.device_credential, host=s.host, port=s.mqtt_port,
                tls_cert=s.tls_cert, tls_key=s.tls_key, count=count,
                watermark=self.store.recheck_seq_watermark,
                credential_tags=self.security.credential_tags,
                consumer=os.environ.get("EDGEWISE_MQTT_CONSUMER", "plugin"),
                max_payload_bytes=s.max_payload_bytes,
                max_pending_per_source=s.mqtt_max_pending_per_source or None,
                max_pending=s.mqtt_max_pending or None,
                max_connections_per_device=s.mqtt_max_connections_per_device or None,
                max_queued_bytes=s.mqtt_max_queued_bytes or None,
            )
        if s.mqtt.startswith(("mqtt://", "mqtts://")):
            from edgewise.transport.client import ExternalBroker

            return ExternalBroker(self.handle, s.mqtt, count=count,
                                  data_dir=s.data_dir, known_device=self.security.has_device,
                                  max_payload_bytes=s.max_payload_bytes,
                                  max_queued_bytes=s.mqtt_max_queued_bytes or None)
        raise ConfigError(
            f"Setting 'mqtt' has value {shown_url(s.mqtt)!r}. Use 'embedded' or "
            "'mqtt://HOST:PORT'."
        )

    async def start(self, http: bool = True) -> None:
        """Start the alert webhooks, MQTT (and the HTTP API + dashboard when the server
        package is present)."""
        if self.audit_forwarder is not None:
            self.audit_forwarder.start()
        if self.webhooks is not None:
            self.webhooks.start()
        self.transport = self.make_transport()
        await self.transport.start()
        if self.settings.retention_days > 0:
            self._retention_task = asyncio.create_task(self._retention_loop())
        if http:
            await self._start_http()

    async def _start_http(self) -> None:
        try:
            from edgewise.server.app import create_app
        except ImportError:
            log.warning("edgewise.server.app is not available: running without HTTP")
            return
        import uvicorn

        s = self.settings
        app = create_app(store=self.store, security=self.security, pipeline=self.pipeline,
                         settings=s, registry=self.registry, forget_device=self.forget_device)
        kw: dict[str, Any] = {}
        if s.tls_cert and s.tls_key:
            kw.update(ssl_certfile=s.tls_cert, ssl_keyfile=s.tls_key)
        # X-Forwarded-For names the client (whose wrong secrets are counted) only when the
        # peer is a proxy named in forwarded_allow_ips; off by default (uvicorn's default
        # would believe any process on 127.0.0.1)
        trusted = s.forwarded_allow_ips.strip()
        kw.update(proxy_headers=bool(trusted),
                  forwarded_allow_ips=",".join(p.strip() for p in trusted.split(","))
                  if trusted else None)
        # a request still in flight when the gateway stops (an upload stalled half sent)
        # is cancelled after http_shutdown_timeout_s: uvicorn's default waits for it for
        # ever, and the stop, the MQTT broker's and the detector state's saving with it
        # an HTTP connection no peer can hoard: capped in number (per address and in all)
        # and closed when no request is under way for http_idle_s (10 s; uvicorn kept an idle
        # one open for ever: 1,100 of them took every file descriptor;
        # edgewise.gateway.http_guard)
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        from edgewise.gateway.http_guard import guarded_http_protocol, guarded_tls_protocol

        kw["http"] = guarded_http_protocol(AutoHTTPProtocol, idle_s=s.http_idle_s,
                                           count=self.pipeline.metrics.inc)
        config = uvicorn.Config(app, host=s.host, port=s.http_port, log_level="warning",
                                lifespan="off",
                                timeout_graceful_shutdown=s.http_shutdown_timeout_s, **kw)
        config.load()
        if config.ssl is not None:
            # TLS is done by the guard's factory, which counts a connection from its accept
            # and gives its handshake http_idle_s: asyncio's counted nothing and held an
            # unfinished handshake 60 s, so idle TLS sockets could still take every descriptor
            config.http_protocol_class = guarded_tls_protocol(  # type: ignore[assignment]
                config.http_protocol_class, config.ssl, idle_s=s.http_idle_s)
            config.ssl = None
        self.http_server = uvicorn.Server(config)
        # the process's signals are not the HTTP server's: uvicorn's serve() takes SIGINT and
        # SIGTERM while it runs and puts back, when it stops (early in stop()), the handlers
        # it found at start, SIG_DFL; `edgewise serve` sets its own after start, so a second
        # SIGTERM during the rest of stop() killed the gateway before it saved its state
        self.http_server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        self._http_task = asyncio.create_task(self.http_server.serve())
        while not self.http_server.started:
            if self._http_task.done():
                self._http_task.result()
            await asyncio.sleep(0.05)

    @property
    def http_url(self) -> str | None:
        """The dashboard URL, when HTTP runs."""
        if self.http_server is None:
            return None
        scheme = "https" if self.settings.tls_cert else "http"
        return f"{scheme}://{url_host(self.settings.host)}:{self.settings.http_port}/"

    async def stop(self) -> None:
        """Stop HTTP and MQTT, finish detection, close the store; safe to call twice."""
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
            self._retention_task = None
        if self.http_server is not None:
            self.http_server.should_exit = True
            if self._http_task is not None:
                await self._http_task
            self.http_server = None
        try:
            if self.transport is not None:
                transport, self.transport = self.transport, None
                await transport.stop()
        finally:
            if self.webhooks is not None:  # what is not sent yet goes after the next start
                await asyncio.to_thread(self.webhooks.close)
            if self.audit_forwarder is not None:  # so are audit entries: the cursor file
                await asyncio.to_thread(self.audit_forwarder.close)
            self.pipeline.close()
            self.store.close()
            self.security.close()
            self.registry.close()
            make_private(*self.private_files())  # the detector state just saved included
            self.presence.release()
