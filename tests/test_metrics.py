"""Metrics recorded in process, the scrape endpoint's guard, and JSON security events."""

import io
import json
import logging

import pytest
from channels.db import database_sync_to_async
from prometheus_client import REGISTRY

from wsops import metrics, signals, tokens
from wsops.handshake.state import Handshake
from wsops.logging import JsonFormatter
from wsops.testing import SecureCommunicator

pytestmark = pytest.mark.django_db(transaction=True)
PATH = "/ws/chat/lobby/"


def value(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """Sample values now, to compare with later ones (the registry lives across tests)."""

    def __init__(self, *samples):
        self.samples = samples
        self.before = [value(name, **labels) for name, labels in samples]

    def now(self):
        return [value(name, **labels) - before
                for (name, labels), before in zip(self.samples, self.before, strict=True)]


@pytest.fixture
def secret(make_user):
    return database_sync_to_async(
        lambda: tokens.issue(make_user("alice", perms=("chat.send_message",)),
                             scopes=["chat:write"])[1])


async def test_handshakes_messages_and_closes_are_counted(app, secret):
    accepted = ("wsops_handshakes_total", {"outcome": "accepted", "reason": "",
                                           "transport": "subprotocol"})
    unknown = ("wsops_handshakes_total", {"outcome": "refused", "reason": "unknown_token",
                                          "transport": "subprotocol"})
    anonymous = ("wsops_handshakes_total", {"outcome": "refused",
                                            "reason": "connect_permission", "transport": "none"})
    origin = ("wsops_handshakes_total", {"outcome": "refused", "reason": "origin_not_allowed",
                                         "transport": "none"})
    ok = ("wsops_messages_total", {"outcome": "ok", "code": ""})
    bad_json = ("wsops_messages_total", {"outcome": "refused", "code": "invalid_json"})
    closes = ("wsops_closes_total", {"code": "1000"})
    delta = Delta(accepted, unknown, anonymous, origin, ok, bad_json, closes,
                  ("wsops_open_sockets", {}))
    token = await secret()
    async with SecureCommunicator(app, PATH, token=token) as socket:
        assert socket.accepted
        assert delta.now()[-1] == 1  # one socket open
        await socket.send_json({"action": "echo", "text": "hi"})
        await socket.receive_json()
        await socket.send_text("{nope")
        await socket.receive_json()
    forged = "wst_" + "A" * 43
    assert (await SecureCommunicator(app, PATH, token=forged).outcome()).refused_before_accept
    assert (await SecureCommunicator(app, PATH).outcome()).refused_before_accept
    elsewhere = await SecureCommunicator(app, PATH, origin="https://evil.example",
                                         cookies={"sessionid": "x"}).outcome()
    assert elsewhere.refused_before_accept
    assert delta.now() == [1, 1, 1, 1, 1, 1, 1, 0]


def test_labels_are_bounded():
    label = metrics.BoundedLabel(limit=3)
    assert [label(v) for v in ("a", "b", "c", "d", "a")] == ["a", "b", "c", "other", "a"]
    fresh = metrics.BoundedLabel()
    assert fresh("Free text from an operator") == "other"
    assert fresh("10.0.0.1") == "other" and fresh("user:42") == "other"


def test_a_ban_reason_is_counted_as_banned():
    banned = ("wsops_handshakes_total", {"outcome": "refused", "reason": "banned",
                                         "transport": "none"})
    delta = Delta(banned)
    metrics.refused({}, signals.BANNED, "spammed the lobby, see ticket 42")
    assert delta.now() == [1]


def test_metrics_off_records_nothing(settings):
    settings.WSOPS = {**settings.WSOPS, "METRICS": False}
    delta = Delta(("wsops_messages_total", {"outcome": "ok", "code": ""}))
    metrics.message("ok")
    with metrics.redis_timer("admit"):
        pass
    assert metrics.recorder() is None and delta.now() == [0]


def test_scrape_allowed_from_loopback_only(client, settings):
    response = client.get("/ws/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"# TYPE wsops_handshakes_total counter" in response.content
    assert client.get("/ws/metrics", REMOTE_ADDR="203.0.113.9").status_code == 404
    settings.WSOPS = {**settings.WSOPS, "METRICS_ALLOWED": ["203.0.113.0/24"]}
    assert client.get("/ws/metrics", REMOTE_ADDR="203.0.113.9").status_code == 200
    assert client.get("/ws/metrics", REMOTE_ADDR="::ffff:203.0.113.9").status_code == 200
    assert client.get("/ws/metrics").status_code == 404


def test_scrape_behind_a_trusted_proxy_uses_the_client_address(client, settings):
    settings.WSOPS = {**settings.WSOPS, "TRUSTED_PROXIES": ["127.0.0.1"]}
    forwarded = client.get("/ws/metrics", HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert forwarded.status_code == 404  # the proxy is loopback, the client is not
    assert client.get("/ws/metrics", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 200


def test_metrics_allowed_is_validated(settings):
    from django.core.exceptions import ImproperlyConfigured

    from wsops.conf import validate

    assert validate({"METRICS_ALLOWED": ["10.0.0.0/8", "::1"]}).METRICS_ALLOWED == (
        "10.0.0.0/8", "::1")
    for bad in (["10.0.0.0/33"], "10.0.0.0/8", ["unix"], [7]):
        with pytest.raises(ImproperlyConfigured, match="METRICS_ALLOWED"):
            validate({"METRICS_ALLOWED": bad})
    with pytest.raises(ImproperlyConfigured, match="METRICS"):
        validate({"METRICS": "yes"})


def test_metrics_off_answers_503_to_allowed_clients(client, settings):
    settings.WSOPS = {**settings.WSOPS, "METRICS": False}
    response = client.get("/ws/metrics")
    assert response.status_code == 503 and b'WSOPS["METRICS"] is False' in response.content
    assert client.get("/ws/metrics", REMOTE_ADDR="203.0.113.9").status_code == 404


# --- JSON events ------------------------------------------------------------------------


def json_lines(emit):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("wsops.security")
    logger.addHandler(handler)
    try:
        emit()
    finally:
        logger.removeHandler(handler)
    return stream.getvalue().splitlines()


def test_an_event_is_one_json_line_with_ids_and_no_secret():
    secret = "wst_" + "B" * 43
    scope = {"type": "websocket", "path": f"/ws/x\n2026 WARNING forged\u2028{secret}",
             "client": ("10.0.0.1", 5000), "headers": [(b"origin", b'a"b')]}
    scope["wsops"] = Handshake.parse(scope)
    events = []
    lines = json_lines(lambda: events.append(
        signals.report(signals.ORIGIN, scope, "origin_not_allowed", close_code=4403)))
    assert len(lines) == 1 and lines[0].isascii()
    record = json.loads(lines[0])
    event = events[0]
    assert record["event_id"] == event["event_id"] and len(event["event_id"]) == 32
    assert record["connection_id"] == event["connection_id"] and event["connection_id"]
    assert record["kind"] == "origin" and record["reason"] == "origin_not_allowed"
    assert record["ip"] == "10.0.0.1" and record["close_code"] == 4403
    assert record["origin"] == 'a"b' and record["level"] == "WARNING"
    assert record["timestamp"].endswith("+00:00") and "T" in record["timestamp"]
    assert secret not in lines[0] and "wst_BBBBBBBB..." in record["path"]
    # A registered socket's events name its registry id, each event with its own id.
    scope["wsops"].connection_id = "worker-1:42"
    again = [signals.report(signals.SIZE, scope, "message_too_big") for _ in range(2)]
    assert [e["connection_id"] for e in again] == ["worker-1:42"] * 2
    assert len({event["event_id"], *(e["event_id"] for e in again)}) == 3


def test_the_proxy_request_id_is_kept_when_well_formed():
    def event(value):
        return signals.report(signals.AUTH, {"type": "websocket", "client": ("10.0.0.1", 1),
                                             "headers": [(b"x-request-id", value)]}, "x")

    assert event(b"4f1c2a9e0b7d4e8f9a6b3c2d1e0f9a8b")["request_id"] == (
        "4f1c2a9e0b7d4e8f9a6b3c2d1e0f9a8b")
    for odd in (b"a b\n", b"x" * 65, b"", b'"quoted"'):
        assert event(odd)["request_id"] is None
    assert signals.report(signals.AUTH, {"type": "websocket", "headers": []},
                          "x")["request_id"] is None


def test_the_readme_logging_snippet_writes_json_lines(capsys):
    import logging.config

    from tests.test_readme import BLOCK, section

    snippet = next(body for language, body in BLOCK.findall(section("Observability"))
                   if language == "python" and "JsonFormatter" in body)
    namespace = {}
    exec(snippet, namespace)  # the README's own text, as a user would paste it
    logger = logging.getLogger("wsops.security")
    saved = logger.handlers[:], logger.propagate, logger.level
    try:
        logging.config.dictConfig(namespace["LOGGING"])
        event = signals.report(signals.THROTTLE, {"type": "websocket", "path": "/ws/a\nb",
                                                  "client": ("10.0.0.2", 1)}, "connect_rate")
        lines = capsys.readouterr().err.splitlines()
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["event_id"] == event["event_id"] and record["path"] == "/ws/a\nb"
