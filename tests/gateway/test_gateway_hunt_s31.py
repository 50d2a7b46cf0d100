"""README-walk fixes in the gateway under ``serve``/``demo``: a detector whose package is
missing is refused before anything starts, and amqtt's per-message noise under load stays
off stderr."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from pathlib import Path

import pytest

from edgewise.errors import AuthError, ConfigError


def test_river_hst_without_river_is_refused_before_anything_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--detector river-hst`` without ``river`` started, then logged an ImportError for
    every batch (924 stderr lines in 40 s) and scored nothing."""
    from edgewise.config import Settings
    from edgewise.gateway.pipeline import per_metric_factory
    from edgewise.gateway.runtime import Gateway

    monkeypatch.setitem(sys.modules, "river", None)  # `import river` raises ImportError
    want = ("Setting 'detector' (EDGEWISE_DETECTOR, --detector) has value 'river-hst', "
            "which cannot be built here (River detectors need the 'river' package: pip "
            "install river); or use another one-metric level detector: context-art, "
            "context-likelihood, ewzscore.")
    with pytest.raises(ConfigError) as caught:
        per_metric_factory("river-hst")
    assert str(caught.value) == want
    with pytest.raises(ConfigError, match="pip install river"):
        Gateway(Settings(data_dir=tmp_path / "d", detector="river-hst"))
    assert not (tmp_path / "d").exists()
    assert per_metric_factory("ewzscore")().base == "ewzscore"  # the others still build


def test_the_broker_keeps_amqtts_late_ack_noise_off_stderr(
        caplog: pytest.LogCaptureFixture) -> None:
    """Under load amqtt warned per message ("Timeout waiting for PUBACK", "Received PUBACK
    for unknown pending message Id") and each late PUBACK ended a task in "Task exception
    was never retrieved ... InvalidStateError" (amqtt's own catch misses it on Python <
    3.12). The broker now sets amqtt's protocol handler logger to ERROR and logs that one
    error at debug level; any other task error is reported as before."""
    from amqtt.mqtt.protocol.handler import ProtocolHandler
    from amqtt.mqtt.puback import PubackPacket

    from edgewise.transport.broker import EmbeddedBroker
    from tests.conftest import free_port

    def authenticate(user: str, secret: str) -> bytes:
        raise AuthError("no devices here")

    ours = logging.getLogger("edgewise.transport.broker").level
    broker = EmbeddedBroker(lambda messages: [], authenticate, port=free_port())
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(broker.start())
        handler_log = logging.getLogger("amqtt.mqtt.protocol.handler")
        assert handler_log.getEffectiveLevel() == logging.ERROR
        assert logging.getLogger("edgewise.transport.broker").level == ours

        # amqtt's own task, as its reader makes it, for a PUBACK whose wait was cancelled
        proto = ProtocolHandler.__new__(ProtocolHandler)
        proto.logger = handler_log
        waiter = loop.create_future()
        waiter.cancel()
        proto._puback_waiters = {7: waiter}

        async def other() -> None:
            raise asyncio.InvalidStateError("not amqtt's")

        caplog.set_level(logging.DEBUG, logger="edgewise.transport.broker")
        for coro in (proto.handle_puback(PubackPacket.build(7)), other()):
            task = loop.create_task(coro)
            loop.run_until_complete(asyncio.wait([task]))  # its exception not retrieved
            del task
            gc.collect()  # asyncio reports it to the loop's exception handler
        never = [r.getMessage() for r in caplog.records
                 if "Task exception was never retrieved" in r.getMessage()]
        assert len(never) == 1 and "other()" in never[0], never
        assert any("acknowledgement came after its wait ended" in r.getMessage()
                   and r.levelno == logging.DEBUG for r in caplog.records)
    finally:
        loop.run_until_complete(broker.stop())
        loop.close()


def test_a_late_pubrel_of_the_patched_handler_is_quiet_too(caplog) -> None:
    """Check the InvalidStateError of the handle_pubrel the embedded broker really runs
    (_pubrel_always_answered, not amqtt's own) is logged at debug level, as a late PUBACK's
    is: only amqtt's was listed, so a late PUBREL still printed 'Task exception was never
    retrieved'."""
    import asyncio
    import logging

    from edgewise.transport import broker as b

    seen: list[dict] = []
    quiet = b._LateAckQuiet(lambda loop, ctx: seen.append(ctx))
    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(b._pubrel_always_answered(None, None))  # never run
        with caplog.at_level(logging.DEBUG, logger=b.log.name):
            quiet(loop, {"exception": asyncio.InvalidStateError(), "future": task,
                         "message": "Task exception was never retrieved"})
        assert seen == [], "the patched PUBREL handler's late error went to the default"
        other = loop.create_task(asyncio.sleep(0))
        quiet(loop, {"exception": asyncio.InvalidStateError(), "future": other,
                     "message": "Task exception was never retrieved"})
        assert len(seen) == 1  # any other task's error is still reported
        task.cancel()
        other.cancel()
    finally:
        loop.close()
