"""Property and fuzz tests, in one place: no input makes a parser raise, and every
input maps to a documented outcome. CI runs a fixed budget (profile "ci", set in
conftest); run deeper locally with ``pytest tests/test_properties.py
--hypothesis-profile=deep``.
"""

import asyncio
import ipaddress
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsops.clientip import parse_address, resolve
from wsops.handshake import Handshake
from wsops.handshake.transports import (
    FOREIGN,
    MALFORMED,
    TICKET,
    TOKEN,
    find_credential,
    holds_our_secret,
    strip_secrets,
)
from wsops.origins import current_policy, parse_origin
from wsops.units import parse_rate


def at_least(examples: int) -> settings:
    """Thousands of examples for the cheap parsers, more under --hypothesis-profile=deep."""
    return settings(max_examples=max(examples, settings.default.max_examples))


ALL = ("subprotocol", "header", "query", "query_token", "cookie")
header_bytes = st.binary(max_size=300)
header_text = st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))


@at_least(3000)
@given(subprotocols=st.lists(st.text(max_size=200), max_size=8),
       headers=st.lists(st.tuples(st.sampled_from([b"authorization", b"origin", b"cookie",
                                                   b"x-forwarded-for", b"sec-websocket-protocol"]),
                                  header_bytes | header_text), max_size=6),
       query=st.binary(max_size=300))
def test_credential_parsing_never_raises(subprotocols, headers, query):
    scope = {"subprotocols": subprotocols, "headers": headers, "query_string": query}
    found = find_credential(scope, ALL)
    assert found is None or found.kind in (TOKEN, TICKET, FOREIGN, MALFORMED)
    stripped = strip_secrets(scope)
    kept = stripped.get("subprotocols") or []
    # No wsops secret is left, and the entry taken as the credential is gone (an
    # application protocol with the same text as that entry may stay).
    assert not any(isinstance(p, str) and holds_our_secret(p) for p in kept)
    if found is not None and found.secret and found.transport == "subprotocol":
        assert kept.count(found.secret) == subprotocols.count(found.secret) - 1
    if found is not None and found.secret:
        assert all(name not in (b"authorization", b"sec-websocket-protocol")
                   for name, _ in stripped["headers"])


@at_least(3000)
@given(st.text(max_size=300) | st.none())
def test_origin_parsing_never_raises(origin):
    parse_origin(origin)
    assert current_policy().allows(origin) in (True, False)


@given(label=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?", fullmatch=True),
       suffix=st.sampled_from(["example.org.evil.net", "evilexample.org", "example.com", "org"]))
def test_wildcard_never_matches_look_alikes(label, suffix):
    assert current_policy().allows(f"https://{label}.example.org")
    assert not current_policy().allows(f"https://{label}.{suffix}")


def canonical(text):
    return None if text is None else str(parse_address(text))


@at_least(2000)
@given(peer=st.ip_addresses().map(str) | st.none(),
       chain=st.lists(st.ip_addresses().map(str) | st.text(max_size=20), max_size=6))
def test_forwarded_for_resolution(peer, chain):
    from django.test import override_settings

    with override_settings(WSOPS={"TRUSTED_PROXIES": ["10.0.0.0/8", "unix"]}):
        header = ", ".join(chain).encode("utf-8", "replace")
        result = resolve(peer, header)
        trusted_peer = peer is None or parse_address(peer) in ipaddress.ip_network("10.0.0.0/8")
        if not trusted_peer:
            assert result == canonical(peer)  # an untrusted peer is the client, whatever it says
        elif result is not None and result != canonical(peer):
            assert ipaddress.ip_address(result) not in ipaddress.ip_network("10.0.0.0/8")
            assert result in [canonical(h) for h in header.decode("latin-1").split(",")]
        if result is not None:  # one canonical form: never IPv4-mapped, never a zone
            address = ipaddress.ip_address(result)
            assert str(address) == result
            assert address.version == 4 or address.ipv4_mapped is None


def test_forwarded_for_takes_the_right_most_untrusted_hop(settings):
    settings.WSOPS = {"TRUSTED_PROXIES": ["10.0.0.0/8"]}
    assert resolve("10.0.0.2", b"6.6.6.6, 1.2.3.4, 10.0.0.9") == "1.2.3.4"
    assert resolve("1.2.3.4", b"6.6.6.6") == "1.2.3.4"  # not from a trusted proxy
    assert resolve("10.0.0.2", b"bogus, 1.2.3.4") == "1.2.3.4"
    assert resolve("10.0.0.2", b"1.2.3.4, bogus") == "10.0.0.2"
    assert resolve(None, b"1.2.3.4") is None  # unix peer not trusted unless configured
    settings.WSOPS = {"TRUSTED_PROXIES": ["unix"]}
    assert resolve(None, b"9.9.9.9, 1.2.3.4") == "1.2.3.4"


@at_least(3000)
@given(st.text(max_size=30))
def test_rate_parsing_is_total(text):
    try:
        rate = parse_rate(text)
    except ValueError:
        return
    assert rate.count > 0 and rate.period > 0


@pytest.fixture(scope="module")
def harness(django_db_blocker):
    """A consumer instance fed frames directly: thousands of frames in seconds."""
    from chat.consumers import ChatConsumer
    from django.contrib.auth.models import AnonymousUser

    sent = []

    def make():
        consumer = ChatConsumer()
        consumer.scope = {"type": "websocket", "path": "/ws/chat/x/", "headers": [],
                          "client": ["127.0.0.1", 1], "user": AnonymousUser(),
                          "wsops": Handshake(ip="127.0.0.1", ip_key="127.0.0.1", origin=None,
                                             has_cookie=False, offers_marker=False,
                                             presents_credential=True, auth_method="header"),
                          "url_route": {"kwargs": {"room": "x"}}}
        consumer.channel_layer = None

        async def base_send(message):
            sent.append(message)

        consumer.base_send = base_send
        consumer._accepted = True
        return consumer

    return make, sent


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10),
                                                                       children, max_size=4),
    max_leaves=20,
)
frames = (
    st.text(max_size=2000).map(lambda t: {"text": t})
    | st.binary(max_size=200).map(lambda b: {"bytes": b})
    | json_values.map(lambda v: {"text": json.dumps(v)})
    | st.fixed_dictionaries({"action": st.sampled_from(["echo", "whoami", "send_message", "x"]),
                             "text": json_values}).map(lambda v: {"text": json.dumps(v)})
)


@given(frame=frames)
def test_frame_handler_never_raises(harness, frame):
    make, sent = harness
    consumer = make()
    sent.clear()
    asyncio.run(consumer.websocket_receive({"type": "websocket.receive", **frame}))
    assert sent, "every frame gets an answer: a reply, an error frame or a close"
    for message in sent:
        if message["type"] == "websocket.send":
            body = json.loads(message["text"])
            assert body["type"] in ("echo", "whoami", "error", "sent")
            if body["type"] == "error":
                assert body["code"] in ("invalid_json", "unknown_action", "invalid",
                                        "forbidden", "rate_limited")
        else:
            assert message["type"] == "websocket.close"
            assert message["code"] in (1003, 1009, 4400, 4429)


# --- the security review's kinds of attack (issue #12) --------------------------------

LOOK_ALIKE_PIECES = [".", "-", "\t", "\n", " ", "@", "%2e", "\u0430", "\u200b", "\x00", ":",
                     "/", "\\", "evil", "0", "\u3002", "\uff0e", "xn--", "#", "?", "*"]


@at_least(3000)
@given(position=st.integers(min_value=0, max_value=30),
       piece=st.sampled_from(LOOK_ALIKE_PIECES) | st.text(max_size=3),
       case=st.booleans())
def test_look_alike_origins_are_refused(position, piece, case):
    import re

    from wsops.origins import build_policy

    genuine = "https://app.example.com"
    candidate = genuine[:position] + piece + genuine[position:]
    if case:
        candidate = candidate.upper()
    if build_policy([genuine]).allows(candidate):
        assert re.fullmatch(r"https://app\.example\.com\.?(:443)?", candidate, re.IGNORECASE)


@at_least(3000)
@given(address=st.ip_addresses(v=4), port=st.integers(min_value=0, max_value=65535))
def test_every_notation_of_an_ipv4_client_is_one_address(address, port):
    for notation in (str(address), f"{address}:{port}", f"::ffff:{address}",
                     f"[::ffff:{address}]:{port}", f"::FFFF:{address}",
                     str(ipaddress.IPv6Address(f"::ffff:{address}").exploded)):
        assert parse_address(notation) == address, notation


@at_least(2000)
@given(network=st.integers(min_value=0, max_value=2**64 - 1),
       hosts=st.lists(st.integers(min_value=0, max_value=2**64 - 1), min_size=2, max_size=5))
def test_one_ipv6_64_is_one_key(network, hosts):
    from wsops.clientip import address_key

    keys = {address_key(ipaddress.IPv6Address((network << 64) | host)) for host in hosts}
    assert len(keys) == 1 and next(iter(keys)).endswith("/64")


@at_least(3000)
@given(st.text(max_size=100))
def test_address_parsing_is_total_and_canonical(text):
    parsed = parse_address(text)
    if parsed is not None:
        assert parse_address(str(parsed)) == parsed
        assert parsed.version == 4 or parsed.ipv4_mapped is None


@at_least(3000)
@given(st.text(max_size=200))
def test_a_logged_value_is_one_line_of_printable_text(text):
    import unicodedata

    from wsops.signals import escape

    logged = escape(text)
    assert len(logged.splitlines()) <= 1
    assert not any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in logged)


# --- malformed JWTs through the whole authenticator chain ------------------------------

EVERY_AUTHENTICATOR = ["wsops.auth.SimpleJWTAuthenticator", "wsops.auth.DRFTokenAuthenticator",
                       "wsops.auth.OAuth2Authenticator", "wsops.auth.TokenAuthenticator",
                       "wsops.auth.TicketAuthenticator", "wsops.auth.SessionAuthenticator"]


@pytest.fixture
def every_authenticator(settings):
    """The whole chain (DRF and OAuth2 look some values up in the database)."""
    settings.WSOPS = {**settings.WSOPS, "AUTHENTICATORS": EVERY_AUTHENTICATOR}


def b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def signed(header: dict, payload: dict, key: str | None = None) -> str:
    """A JWS whose signature is right for the tests' SECRET_KEY (or ``key``)."""
    import hashlib
    import hmac

    from django.conf import settings as django_settings

    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(payload).encode())
    mac = hmac.new((key or django_settings.SECRET_KEY).encode(), f"{head}.{body}".encode(),
                   hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


b64_part = st.binary(max_size=200).map(b64)
claims = st.dictionaries(
    st.sampled_from(["user_id", "exp", "jti", "token_type", "scope", "iat", "aud", "iss"])
    | st.text(max_size=8), json_values, max_size=8)
malformed_jwts = st.one_of(
    # bad base64 / not JSON
    st.lists(st.text(max_size=80), min_size=1, max_size=5).map(".".join),
    st.tuples(b64_part, b64_part, b64_part).map(".".join),
    # alg none, and other algorithms with no or a wrong signature
    st.builds(lambda alg, payload, sig: f"{b64(json.dumps({'alg': alg}).encode())}."
                                        f"{b64(json.dumps(payload).encode())}.{sig}",
              st.sampled_from(["none", "None", "NONE", "HS256", "RS256", "ES256", ""]),
              claims, st.sampled_from(["", "AAAA", b64(b"x" * 32)])),
    # huge headers (past MAX_SECRET_LENGTH, and just under it)
    st.integers(1000, 6000).map(lambda n: signed({"alg": "HS256", "kid": "k" * n},
                                                 {"user_id": 1})),
    # nested JSON in the header or the payload, deep enough for a RecursionError
    st.integers(10, 2900).map(lambda depth: f"{b64(nested(depth).encode())}."
                                            f"{b64(b'{}')}.AAAA"),
    st.integers(10, 2900).map(lambda depth: signed({"alg": "HS256"},
                                                   {"user_id": json.loads(nested(50)),
                                                    "x": nested(depth)})),
    # correctly signed, with hostile claims (types, sizes, missing ones), or another key
    claims.map(lambda c: signed({"alg": "HS256", "typ": "JWT"}, c)),
    claims.map(lambda c: signed({"alg": "HS256"}, c, key="another-key-" + "x" * 40)),
    # valid in every way simplejwt checks, with a hostile owner or scope claim
    st.builds(lambda owner, scope, jti: signed(
        {"alg": "HS256"}, {"token_type": "access", "exp": 4102444800, "jti": jti,
                           "user_id": owner, "scope": scope}),
        json_values | st.integers(min_value=2**63) | st.text(max_size=300), json_values,
        json_values),
)


@pytest.mark.django_db(transaction=True)
@settings(max_examples=max(600, settings.default.max_examples),
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=malformed_jwts, transport=st.sampled_from(["subprotocol", "header", "message"]))
def test_malformed_jwts_are_always_refused_never_a_crash(every_authenticator, secret,
                                                         transport):
    from wsops import auth, codes
    from wsops.handshake.refusal import Refused
    from wsops.handshake.transports import Credential, classify

    credential = Credential(transport, classify(secret), secret,
                            scheme="bearer" if transport == "header" else "")
    handshake = Handshake(ip="127.0.0.1", ip_key="127.0.0.1", origin=None, has_cookie=False,
                          offers_marker=True, presents_credential=True, credential=credential)
    auth.read_ahead(credential, handshake)  # the first step's look never raises either
    with pytest.raises(Refused) as refused:
        asyncio.run(auth.verify(credential, handshake))
    assert refused.value.code == codes.UNAUTHENTICATED
    assert len(secret) < 8 or secret not in repr(refused.value.__dict__)
