"""Fixtures that start the real components: redis-server, daphne (and nginx, in its tests).

- ``redis_server`` (session): ``REDIS_URL`` when set, used only under a key prefix
  unique to this run (deleted at the end); else a private ``redis-server`` on a
  free loopback port without persistence.
- ``private_redis``: always a private redis-server, for tests that kill it.
- ``daphne_server``: a factory that starts real daphne processes for the
  example project (``tests.settings``) and stops them; their logs are printed
  when a test fails.
- Under ``CI=true`` a missing tool fails the run instead of skipping, except the
  tools named in ``WSOPS_TEST_HIDE_TOOLS`` (``.ci/run``'s second pass hides them to
  prove that a machine without them skips their tests).
- Fresh clock: ``time.monotonic()`` reads about 1 s at the start of the run, in this
  process and in every daphne the fixture starts (``tests/fresh_clock.py``), as on
  a host booted a second ago (``WSOPS_TEST_CLOCK_AT=real`` keeps the host's clock,
  ``=100000`` plays a host up for a day). The ``fresh_clock`` fixture shifts it to
  read 1 s again for one test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from tests import fresh_clock as _fresh_clock
from tests.helpers import (
    IN_CI,
    ROOT,
    DaphneProcess,
    RedisServer,
    configure_redis,
    database_name,
    free_port,
    wait_for_port,
)

_fresh_clock.install()  # before any test code reads the clock, so durations stay right

# Hypothesis budgets: "ci" by default; `--hypothesis-profile=deep` for long local runs.
hypothesis_settings.register_profile("ci", max_examples=300, deadline=None, derandomize=IN_CI,
                                     suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.register_profile("deep", max_examples=20000, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("ci")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> RedisServer:
    external = os.environ.get("REDIS_URL")
    prefix = f"wsopstest-{uuid.uuid4().hex[:8]}:" if external else ""
    server = RedisServer(external, prefix=prefix, tmp=tmp_path_factory.mktemp("redis"))
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def private_redis(tmp_path) -> RedisServer:
    server = RedisServer(None, tmp=tmp_path)
    yield server
    server.kill()


@pytest.fixture
def use_redis(settings, redis_server):
    """Point this process' wsops, cache and channel layer at the test Redis."""
    return configure_redis(settings, redis_server)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def fresh_clock(monkeypatch) -> float:
    """``time.monotonic()`` reads 1.0 now, as on a host booted a second ago (this test).

    Returns the shift. A constant shift keeps asyncio's timers and every duration right.
    """
    monotonic, monotonic_ns, offset = _fresh_clock.shifted()
    monkeypatch.setattr(time, "monotonic", monotonic)
    monkeypatch.setattr(time, "monotonic_ns", monotonic_ns)
    return offset


@pytest.fixture
def daphne_server(request, tmp_path):
    """Start real daphne workers: ``daphne_server(redis=server, wsops={...})``.

    Each runs daphne's command line through ``tests/fresh_clock.py``: its monotonic
    clock starts near zero, as on a freshly booted host. ``project=`` serves another
    Django project (its directory; the settings module must then be given too).
    """
    started: list[DaphneProcess] = []

    def start(*, redis: RedisServer | None = None, wsops: dict | None = None,
              settings_module: str = "tests.settings", application: str =
              "chatproject.asgi:application", extra_args: list[str] | None = None,
              env: dict | None = None, unix_socket: str | None = None,
              port: int | None = None, project: Path | None = None) -> DaphneProcess:
        import json

        port = port or free_port()
        log = tmp_path / f"daphne-{port}.log"
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings_module,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(project or ROOT / "example")]),
        }
        if project is None:  # the example project on the test database
            environment.update(WSOPS_TEST_DB_NAME=database_name(),
                               WSOPS_TEST_WSOPS=json.dumps(wsops or {}))
        environment.update(env or {})
        if redis is not None:
            environment["WSOPS_TEST_REDIS_URL"] = redis.url
            environment["WSOPS_TEST_KEY_PREFIX"] = redis.prefix
        bind = ["-u", unix_socket] if unix_socket else ["-b", "127.0.0.1", "-p", str(port)]
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.fresh_clock", *bind, *(extra_args or []),
                 application],
                cwd=project or ROOT / "example", env=environment, stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = DaphneProcess(process, port, log)
        started.append(server)
        try:
            if unix_socket:
                deadline = time.monotonic() + 20
                while not os.path.exists(unix_socket) and time.monotonic() < deadline:
                    time.sleep(0.05)
            else:
                wait_for_port(port, process=process)
        except RuntimeError as error:
            raise RuntimeError(f"daphne did not start: {error}\n{server.output()}")
        return server

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for server in started:
        server.stop()
        if failed:
            print(f"\n--- daphne on port {server.port} ---\n{server.output()[-6000:]}")


@pytest.fixture
def app():
    """The example project's ASGI application (SecureWebsocketStack around the chat)."""
    from chatproject.asgi import application

    return application


@pytest.fixture
def make_user(django_user_model):
    """Create users: ``make_user("alice", perms=["chat.send_message"])``."""

    def make(username: str = "alice", *, perms: tuple[str, ...] = (), **fields):
        from django.contrib.auth.models import Permission

        user = django_user_model.objects.create_user(username=username, password="pw", **fields)
        for perm in perms:
            app_label, codename = perm.split(".")
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        return user

    return make


@pytest.fixture
def secret_for(make_user):
    """``await secret_for("alice")``: a token secret of a new user who may send messages."""
    from channels.db import database_sync_to_async

    from wsops import tokens

    @database_sync_to_async
    def make(username="alice"):
        return tokens.issue(make_user(username, perms=("chat.send_message",)),
                            scopes=["chat:write"])[1]

    return make


@pytest.fixture
def events():
    """Collect wsops security events emitted in this process."""
    from wsops.signals import security_event

    collected: list[dict] = []

    def receiver(sender, event, **kwargs):
        collected.append(event)

    security_event.connect(receiver, weak=False)
    yield collected
    security_event.disconnect(receiver)


@pytest.fixture(autouse=True)
def _fresh_local_state():
    """The in-process limiter and caches must not leak between tests."""
    from wsops.limits.engine import reset_local_limiter

    reset_local_limiter()
    yield
