"""Regression tests for the outside security review (issue #12), in process.

Each test reproduces one broken promise on the old code: live sockets keeping
revoked authority, Redis records that run code or grant logins, credentials
left in the scope, forged log lines, IPv6 and IPv4-mapped address forms, caches
surviving deletes. End-to-end variants are in ``test_e2e_hardening.py``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import pickle
import time
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command

from tests.helpers import configure_redis
from wsops import store, tickets, tokens
from wsops.limits.operators import Identity, ban, parse_identity
from wsops.testing import SecureCommunicator

pytestmark = pytest.mark.django_db(transaction=True)
PATH = "/ws/chat/lobby/"
ORIGIN = "https://app.example.com"


@pytest.fixture
def alice(make_user):
    return make_user("alice", perms=("chat.send_message",))


@pytest.fixture
def redis(settings, private_redis):
    return configure_redis(settings, private_redis)


@database_sync_to_async
def issue(user, **kwargs):
    return tokens.issue(user, **kwargs)


@database_sync_to_async
def db(function, *args, **kwargs):
    return function(*args, **kwargs)


async def send_message(socket, text="hi"):
    await socket.send_json({"action": "send_message", "text": text})
    while True:  # the room broadcast may arrive before or after the reply
        frame = await socket.receive_json()
        if frame["type"] != "message":
            return frame


async def poll(check, *, deadline: float = 20.0, every: float = 0.5):
    """Await ``check()`` until it is truthy; generous deadline, never a fixed wait."""
    end = time.monotonic() + deadline
    while True:
        result = await check()
        if result or time.monotonic() > end:
            return result
        await asyncio.sleep(every)


# --- 1. revoked authority on live sockets ---------------------------------------------


@pytest.mark.parametrize("transport", ["session", "token"])
async def test_removed_permission_stops_working_on_live_sockets(app, alice, settings,
                                                                transport):
    settings.WSOPS = {**settings.WSOPS, "PERMISSION_CACHE_SECONDS": 1,
                      "SESSION_SCOPES": ["chat:write"]}
    _, secret = await issue(alice, scopes=["chat:write"])
    kwargs = {"user": alice, "origin": ORIGIN} if transport == "session" else {"token": secret}
    async with SecureCommunicator(app, PATH, **kwargs) as socket:
        assert (await send_message(socket))["type"] == "sent"
        await db(alice.user_permissions.clear)

        async def forbidden():
            return (await send_message(socket)).get("code") == "forbidden"

        assert await poll(forbidden), "a removed permission kept working"


@pytest.mark.parametrize("transport", ["session", "token"])
async def test_superuser_demotion_takes_effect_on_live_sockets(app, make_user, settings,
                                                               transport):
    settings.WSOPS = {**settings.WSOPS, "PERMISSION_CACHE_SECONDS": 1,
                      "SESSION_SCOPES": ["chat:write"]}
    boss = await db(make_user, "boss", is_superuser=True)
    _, secret = await issue(boss, scopes=["chat:write"])
    kwargs = {"user": boss, "origin": ORIGIN} if transport == "session" else {"token": secret}
    async with SecureCommunicator(app, PATH, **kwargs) as socket:
        assert (await send_message(socket))["type"] == "sent"  # no perm row: superuser only
        boss.is_superuser = False
        await db(boss.save)

        async def forbidden():
            return (await send_message(socket)).get("code") == "forbidden"

        assert await poll(forbidden)


@pytest.mark.parametrize("transport", ["session", "token", "ticket"])
async def test_deactivated_user_is_closed_whatever_the_transport(app, alice, settings,
                                                                 transport):
    settings.WSOPS = {**settings.WSOPS, "TOKEN_CACHE_SECONDS": 1}
    _, secret = await issue(alice)
    kwargs = {"token": secret}
    if transport == "session":
        kwargs = {"user": alice, "origin": ORIGIN}
    elif transport == "ticket":
        kwargs = {"ticket": (await db(tickets.issue, alice))[0]}
    async with SecureCommunicator(app, PATH, timeout=15, **kwargs) as socket:
        assert socket.accepted
        alice.is_active = False
        await db(alice.save)
        assert await socket.receive_close() == 4401


async def test_token_scope_change_reaches_live_sockets(app, alice, settings):
    settings.WSOPS = {**settings.WSOPS, "TOKEN_CACHE_SECONDS": 1}
    token, secret = await issue(alice, scopes=["chat:write"])
    async with SecureCommunicator(app, PATH, token=secret) as socket:
        assert (await send_message(socket))["type"] == "sent"
        token.scopes = []
        await db(token.save)

        async def forbidden():
            return (await send_message(socket)).get("code") == "forbidden"

        assert await poll(forbidden), "a removed token scope kept working"


async def test_user_object_in_the_scope_is_refreshed(app, make_user, settings, monkeypatch):
    """Consumers reading ``scope["user"].is_staff`` see the database, not connect time."""
    from chat.consumers import ChatConsumer

    from wsops.consumers import ActionSpec

    settings.WSOPS = {**settings.WSOPS, "TOKEN_CACHE_SECONDS": 1}
    bob = await db(make_user, "bob", is_staff=True)

    async def staff(self, data):
        return {"type": "staff", "is_staff": self.scope["user"].is_staff}

    monkeypatch.setitem(ChatConsumer.actions, "staff", ActionSpec("staff", staff))
    async with SecureCommunicator(app, PATH, user=bob, origin=ORIGIN) as socket:
        await socket.send_json({"action": "staff"})
        assert (await socket.receive_json())["is_staff"] is True
        bob.is_staff = False
        await db(bob.save)

        async def demoted():
            await socket.send_json({"action": "staff"})
            return (await socket.receive_json())["is_staff"] is False

        assert await poll(demoted)


# --- 4. nothing in Redis runs code or grants a login -----------------------------------


class _Boom:
    ran = False

    def __reduce__(self):
        return (_Boom._explode, ())

    @staticmethod
    def _explode():
        _Boom.ran = True
        return "boom"


async def test_a_pickle_in_the_token_cache_is_never_loaded(app, alice, redis, events):
    _, secret = await issue(alice)
    key = tokens.cache_key(tokens.hash_secret(secret))
    payload = base64.b64encode(pickle.dumps(_Boom())).decode()
    redis.client().set(key, f"{alice.pk}|{secret[:12]}|{payload}")
    outcome = await SecureCommunicator(app, PATH, token=secret).outcome()
    assert outcome.accepted  # a miss: verified against the database instead
    assert not _Boom.ran
    assert [e["reason"] for e in events if e["kind"] == "tampered"] == ["bad_token_record"]
    assert "pickle" not in redis.client().get(key)  # replaced by a sealed record


async def test_a_forged_or_copied_cache_entry_grants_nothing(app, alice, make_user, redis):
    mallory = await db(make_user, "mallory")
    _, alice_secret = await issue(alice)
    _, mallory_secret = await issue(mallory)
    assert (await SecureCommunicator(app, PATH, token=alice_secret).outcome()).accepted
    client = redis.client()
    genuine = client.get(tokens.cache_key(tokens.hash_secret(alice_secret)))
    assert genuine.count("|") >= 3 and str(alice.pk) in genuine
    # Copy alice's genuine entry under mallory's token: the MAC is bound to the key.
    client.set(tokens.cache_key(tokens.hash_secret(mallory_secret)), genuine)
    async with SecureCommunicator(app, PATH, token=mallory_secret) as socket:
        await socket.send_json({"action": "whoami"})
        assert (await socket.receive_json())["user"] == "mallory"
    # Edit the JSON inside a genuine entry: refused as tampered, verified from the DB.
    client.set(tokens.cache_key(tokens.hash_secret(mallory_secret)),
               genuine.replace('"username":"alice"', '"username":"mallory"'))
    async with SecureCommunicator(app, PATH, token=alice_secret) as socket:
        await socket.send_json({"action": "whoami"})
        assert (await socket.receive_json())["user"] == "alice"


async def test_a_ticket_written_into_redis_is_not_a_ticket(app, alice, redis, events):
    forged = tokens.generate_secret("wstkt_")
    redis.client().set(tickets._key(forged), f'{{"user_id": {alice.pk}, "origin": null}}')
    outcome = await SecureCommunicator(app, PATH, ticket=forged).outcome()
    assert outcome.refused_before_accept
    assert [e["reason"] for e in events if e["kind"] == "auth"] == ["unknown_or_used_ticket"]
    assert any(e["kind"] == "tampered" for e in events)


async def test_cached_user_has_no_password_and_cannot_overwrite_it(app, alice, redis):
    _, secret = await issue(alice)
    assert (await SecureCommunicator(app, PATH, token=secret).outcome()).accepted
    raw = redis.client().get(tokens.cache_key(tokens.hash_secret(secret)))
    assert "password" not in raw and "pbkdf2" not in raw
    verified = await tokens.verify(secret, touch=False)
    assert "password" in verified.user.get_deferred_fields()


# --- 5. credentials refused, never ignored; none left in the scope ---------------------


async def test_query_token_without_query_token_transport_is_refused(app, alice, settings,
                                                                    events):
    settings.WSOPS = {**settings.WSOPS, "REJECT_WITH": "close_code"}
    _, secret = await issue(alice)
    outcome = await SecureCommunicator(app, f"{PATH}?token={secret}").outcome()
    assert outcome.close_code == 4401
    assert events[-1]["reason"] == "query_token_disabled"


@pytest.mark.parametrize("transports,kwargs,reason", [
    (["subprotocol", "query", "cookie"], {"bearer": "wst_" + "a" * 43}, "header_disabled"),
    (["header", "cookie"], {"token": "wst_" + "a" * 43}, "subprotocol_disabled"),
])
async def test_wsops_credentials_in_switched_off_transports_are_refused(
        app, settings, events, transports, kwargs, reason):
    settings.WSOPS = {**settings.WSOPS, "TOKEN_TRANSPORTS": transports}
    assert (await SecureCommunicator(app, PATH, **kwargs).outcome()).refused_before_accept
    assert events[-1]["reason"] == reason


async def test_no_credential_is_left_in_any_scope(app, alice, monkeypatch):
    from chat.consumers import ChatConsumer

    from wsops.consumers import ActionSpec

    seen = []

    async def capture(self, data):
        seen.append(repr(self.scope))
        return {"type": "ok"}

    monkeypatch.setitem(ChatConsumer.actions, "whoami", ActionSpec("whoami", capture))
    basic = "Basic YWxpY2U6czNjcjN0"
    async with SecureCommunicator(app, f"{PATH}?token=not-ours&room=1", user=alice,
                                  origin=ORIGIN, headers={"authorization": basic}) as socket:
        await socket.send_json({"action": "whoami"})
        await socket.receive_json()
    assert seen and "YWxpY2U6czNjcjN0" not in seen[0] and "not-ours" not in seen[0]
    assert "room=1" in seen[0]


# --- 6. forged log lines ---------------------------------------------------------------


async def test_client_values_cannot_forge_log_lines(app, caplog, events):
    """daphne percent-decodes the path: ``%0a`` arrives as a newline."""
    caplog.set_level(logging.WARNING, logger="wsops.security")
    forged = "/ws/x\n2026-11-23 WARNING wsops banned refused: fake (ip=6.6.6.6)\r\x1b[2J"
    await _raw_handshake(app, {"path": forged,
                               "headers": [(b"origin", b"https://evil.example\nline2")]})
    records = [r for r in caplog.records if r.name == "wsops.security"]
    assert len(records) == 1
    line = records[0].getMessage()
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert "\\n2026-11-23" in line and "\\x1b" in line and "\\nline2" in line
    assert events[-1]["path"] == forged  # the structured event keeps the raw value


# --- 10. caches dropped on every ORM path ----------------------------------------------


@pytest.mark.parametrize("change", ["delete_token", "purge", "delete_user", "expire_by_save",
                                    "queryset_delete"])
async def test_cached_token_is_refused_at_once_after_orm_changes(app, alice, redis, change):
    token, secret = await issue(alice, ttl=3600)
    assert (await SecureCommunicator(app, PATH, token=secret).outcome()).accepted  # cached
    assert redis.client().get(tokens.cache_key(tokens.hash_secret(secret)))
    if change == "delete_token":
        await db(token.delete)
    elif change == "purge":
        await db(tokens.revoke, [token])
        await db(call_command, "wstokens", "purge", "--older-than", "0")
    elif change == "delete_user":
        await db(alice.delete)
    elif change == "expire_by_save":
        token.expires_at = tokens.now() - timedelta(seconds=1)
        await db(token.save)
    elif change == "queryset_delete":
        from wsops.models import WebSocketToken

        await db(lambda: WebSocketToken.objects.filter(pk=token.pk).delete())
    assert redis.client().get(tokens.cache_key(tokens.hash_secret(secret))) is None
    assert (await SecureCommunicator(app, PATH, token=secret).outcome()).refused_before_accept


# --- 3. address forms: IPv4-mapped, IPv6 prefixes, CIDR bans ---------------------------


def test_identities_take_the_canonical_per_ip_key(settings):
    assert parse_identity("ip:::ffff:127.0.0.1") == Identity("ip", "127.0.0.1")
    assert parse_identity("ip:2001:db8::1") == Identity("ip", "2001:db8::/64")
    assert parse_identity("ip:[2001:DB8:0:0:1::9]") == Identity("ip", "2001:db8::/64")
    assert parse_identity("ip:2001:db8::/48").network is not None
    assert parse_identity("ip:10.0.0.0/8") == Identity("ip", "10.0.0.0/8")
    assert parse_identity("ip:10.1.2.3/32") == Identity("ip", "10.1.2.3")
    settings.WSOPS = {**settings.WSOPS, "IPV6_PREFIX": 56}
    assert parse_identity("ip:2001:db8:0:12::1") == Identity("ip", "2001:db8:0:0::/56".replace(
        ":0:0::", "::"))
    for bad in ("ip:", "ip:not-an-address", "ip:2001:db8::/200", "ip:1.2.3.4/8x"):
        with pytest.raises(ValueError):
            parse_identity(bad)


async def test_one_ipv6_64_shares_the_connect_rate_and_the_cap(app, alice, redis, settings):
    settings.WSOPS = {**settings.WSOPS, "RATES": {"connect": "3/m"}}
    results = []
    for host in range(12):
        outcome = await SecureCommunicator(app, PATH, user=alice, origin=ORIGIN,
                                           client=(f"2001:db8:1:2::{host + 1:x}", 5000)).outcome()
        results.append(outcome.accepted)
    assert results.count(True) == 3
    other = await SecureCommunicator(app, PATH, user=None, client=("2001:db8:1:3::1", 5000)
                                     ).outcome()
    assert other.close_code != 4429
    assert redis.client().exists("wsops:rl:connect:{ip:2001:db8:1:3::/64}")


async def test_ipv6_cap_counts_the_network(app, make_user, redis, settings):
    settings.WSOPS = {**settings.WSOPS, "MAX_CONNECTIONS_PER_IP": 2,
                      "MAX_CONNECTIONS_PER_USER": 100}
    users = [await db(make_user, f"u{n}") for n in range(6)]
    sockets, accepted = [], 0
    try:
        for n, user in enumerate(users):
            socket = SecureCommunicator(app, PATH, user=user, origin=ORIGIN,
                                        client=(f"2001:db8:7:7::{n + 1:x}", 5000))
            outcome = await socket.connect()
            sockets.append(socket)
            accepted += outcome.accepted
    finally:
        for socket in sockets:
            await socket.disconnect()
    assert accepted == 2


async def test_ipv4_mapped_peer_matches_ipv4_ban_and_proxy(app, alice, redis, settings):
    ban(redis.client(), parse_identity("ip:127.0.0.1"), 60, "test")
    mapped = await SecureCommunicator(app, PATH, user=alice, origin=ORIGIN,
                                      client=("::ffff:127.0.0.1", 5000)).outcome()
    assert mapped.refused_before_accept
    settings.WSOPS = {**settings.WSOPS, "TRUSTED_PROXIES": ["::ffff:10.0.0.2"]}
    via_proxy = await SecureCommunicator(app, PATH, user=alice, origin=ORIGIN,
                                         client=("10.0.0.2", 5000),
                                         headers={"x-forwarded-for": "::ffff:127.0.0.1"}
                                         ).outcome()
    assert via_proxy.refused_before_accept  # the proxy is trusted; its client is banned


@pytest.mark.parametrize("cidr,inside,outside", [
    ("2001:db8::/48", "2001:db8:0:ffff::1", "2001:db9::1"),
    ("2001:db8:8000::/33", "2001:db8:8123::1", "2001:db8:7fff::1"),
    ("10.0.0.0/8", "10.200.3.4", "11.0.0.1"),
    ("192.168.4.0/22", "192.168.7.255", "192.168.8.0"),
])
async def test_cidr_bans(app, alice, redis, cidr, inside, outside):
    call_command("wsratelimit", "block", f"ip:{cidr}", "--for", "1h")
    refused = await SecureCommunicator(app, PATH, user=alice, origin=ORIGIN,
                                       client=(inside, 5000)).outcome()
    assert refused.refused_before_accept
    admitted = await SecureCommunicator(app, PATH, user=alice, origin=ORIGIN,
                                        client=(outside, 5000)).outcome()
    assert admitted.accepted
    snapshot = store.sync_client()
    from wsops.limits.operators import snapshot as take

    assert [(b["kind"], b["id"]) for b in take(snapshot)["bans"]] == [
        ("ip", str(parse_identity(f"ip:{cidr}").network))]
    call_command("wsratelimit", "unblock", f"ip:{cidr}")
    assert (await SecureCommunicator(app, PATH, user=alice, origin=ORIGIN,
                                     client=(inside, 5000)).outcome()).accepted


# --- review item 13.9: refusals a developer can understand ------------------------------


async def test_anonymous_client_without_origin_meets_connect_permission(app, settings, events):
    settings.WSOPS = {**settings.WSOPS, "REJECT_WITH": "close_code"}
    outcome = await SecureCommunicator(app, PATH).outcome()
    assert outcome.close_code == 4401
    assert events[-1]["reason"] == "connect_permission"


async def test_cookie_without_origin_is_still_refused(app, alice, events):
    outcome = await SecureCommunicator(app, PATH, user=alice).outcome()
    assert outcome.refused_before_accept and events[-1]["reason"] == "missing_origin"


async def _raw_handshake(app, scope_extra):
    """Drive the stack by hand and return everything it sent."""
    sent, inbox = [], asyncio.Queue()
    await inbox.put({"type": "websocket.connect"})
    scope = {"type": "websocket", "path": PATH, "raw_path": PATH.encode(), "query_string": b"",
             "headers": [(b"origin", b"https://evil.example")], "subprotocols": [],
             "client": ["127.0.0.1", 5000], "server": ["127.0.0.1", 80], **scope_extra}

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(app(scope, inbox.get, send), timeout=10)
    return sent


async def test_refusal_reason_reaches_the_client_when_explained(app, settings):
    settings.WSOPS = {**settings.WSOPS, "EXPLAIN_REFUSALS": True}
    denial = await _raw_handshake(app, {"extensions": {"websocket.http.response": {}}})
    assert denial[0]["type"] == "websocket.http.response.start" and denial[0]["status"] == 403
    assert b"origin_not_allowed" in denial[1]["body"]
    plain = await _raw_handshake(app, {})
    assert plain == [{"type": "websocket.close", "code": 4403, "reason": "origin_not_allowed"}]
    settings.WSOPS = {**settings.WSOPS, "EXPLAIN_REFUSALS": False}
    assert "reason" not in (await _raw_handshake(app, {}))[0]


async def test_cap_refusal_events_name_the_user_and_token(app, alice, redis, settings, events):
    settings.WSOPS = {**settings.WSOPS, "MAX_CONNECTIONS_PER_USER": 1}
    _, secret = await issue(alice)
    assert (await SecureCommunicator(app, PATH, token=secret).outcome()).accepted  # cached
    async with SecureCommunicator(app, PATH, token=secret) as first:
        assert first.accepted
        second = await SecureCommunicator(app, PATH, token=secret).outcome()
        assert second.refused_before_accept
    cap = [e for e in events if e["kind"] == "connection_cap"]
    assert len(cap) == 1
    assert str(cap[0]["user_id"]) == str(alice.pk) and cap[0]["token_prefix"] == secret[:12]


# --- concurrent ticket redemption --------------------------------------------------------


@pytest.mark.parametrize("shared", [True, False])
async def test_fifty_concurrent_redemptions_of_one_ticket_admit_one(alice, settings,
                                                                   private_redis, shared):
    if shared:
        configure_redis(settings, private_redis)
    for _ in range(3):
        ticket, _ = await db(tickets.issue, alice)
        results = await asyncio.gather(*(tickets.consume(ticket) for _ in range(50)))
        assert sum(record is not None for record in results) == 1


# --- found by the second review: replays, transactions, unmarked subprotocols ------------


async def test_a_genuine_record_stored_again_after_its_time_is_refused(app, alice, redis,
                                                                       events, monkeypatch):
    """A Redis writer replaying a revoked token's old cache entry, or a used ticket."""
    from wsops import sealing

    token, secret = await issue(alice)
    assert (await SecureCommunicator(app, PATH, token=secret).outcome()).accepted
    client = redis.client()
    old_entry = client.get(tokens.cache_key(tokens.hash_secret(secret)))
    ticket, _ = await db(tickets.issue, alice)
    old_ticket = client.get(tickets._key(ticket))
    assert await tickets.consume(ticket) is not None
    await db(tokens.revoke, [token])

    later = time.time() + 3600  # past TOKEN_CACHE_SECONDS and TICKET_TTL
    monkeypatch.setattr(sealing.time, "time", lambda: later)
    client.set(tokens.cache_key(tokens.hash_secret(secret)), old_entry)
    client.set(tickets._key(ticket), old_ticket)
    assert (await SecureCommunicator(app, PATH, token=secret).outcome()).refused_before_accept
    assert await tickets.consume(ticket) is None
    assert {e["reason"] for e in events if e["kind"] == "tampered"} == {
        "expired_token_record", "expired_ticket_record"}


def test_a_transactional_save_drops_the_cache_again_at_commit(alice, settings, private_redis):
    """Until COMMIT a handshake reads the old row and caches it again."""
    from django.db import transaction

    configure_redis(settings, private_redis)
    token, secret = tokens.issue(alice)
    key = tokens.cache_key(tokens.hash_secret(secret))
    client = private_redis.client()
    with transaction.atomic():
        token.expires_at = tokens.now() - timedelta(seconds=1)
        token.save()
        client.set(key, "cached again from the old committed row")
    assert client.get(key) is None


@pytest.mark.parametrize("offer", [["wst_" + "a" * 43], ["chat", "wst_" + "a" * 43],
                                   ["WSOPS", "wstkt_" + "b" * 43]])
async def test_a_secret_offered_without_the_wsops_marker_is_refused(app, events, offer):
    outcome = await SecureCommunicator(app, PATH, subprotocols=offer).outcome()
    assert outcome.refused_before_accept
    assert events[-1]["reason"] == "malformed_credential"


@pytest.mark.parametrize("query", [
    "access_token=SECRET&room=1",  # another name
    "Token=SECRET&room=1",  # another case
    "%74oken=SECRET",  # percent-encoded name
    "a=1;token=SECRET",  # inside another value (a ';' separator)
    "x=1%26token%3DSECRET",  # an encoded '&'
    "x=+SECRET", "x=abcSECRET",  # glued to other text
])
async def test_wsops_secrets_anywhere_in_the_query_are_refused_and_stripped(app, alice, query,
                                                                          events):
    """A wsops secret the transports do not take is refused, never ignored (the socket
    would be anonymous, or authenticated by its cookie, with the secret in its scope)."""
    secret = "wst_" + "c" * 43
    outcome = await SecureCommunicator(app, f"{PATH}?{query.replace('SECRET', secret)}",
                                       user=alice, origin=ORIGIN).outcome()
    assert outcome.refused_before_accept
    assert [e["reason"] for e in events] in (["query_token_disabled"],
                                            ["malformed_credential"])
    assert secret not in repr(events)


async def test_other_query_values_reach_the_application(app, alice, monkeypatch):
    from chat.consumers import ChatConsumer

    from wsops.consumers import ActionSpec

    seen = []

    async def capture(self, data):
        seen.append(self.scope["query_string"])
        return {"type": "ok"}

    monkeypatch.setitem(ChatConsumer.actions, "whoami", ActionSpec("whoami", capture))
    async with SecureCommunicator(app, f"{PATH}?room=1&q=newest_wst_x", user=alice,
                                  origin=ORIGIN) as socket:
        await socket.send_json({"action": "whoami"})
        await socket.receive_json()
    assert seen == [b"room=1&q=newest_wst_x"]


async def test_operator_closes_carry_their_reason_when_explained(app, alice, settings):
    settings.WSOPS = {**settings.WSOPS, "EXPLAIN_REFUSALS": True}
    token, secret = await issue(alice)
    async with SecureCommunicator(app, PATH, token=secret, timeout=10) as socket:
        await db(call_command, "wstokens", "revoke", token.prefix, "--disconnect")
        closing = await socket.communicator.receive_output(timeout=10)
    assert closing == {"type": "websocket.close", "code": 4401, "reason": "revoked"}


def test_a_ban_reason_is_one_printable_line(private_redis):
    record = ban(private_redis.client(), Identity("user", "1"), 60, "line1\r\nX-Evil: 1\x1b")
    assert record["reason"] == "line1  X-Evil: 1"
