"""A real app around a real DuckDB store, real Security and the real Pipeline."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 and warns, once, at import
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

from edgewise.config import Settings
from edgewise.gateway.pipeline import Pipeline
from edgewise.security import Security
from edgewise.server.app import create_app
from edgewise.store import open_store
from edgewise.store.base import Store
from tests.conftest import IN_CI, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

PROBLEM_KEYS = {"type", "title", "status", "detail", "field", "value", "allowed", "reason"}


@dataclass
class Env:
    """One running app and the parts it was built from."""

    client: TestClient
    store: Store
    security: Security
    pipeline: Pipeline
    settings: Settings
    tokens: dict[str, str]
    device: str
    secret: str

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def actor(self, role: str) -> str:
        """How the audit log names the ``role`` token: ``token:<id>:<name>``."""
        return self.security.authenticate_token(self.tokens[role]).actor

    def device_headers(self, device: str | None = None, secret: str | None = None) -> dict:
        return {"Authorization": f"Bearer {secret or self.secret}",
                "X-Device-Id": device or self.device}

    def send(self, payload: Any, device: str | None = None, secret: str | None = None,
             **kw: Any) -> Any:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.client.post("/v1/telemetry", content=body,
                                headers={**self.device_headers(device, secret),
                                         "Content-Type": "application/json"}, **kw)


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    return Settings.load(env={}, data_dir=data_dir, **overrides)


def build_env(data_dir: Path, **overrides: Any) -> Iterator[Env]:
    settings = make_settings(data_dir, **overrides)
    security = Security(data_dir, throttle_after=settings.throttle_after_failures)
    store = open_store(settings.store_url)
    pipeline = Pipeline(store, settings, security)
    app = create_app(store=store, security=security, pipeline=pipeline, settings=settings)
    tokens = {role: security.create_token(role, f"test-{role}")
              for role in ("viewer", "operator", "admin")}
    device, secret = security.add_device("pump-1")
    try:
        with TestClient(app) as client:
            yield Env(client, store, security, pipeline, settings, tokens, device, secret)
    finally:  # also on gen.close(), which raises GeneratorExit at the yield
        pipeline.close()
        store.close()
        security.close()


def build_postgres_env(data_dir: Path, postgres_url: str, prefix: str) -> Iterator[Env]:
    """:func:`build_env` on a PostgreSQL schema of its own (``prefix`` + random), dropped
    afterwards."""
    import uuid

    import psycopg

    schema = f"{prefix}{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in postgres_url else "?"
    gen = build_env(data_dir, store=f"{postgres_url}{sep}schema={schema}")
    try:
        yield next(gen)
    finally:
        gen.close()
        with psycopg.connect(postgres_url, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def env(data_dir: Path) -> Iterator[Env]:
    """An app with one device 'pump-1' and a token of each role."""
    yield from build_env(data_dir)


@pytest.fixture(scope="module")
def module_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One app as :func:`env` builds it, shared by the tests of a module that change nothing
    in it (building an app takes most of a second): a test that adds, deletes, sends or
    labels anything takes ``env``, an app of its own."""
    yield from build_env(tmp_path_factory.mktemp("ewdata"))


_DEVICE_NUMBERS = itertools.count(1)


@pytest.fixture
def device_env(module_env: Env) -> Env:
    """``module_env`` as a device of the test's own sees it (``env.device``/``env.secret``
    are a new ``dev-<n>``): for a test that sends only as that device and reads back only
    that device's readings and acks, so what it stores is seen by no other test."""
    device, secret = module_env.security.add_device(f"dev-{next(_DEVICE_NUMBERS)}")
    return dataclasses.replace(module_env, device=device, secret=secret)


def problem(resp: Any, status: int) -> dict[str, Any]:
    """Check ``resp`` is a problem+json answer with ``status``; return its body."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.headers
    body = resp.json()
    assert PROBLEM_KEYS <= body.keys(), body
    assert body["status"] == status
    assert body["type"] == f"urn:edgewise:problem:{body['reason']}"
    return body


def now_s() -> float:
    return time.time()


@contextlib.contextmanager
def serve_in_thread(app: Any, **uvicorn_kwargs: Any) -> Iterator[int]:
    """Run ``app`` under uvicorn on a free port in a thread; yield the port."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off", **uvicorn_kwargs)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def _browser() -> Iterator[Any]:
    """One headless Debian chromium under Playwright for the browser tests of a module: each
    test works in contexts of its own (``chromium``). Not one per session: while Playwright's
    sync API runs, its event loop counts as running, and a later module's ``asyncio.run``
    fails ("cannot be called from a running event loop")."""
    if not CHROMIUM.exists():
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing; .ci/run installs it with apt-get")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def chromium(_browser: Any) -> Iterator[Any]:
    """The headless chromium; what a test opened in it (contexts: pages, their storage,
    cookies and routes) is closed after the test, also when it failed, so no test sees
    another's."""
    yield _browser
    for ctx in list(_browser.contexts):
        ctx.close()


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_env(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Env]:
    """The app on DuckDB, and on a PostgreSQL schema of its own (``ew_`` + the test module's
    name, dropped afterwards)."""
    if request.param == "duckdb":
        yield from build_env(data_dir)
    else:
        yield from build_postgres_env(data_dir, request.getfixturevalue("postgres_url"),
                                      f"ew_{request.module.__name__.rsplit('.', 1)[-1][:20]}_")


def ask_while_held(lock: Any, ask: Callable[[], Any]) -> tuple[float, list[Any]]:
    """Run ``ask`` in a thread while ``lock`` is held (as if a fit of its key ran); return
    the seconds it took while the lock was held (at most 5 s are waited) and its answers
    (the one it gave, after the lock was let go if not before)."""
    got: list[Any] = []
    asker = threading.Thread(target=lambda: got.append(ask()))
    assert lock.acquire(timeout=1)
    try:
        t0 = time.monotonic()
        asker.start()
        asker.join(5)  # a wait for the lock without a limit outlasts this
        waited = time.monotonic() - t0
    finally:
        lock.release()
        asker.join(10)
    return waited, got
