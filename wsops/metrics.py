"""Prometheus metrics of the secure stack, summed over every daphne worker of a host.

The runtime calls a handful of recording functions (``handshake``, ``observed``,
``message``, ``redis_timer``, ``redis_up``, ``token_cache``); the ``metrics``
view of ``wsops.urls`` exposes them in Prometheus' text format. Names and labels
are part of wsops' public surface:

    wsops_handshakes_total{outcome, reason, transport}  counter
    wsops_open_sockets                                  gauge (live sum over workers)
    wsops_closes_total{code}                            counter
    wsops_messages_total{outcome, code}                 counter
    wsops_redis_seconds{operation}                      histogram
    wsops_redis_up                                      gauge, per worker (pid label)
    wsops_token_cache_total{result}                     counter

Why these costs are acceptable on the message path: recording is a dict lookup
and an increment in this process' memory (in multiprocess mode, in a file
mapped into memory), never network I/O. With ``prometheus_client`` missing or
``WSOPS["METRICS"] = False`` every function returns at its first line.

Labels are bounded, so an attacker cannot grow the time series: no label takes
a user id, an address, a token prefix, a path or operator text (a ban's reason
is counted as ``banned``). Every label value must look like an identifier
(``[a-z0-9_]``) and each label takes at most ``MAX_LABEL_VALUES`` distinct
values per process; anything else is counted as ``other``.

Workers: daphne runs one process per worker, and Prometheus scrapes one of them
at a time. With ``PROMETHEUS_MULTIPROC_DIR`` set (``wsdeploy daphne`` units set
it up and clean it at start), ``prometheus_client`` keeps each process' values in
that directory and a scrape through any worker sums all of them. Open-socket and
Redis-up gauges of a worker that died are dropped at the next scrape.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from contextlib import nullcontext
from time import perf_counter
from typing import Any

from .conf import get_settings, on_reload

try:
    import prometheus_client
except ImportError:  # the wsops[prometheus] extra is not installed
    prometheus_client = None

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MAX_LABEL_VALUES = 64
OTHER = "other"
# Seconds: a healthy local Redis answers in ~0.2 ms; REDIS_TIMEOUT defaults to 50 ms.
REDIS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
TRANSPORT_LABELS = frozenset({"subprotocol", "header", "query", "session", "message", "none"})

# name -> (type, labels, help): the surface the dashboard and the alert rules rely on.
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "wsops_handshakes_total": ("counter", ("outcome", "reason", "transport"),
                               "WebSocket handshakes by outcome (accepted/refused), refusal "
                               "reason and credential transport."),
    "wsops_open_sockets": ("gauge", (), "WebSocket sockets open now (summed over workers)."),
    "wsops_closes_total": ("counter", ("code",), "Accepted sockets closed, by close code."),
    "wsops_messages_total": ("counter", ("outcome", "code"),
                             "Messages handled (ok) or refused with an error frame, by code."),
    "wsops_redis_seconds": ("histogram", ("operation",),
                            "Seconds per Redis round trip, by operation."),
    "wsops_redis_up": ("gauge", (), "1 while this worker reaches Redis, 0 during an outage."),
    "wsops_token_cache_total": ("counter", ("result",),
                                "Token verifications served by the shared cache (hit) or not."),
}

_LABEL_RE = re.compile(r"[a-z0-9_]{1,48}")


class BoundedLabel:
    """Label values from a vocabulary that may only grow to ``limit`` entries."""

    __slots__ = ("limit", "seen")

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: object) -> str:
        text = value if type(value) is str else str(value)
        if text in self.seen:
            return text
        if len(self.seen) >= self.limit or not _LABEL_RE.fullmatch(text):
            return OTHER
        self.seen.add(text)
        return text


class Recorder:
    """The metric objects of this process (prometheus_client refuses to register twice)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        def about(name: str) -> dict[str, Any]:
            _, labels, documentation = METRICS[name]
            return {"name": name, "documentation": documentation, "labelnames": labels}

        self.handshakes = Counter(**about("wsops_handshakes_total"))
        self.open_sockets = Gauge(**about("wsops_open_sockets"), multiprocess_mode="livesum")
        self.closes = Counter(**about("wsops_closes_total"))
        self.messages = Counter(**about("wsops_messages_total"))
        self.redis_seconds = Histogram(**about("wsops_redis_seconds"), buckets=REDIS_BUCKETS)
        self.redis_up = Gauge(**about("wsops_redis_up"), multiprocess_mode="liveall")
        self.token_cache = Counter(**about("wsops_token_cache_total"))
        self.redis_up.set(1)
        self.label = {name: BoundedLabel() for name in ("reason", "code", "operation")}
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, cached: labels() takes a lock and builds a tuple."""
        found = self._children.get((metric, *values))
        if found is None:
            found = self._children[(metric, *values)] = metric.labels(*values)
        return found


_recorder: Recorder | None = None
_active: Recorder | bool | None = False  # False: not decided since the last settings change


def _decide() -> Recorder | None:
    global _recorder, _active
    if prometheus_client is None or not get_settings().METRICS:
        _active = None
        return None
    if _recorder is None:
        _recorder = Recorder()
    _active = _recorder
    return _recorder


@on_reload
def _settings_changed() -> None:
    global _active
    _active = False


def recorder() -> Recorder | None:
    """This process' metrics, or None when they are off (or prometheus_client is missing)."""
    found = _active
    return _decide() if found is False else found  # type: ignore[return-value]


def enabled() -> bool:
    return recorder() is not None


# --- recording (the runtime's hooks) -----------------------------------------------------


def transport_of(scope: dict[str, Any] | None, known: str | None = None) -> str:
    """The credential transport of a connection, as a bounded label.

    How it authenticated, else ``known`` (an authentication refusal names the
    transport it refused), else ``none``.
    """
    method = getattr((scope or {}).get("wsops"), "auth_method", None) or known or "none"
    return method if method in TRANSPORT_LABELS else OTHER


def handshake(outcome: str, reason: str, transport: str) -> None:
    """Count one handshake: ``outcome`` accepted/refused, the refusal's event reason."""
    metrics = recorder()
    if metrics is None:
        return
    metrics.child(metrics.handshakes, outcome, metrics.label["reason"](reason) if reason else "",
                  transport if transport in TRANSPORT_LABELS else OTHER).inc()


def refused(scope: dict[str, Any] | None, kind: str, reason: str,
            transport: str | None = None) -> None:
    """Count a refused handshake from its security event's kind and reason."""
    if recorder() is not None:
        handshake("refused", "banned" if kind == "banned" else reason,
                  transport_of(scope, transport))


# id(scope["wsops"]) of each observed socket not accepted yet -> its last event's
# (kind, reason): an application that closes before accepting (connect_permission)
# is counted as a refusal with the reason it reported.
_before_accept: dict[int, tuple[str, str]] = {}


def noted(scope: dict[str, Any] | None, kind: str, reason: str) -> None:
    """``signals.report`` tells of each event (a dict lookup when nothing waits)."""
    if _before_accept and scope:
        key = id(scope.get("wsops"))
        if key in _before_accept:
            _before_accept[key] = (kind, reason)


def message(outcome: str, code: str = "") -> None:
    """Count one message: ``ok``, or ``refused`` with its error-frame code."""
    metrics = recorder()
    if metrics is not None:
        metrics.child(metrics.messages, outcome, metrics.label["code"](code) if code else "").inc()


def token_cache(result: str) -> None:
    """Count one token-cache lookup: ``hit`` or ``miss``."""
    metrics = recorder()
    if metrics is not None:
        metrics.child(metrics.token_cache, "hit" if result == "hit" else "miss").inc()


def redis_up(up: bool) -> None:
    """Follow this worker's Redis outage state (1 reachable, 0 down)."""
    metrics = recorder()
    if metrics is not None:
        metrics.redis_up.set(1 if up else 0)


class _RedisTimer:
    __slots__ = ("histogram", "started")

    def __init__(self, histogram: Any) -> None:
        self.histogram = histogram

    def __enter__(self) -> _RedisTimer:
        self.started = perf_counter()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.histogram.observe(perf_counter() - self.started)


_NOTHING = nullcontext()


def redis_timer(operation: str) -> Any:
    """``with redis_timer("admit"): await ...``: time one Redis round trip (errors too)."""
    metrics = recorder()
    if metrics is None:
        return _NOTHING
    return _RedisTimer(metrics.child(metrics.redis_seconds, metrics.label["operation"](operation)))


class _Watch:
    """One admitted socket's accept and close, seen on its way through send/receive.

    Slots, not closures and a dict: it lives as long as the socket (memory per idle
    socket is one of wsops' measured costs).
    """

    __slots__ = ("accepted", "code", "key", "metrics", "receive_inner", "scope", "send_inner")

    def __init__(self, metrics: Recorder, scope: dict[str, Any], receive: Any,
                 send: Any) -> None:
        self.metrics, self.scope = metrics, scope
        self.receive_inner, self.send_inner = receive, send
        self.accepted, self.code = False, None
        self.key = id(scope.get("wsops"))
        _before_accept[self.key] = ("", "application")

    async def send(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "websocket.accept" and not self.accepted:
            self.accepted = True
            _before_accept.pop(self.key, None)
            handshake("accepted", "", transport_of(self.scope))
            self.metrics.open_sockets.inc()
        elif kind == "websocket.close" and self.code is None:
            self.code = event.get("code", 1000)
            if not self.accepted:
                refused(self.scope, *_before_accept.pop(self.key, ("", "application")))
        await self.send_inner(event)

    async def receive(self) -> dict[str, Any]:
        event = await self.receive_inner()
        if self.code is None and event.get("type") == "websocket.disconnect":
            self.code = event.get("code", 1005)
        return event

    def ended(self) -> None:
        _before_accept.pop(self.key, None)
        if self.accepted:
            self.metrics.open_sockets.dec()
            code = self.metrics.label["code"](1006 if self.code is None else self.code)
            self.metrics.child(self.metrics.closes, code).inc()


async def observed(app: Callable[..., Any], scope: dict[str, Any], receive: Any,
                   send: Any) -> Any:
    """Run the application of one admitted socket, counting its accept and its close.

    Accept: one accepted handshake and one more open socket. Close: the code of the
    first close frame, the server's or the client's (1006 when the socket ends
    without one). A close sent before any accept is a refused handshake, with the
    reason of the connection's last security event.
    """
    metrics = recorder()
    if metrics is None:
        return await app(scope, receive, send)
    watch = _Watch(metrics, scope, receive, send)
    try:
        return await app(scope, watch.receive, watch.send)
    finally:
        watch.ended()


# --- exposition (the metrics view) -------------------------------------------------------


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db")


def forget_dead_workers(path: str) -> list[int]:
    """Drop the live gauges (open sockets, Redis up) of workers that are gone."""
    from prometheus_client import multiprocess

    dead = sorted({int(found.group(1)) for name in os.listdir(path)
                   if (found := _LIVE_GAUGE_FILE.fullmatch(name)) and not
                   _alive(int(found.group(1)))})
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)
    return dead


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """``(body, content type)`` of a scrape: this process, or every worker of the directory.

    The format follows the scraper's ``Accept`` header (Prometheus' text format 0.0.4
    by default, OpenMetrics when asked for).
    """
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept or "")
    path = multiprocess_dir()
    if path is None:
        return encoder(REGISTRY), content_type
    from prometheus_client import multiprocess

    forget_dead_workers(path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return encoder(registry), content_type
