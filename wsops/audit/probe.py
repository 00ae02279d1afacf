"""``wssecure probe``: black-box probes of a running WebSocket endpoint.

``wssecure check`` reads the project; this looks at what the deployed endpoint
does when a hostile page, an anonymous client or a flood reaches it. Each probe
is a small async function over a ``probing.Prober`` returning ``CheckMessage``
findings with stable ids ``wsops.P0xx``, like Django's check functions:

- P001-P004 cross-site hijacking, P010-P014 authentication, P020-P023 input
  limits, P030-P031 throttling, P040-P048 transport, P050 how refusals look,
  P090 probes that did not run and why.

A refused handshake proves something only when the same socket with the right
origin and credential is accepted: the origin probes carry the credential given
(``--cookie``/``--token``) and run only against such a baseline, so an
authentication refusal is never mistaken for an origin check.
"""

from __future__ import annotations

import datetime
import re
import secrets
import ssl
import warnings
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from cryptography import x509
from django.core.checks import CheckMessage, Error, Info, Warning

from .. import codes
from .probing import BudgetExhausted, Prober, Unreachable, closed, json_codes

Probe = Callable[[Prober], Awaitable[list[CheckMessage]]]

KIB, MIB = 1024, 1024 * 1024
FRAME_SIZES = (16 * KIB, 64 * KIB, 256 * KIB, MIB, 2 * MIB)
SETTLE = 0.5  # s of quiet after a frame: the application's answer or close arrives first
HANDSHAKE_BURST, MESSAGE_BURST = 20, 100
HSTS_MIN_AGE = 365 * 24 * 3600
EXPIRY_DAYS = 21
FOREIGN_ORIGIN = "https://evil.test"
# closes for what a frame held, not for how fast frames came (the message burst)
INPUT_CLOSES = {codes.INVALID_MESSAGES, codes.UNSUPPORTED_DATA, codes.MESSAGE_TOO_BIG, 1007}
TLS_VERSIONS = (("TLS 1.0", "TLSv1"), ("TLS 1.1", "TLSv1_1"), ("TLS 1.2", "TLSv1_2"),
                ("TLS 1.3", "TLSv1_3"))
VERSION_IN_HEADER = re.compile(r"\d+\.\d+")


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n % MIB == 0 else f"{n // KIB} KiB"


def _anonymous_refused(p: Prober) -> bool:
    """An anonymous socket with the right origin was tried and refused."""
    anonymous = p.notes.get("anonymous")
    return anonymous is not None and not anonymous.accepted


def _baseline(p: Prober) -> dict[str, Any] | None:
    """Options of a socket the endpoint accepts (credential, good origin), or None."""
    return p.notes.get("baseline")


def _needs_baseline(p: Prober, probe: str) -> dict[str, Any] | None:
    options = _baseline(p)
    if options is None:
        p.skip(probe, "no socket was accepted to compare with: give a working --token or "
                      "--cookie (with --origin if the default origin is refused)")
    return options


async def _session(p: Prober, probe: str, label: str) -> Any:
    """An open socket like the baseline one, for the probes that send frames; None (and
    the probe listed as not run) when there is no baseline or this socket is refused."""
    options = _needs_baseline(p, probe)
    if options is None:
        return None
    attempt, connection = await p.open(label, **options)
    if connection is None:
        p.skip(probe, f"the socket for it was refused ({attempt.how()})")
    return connection


async def _send_and_settle(p: Prober, connection: Any, data: str | bytes
                           ) -> tuple[list[str | bytes], int | None]:
    """Send a frame; the frames the server answers with, and its close code if it closed."""
    from websockets.exceptions import ConnectionClosed

    try:
        await p.send(connection, data)
    except ConnectionClosed:
        return [], connection.close_code
    return await p.drain(connection, min(SETTLE, p.target.timeout))


def _padded(size: int) -> str:
    """A JSON text frame of exactly ``size`` bytes."""
    head = '{"action": "wsops.probe", "pad": "'
    return head + "x" * (size - len(head) - 2) + '"}'


# --- authentication (first: the other probes compare with what it finds) ------------------


async def probe_anonymous(p: Prober) -> list[CheckMessage]:
    attempt = await p.attempt("no credential")
    p.notes["anonymous"] = attempt
    if attempt.accepted:
        p.notes["baseline"] = {}
        return [Warning(
            "The endpoint accepts a socket with no credential at all (right origin, no token, "
            "no cookie).",
            hint="If it is not meant to be public, refuse anonymous sockets: a consumer with "
                 "connect_permission = IsAuthenticated() behind SecureWebsocketStack. Silence "
                 "wsops.P010 for a public endpoint.",
            id="wsops.P010")]
    return []


async def probe_credential(p: Prober) -> list[CheckMessage]:
    target = p.target
    if not (target.token or target.cookie):
        return []
    options = {"subprotocols": p.credential_subprotocols(), "cookie": True}
    attempt = await p.attempt("with the given credential", **options)
    messages: list[CheckMessage] = []
    if attempt.accepted:
        p.notes["baseline"] = options
    else:
        messages.append(Warning(
            f"The credential given was refused ({attempt.how()}): the probes that need an "
            "accepted socket compare with an anonymous one, if any.",
            hint="Pass a valid --token (wstokens issue) or --cookie sessionid=..., and "
                 "--origin if the default origin is not allowed.",
            id="wsops.P014"))
    if target.token and attempt.subprotocol == target.token:
        messages.append(_echo_finding())
    return messages


def _echo_finding() -> CheckMessage:
    return Error(
        "The server answers with the token itself as Sec-WebSocket-Protocol: the secret is "
        "echoed in a response header, where proxies and browser tools log it.",
        hint="Select the fixed protocol name ('wsops', which SecureWebsocketStack does), "
             "never the credential offered beside it.",
        id="wsops.P013")


async def probe_garbage_token(p: Prober) -> list[CheckMessage]:
    garbage = "wsops-probe-invalid-" + secrets.token_hex(16)
    attempt = await p.attempt("an invalid token", subprotocols=["wsops", garbage])
    messages: list[CheckMessage] = []
    if attempt.accepted and _anonymous_refused(p):
        messages.append(Error(
            "An invalid token is accepted where no credential is refused: anything that looks "
            "like a credential gets in.",
            hint="Refuse unknown tokens at the handshake (TokenAuthMiddleware does, with 403 "
                 "or 4401).",
            id="wsops.P011"))
    if attempt.subprotocol == garbage:
        messages.append(_echo_finding())
    return messages


async def probe_query_token(p: Prober) -> list[CheckMessage]:
    target = p.target
    if not target.token:
        p.skip("query token", "needs --token")
        return []
    if not _anonymous_refused(p):
        p.skip("query token", "anonymous sockets are not refused, so an accepted ?token= "
                              "would prove nothing")
        return []
    query = "&".join(q for q in (target.parts.query, urlencode({"token": target.token})) if q)
    attempt = await p.attempt("token in the query string", url=target.with_query(query))
    if attempt.accepted:
        return [Warning(
            "A long-lived token is accepted in the query string (?token=): URLs end up in "
            "access logs, proxies and browser history.",
            hint="Send tokens in the subprotocol or the Authorization header; browsers use "
                 "single-use ?ticket= (remove 'query_token' from TOKEN_TRANSPORTS).",
            id="wsops.P012")]
    return []


# --- cross-site hijacking -----------------------------------------------------------------


async def _origin_accepted(p: Prober, probe: str, origin: str | None, label: str,
                           **extra: Any) -> bool | None:
    options = _needs_baseline(p, probe)
    if options is None:
        return None
    attempt = await p.attempt(label, **{**options, **extra, "origin": origin})
    return attempt.accepted


async def probe_foreign_origin(p: Prober) -> list[CheckMessage]:
    if await _origin_accepted(p, "foreign origin", FOREIGN_ORIGIN,
                              f"Origin {FOREIGN_ORIGIN}"):
        p.notes["any origin"] = True
        carrying = " with the cookie" if p.target.cookie else \
            " with the token" if p.target.token else ""
        return [Error(
            f"A socket from a foreign page (Origin: {FOREIGN_ORIGIN}) is accepted{carrying}: "
            "any site can open it in its visitors' names (cross-site WebSocket hijacking).",
            hint="Check Origin against your own origins: SecureWebsocketStack (OriginGuard), "
                 "with ALLOWED_HOSTS or WSOPS['ALLOWED_ORIGINS'] listing only your sites.",
            id="wsops.P001")]
    return []


async def probe_null_origin(p: Prober) -> list[CheckMessage]:
    if await _origin_accepted(p, "null origin", "null", "Origin null"):
        return [Error(
            "A socket with Origin: null is accepted: sandboxed iframes, file: pages and some "
            "redirects send it, so any page can produce it.",
            hint="Treat 'null' as a foreign origin (OriginGuard does).", id="wsops.P002")]
    return []


def lookalike_origins(origin: str) -> list[str]:
    """``https://app.example.com`` -> a suffix and a prefix look-alike of it."""
    scheme, _, host = origin.partition("://")
    return [f"{origin}.evil.test", f"{scheme}://evil{host}"]


async def probe_lookalike_origin(p: Prober) -> list[CheckMessage]:
    accepted = []
    for origin in lookalike_origins(p.target.origin):
        if await _origin_accepted(p, "lookalike origin", origin, f"Origin {origin}"):
            accepted.append(origin)
    if accepted:
        why = "as is any origin (wsops.P001)" if p.notes.get("any origin") else \
            "the origin check matches by prefix or suffix"
        return [Error(
            f"Look-alike origins are accepted ({', '.join(accepted)}): {why}, and anyone can "
            "register such a name.",
            hint="Compare the whole origin (scheme, host, port), or '*.' wildcards on a dot "
                 "boundary, as OriginGuard does.",
            id="wsops.P003")]
    return []


async def probe_cookie_without_origin(p: Prober) -> list[CheckMessage]:
    if not p.target.cookie:
        p.skip("cookie without origin", "needs --cookie")
        return []
    if _needs_baseline(p, "cookie without origin") is None:
        return []
    attempt = await p.attempt("cookie without Origin", origin=None, cookie=True)
    if attempt.accepted and _anonymous_refused(p):
        return [Error(
            "A socket authenticated by the cookie alone, without an Origin header, is "
            "accepted: the origin check is skipped when the header is missing.",
            hint="Require an allowed Origin on every cookie-authenticated socket; only bearer "
                 "tokens may omit it (OriginGuard's rule).",
            id="wsops.P004")]
    return []


# --- input limits -------------------------------------------------------------------------


async def probe_frame_size(p: Prober) -> list[CheckMessage]:
    connection = await _session(p, "frame size", "frame sizes")
    if connection is None:
        return []
    largest, refused, code = 0, None, None
    try:
        for size in FRAME_SIZES:
            _, code = await _send_and_settle(p, connection, _padded(size))
            if code is not None:
                refused = size
                break
            largest = size
    finally:
        await connection.close()
    if refused is None:
        return [Error(
            f"A {_size(largest)} frame is accepted: no message size cap up to "
            f"{_size(FRAME_SIZES[-1])}; one client makes the worker buffer as much as it sends.",
            hint="Cap messages: WSOPS['MAX_MESSAGE_BYTES'] (64 KiB default) and daphne "
                 "--websocket-max-message-size (wsdeploy daphne passes it).",
            id="wsops.P020")]
    fact = Info(f"The largest frame accepted is {_size(largest) if largest else 'none'}; "
                f"{_size(refused)} was {closed(code)}.", id="wsops.P023")
    if largest >= MIB:
        return [fact, Warning(
            f"Frames of {_size(largest)} are accepted: each client can make the worker buffer "
            "that much per message.",
            hint="Lower the cap to what your messages need: WSOPS['MAX_MESSAGE_BYTES'] "
                 "(64 KiB default) and daphne --websocket-max-message-size.",
            id="wsops.P021")]
    return [fact]


async def probe_binary_frames(p: Prober) -> list[CheckMessage]:
    connection = await _session(p, "binary frames", "binary frame")
    if connection is None:
        return []
    try:
        frames, code = await _send_and_settle(p, connection, b"\x00\xffwsops-probe")
    finally:
        await connection.close()
    if code is None and not json_codes(frames):
        return [Info(
            "A binary frame is accepted without an error frame or close.",
            hint="If the protocol is text/JSON, refuse binary frames (SecureJsonWebsocket"
                 "Consumer closes with 1003).",
            id="wsops.P022")]
    return []


# --- throttling ---------------------------------------------------------------------------


async def probe_handshake_burst(p: Prober) -> list[CheckMessage]:
    options = _needs_baseline(p, "handshake burst")
    if options is None:
        return []
    count = min(HANDSHAKE_BURST, p.budget.connections_left)
    if count < 3:
        p.skip("handshake burst", "fewer than 3 connections left in --max-connections")
        return []
    held, refused_at = [], None
    try:
        for n in range(1, count + 1):
            _, connection = await p.open(f"handshake burst #{n}", **options)
            if connection is None:
                refused_at = n
                break
            held.append(connection)
    finally:
        for connection in held:
            await connection.close()
    if refused_at is None:
        return [Warning(
            f"{count} handshakes in a row, each held open, were all accepted: no connect "
            f"throttle or per-client connection cap stops a burst of {count}.",
            hint="Set WSOPS['RATES']['connect'] and MAX_CONNECTIONS_PER_IP/_USER "
                 "(SecureWebsocketStack), and limit_req/limit_conn in nginx (wsdeploy nginx).",
            id="wsops.P030")]
    return []


async def probe_message_burst(p: Prober) -> list[CheckMessage]:
    count = min(MESSAGE_BURST, p.budget.messages_left - 2)
    if count < 10:
        p.skip("message burst", "fewer than 10 messages left in --max-messages")
        return []
    connection = await _session(p, "message burst", "message burst")
    if connection is None:
        return []
    from websockets.exceptions import ConnectionClosed

    sent, code = 0, None
    try:
        for _ in range(count):
            await p.send(connection, p.target.message)
            sent += 1
        frames, code = await p.drain(connection, min(2 * SETTLE, p.target.timeout))
    except ConnectionClosed:
        frames, code = [], connection.close_code
    finally:
        await connection.close()
    throttled = codes.THROTTLED in json_codes(frames)
    p.notes["message burst"] = (sent, code, throttled)
    if code in INPUT_CLOSES and not throttled:
        p.skip("message burst", f"the socket was {closed(code)}, for invalid input rather than "
                                "a rate: give --message with a frame the endpoint accepts")
        return []
    if code is None and not throttled:
        return [Warning(
            f"{sent} messages sent as fast as possible on one socket got no throttling error "
            f"and no close: no message rate stops a burst of {sent}.",
            hint="Throttle messages per connection and per user: WSOPS['RATES']['message'] "
                 "and 'user_message' (SecureJsonWebsocketConsumer).",
            id="wsops.P031")]
    return []


# --- transport ----------------------------------------------------------------------------


async def probe_cleartext(p: Prober) -> list[CheckMessage]:
    if not p.target.secure and not p.target.is_loopback:
        return [Error(
            f"The endpoint is probed over ws:// on {p.target.host}: tokens, cookies and every "
            "message cross the network in clear text.",
            hint="Serve wss:// only (wsdeploy nginx terminates TLS and redirects http).",
            id="wsops.P040")]
    return []


async def probe_certificate(p: Prober) -> list[CheckMessage]:
    if not p.target.secure:
        return []
    try:
        tls = p.tls_handshake(p.ssl_context())
    except ssl.SSLCertVerificationError as error:
        p.verify = False  # go on probing, unverified: the report says why
        return [Error(
            f"The certificate of {p.target.host}:{p.target.port} does not verify: "
            f"{error.verify_message}.",
            hint="Serve the full chain (fullchain.pem) of a certificate for this name from a "
                 "public CA; for a private CA, point SSL_CERT_FILE at its certificate.",
            id="wsops.P042")]
    except (OSError, ssl.SSLError) as error:
        raise Unreachable(f"TLS to {p.target.host}:{p.target.port}: {error}") from error
    with tls:
        leaf = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
        p.notes["tls"] = {"negotiated": tls.version(), "expires": leaf.not_valid_after_utc,
                          "issuer": leaf.issuer.rfc4514_string()}
    left = leaf.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    if left < datetime.timedelta(days=EXPIRY_DAYS):
        return [Warning(
            f"The certificate expires in {left.days} day(s) "
            f"({leaf.not_valid_after_utc:%Y-%m-%d}).",
            hint="Check that renewals run: certbot renew --dry-run.", id="wsops.P043")]
    return []


def _offers(p: Prober, attribute: str) -> bool | None:
    """Whether the server completes a handshake at exactly this TLS version (None: this
    machine's OpenSSL cannot offer it, so it was not tried)."""
    version = getattr(ssl.TLSVersion, attribute)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with warnings.catch_warnings():  # deprecated versions, tried on purpose
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = context.maximum_version = version
        if version < ssl.TLSVersion.TLSv1_2:
            context.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        return None
    try:
        with p.tls_handshake(context):
            return True
    except ssl.SSLError as error:
        if error.reason == "NO_PROTOCOLS_AVAILABLE":
            return None
        return False
    except OSError:
        return False


async def probe_tls_versions(p: Prober) -> list[CheckMessage]:
    if not p.target.secure:
        return []
    results = {name: _offers(p, attribute) for name, attribute in TLS_VERSIONS}
    accepted = [name for name, ok in results.items() if ok]
    untested = [name for name, ok in results.items() if ok is None]
    tls = p.notes.get("tls", {})
    facts = f"TLS versions accepted: {', '.join(accepted) or 'none'}"
    if untested:
        facts += f" (not tried, this machine's OpenSSL cannot offer {', '.join(untested)})"
    if tls:
        facts += f"; certificate from {tls['issuer']}, expires {tls['expires']:%Y-%m-%d}"
    messages: list[CheckMessage] = [Info(facts + ".", id="wsops.P048")]
    old = [name for name in accepted if name in ("TLS 1.0", "TLS 1.1")]
    if old:
        messages.append(Error(
            f"The server completes {' and '.join(old)} handshakes: deprecated protocols "
            "(RFC 8996) with known weaknesses.",
            hint="ssl_protocols TLSv1.2 TLSv1.3; in the default_server too (wsdeploy nginx "
                 "renders it), since nginx < 1.29.2 ignores it in other servers.",
            id="wsops.P041"))
    return messages


async def probe_hsts(p: Prober) -> list[CheckMessage]:
    if not p.target.secure:
        return []
    response = p.http_get(secure=True, port=p.target.port)
    p.notes["https server"] = response.getheader("Server")
    value = response.getheader("Strict-Transport-Security") or ""
    match = re.search(r"max-age\s*=\s*\"?(\d+)", value, re.I)
    if match is None or int(match.group(1)) < HSTS_MIN_AGE:
        shown = f"Strict-Transport-Security: {value}" if value else "no Strict-Transport-Security"
        return [Warning(
            f"https://{p.target.host}:{p.target.port}/ answers with {shown}: a first visit "
            "over http can be downgraded, and so can the cookies the sockets use.",
            hint='add_header Strict-Transport-Security "max-age=63072000" always; '
                 "(wsdeploy nginx does).",
            id="wsops.P044")]
    return []


async def probe_http_redirect(p: Prober) -> list[CheckMessage]:
    if not p.target.secure:
        return []
    port = p.target.http_port
    try:
        response = p.http_get(secure=False, port=port)
    except Unreachable:
        p.notes["http port"] = f"nothing answers on port {port}"
        return []
    location = response.getheader("Location") or ""
    if response.status in (301, 302, 307, 308) and \
            location.lower().startswith(f"https://{p.target.host.lower()}"):
        return []
    return [Warning(
        f"http://{p.target.host}:{port}/ answers {response.status} without redirecting to "
        f"https://{p.target.host}/{f' (Location: {location})' if location else ''}.",
        hint="Redirect all of port 80 to https except the ACME webroot (wsdeploy nginx does).",
        id="wsops.P045")]


async def probe_server_header(p: Prober) -> list[CheckMessage]:
    seen = {a.headers.get("server") for a in p.attempts} | {p.notes.get("https server")}
    versions = sorted(s for s in seen if s and VERSION_IN_HEADER.search(s))
    if versions:
        return [Warning(
            f"Responses name the server's version (Server: {', '.join(versions)}): it tells "
            "an attacker which advisories to try.",
            hint="server_tokens off; in nginx (wsdeploy nginx renders it); behind a proxy, "
                 "let it replace the upstream's Server header.",
            id="wsops.P046")]
    return []


async def probe_compression(p: Prober) -> list[CheckMessage]:
    options = _needs_baseline(p, "compression")
    if options is None:
        return []
    attempt = await p.attempt("permessage-deflate offered", compression="deflate", **options)
    if "permessage-deflate" in attempt.headers.get("sec-websocket-extensions", ""):
        return [Info(
            "The server negotiates permessage-deflate: compression costs CPU and tens of KiB "
            "per socket, and compressing secrets next to attacker-chosen text in one message "
            "leaks them through sizes (CRIME/BREACH-style).",
            hint="Fine for large, non-secret payloads; otherwise turn it off at the server "
                 "(daphne does not negotiate it).",
            id="wsops.P047")]
    return []


# --- the report about the probes themselves -----------------------------------------------


def refusals(p: Prober) -> list[dict[str, Any]]:
    return [{"probe": a.label, "outcome": a.how(), "status": a.status,
             "close_code": a.close_code} for a in p.attempts if not a.accepted]


def report_refusals(p: Prober) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    seen: dict[str, list[str]] = {}
    for attempt in p.attempts:
        if not attempt.accepted and not attempt.label.startswith("handshake burst #"):
            seen.setdefault(attempt.how(), []).append(attempt.label)
    burst = [a for a in p.attempts if a.label.startswith("handshake burst #")]
    if burst and not burst[-1].accepted:
        seen.setdefault(burst[-1].how(), []).append(
            f"handshake burst (at #{len(burst)})")
    if sent := p.notes.get("message burst"):
        count, code, throttled = sent
        if code is not None or throttled:
            how = closed(code) if code is not None else "rate_limited error frames"
            seen.setdefault(how, []).append(f"message burst of {count}")
    if seen:
        messages.append(Info("Refusals, as clients see them: " + "; ".join(
            f"{how}: {', '.join(labels)}" for how, labels in seen.items()) + ".",
            id="wsops.P050"))
    reasons: dict[str, list[str]] = {}
    for name, reason in p.skipped:
        if name not in reasons.setdefault(reason, []):
            reasons[reason].append(name)
    notes = [f"{', '.join(names)} ({reason})" for reason, names in reasons.items()]
    if "http port" in p.notes:
        notes.append(p.notes["http port"])
    if notes:
        messages.append(Info("Not probed: " + "; ".join(notes) + ".", id="wsops.P090"))
    return messages


PROBES: list[Probe] = [
    probe_cleartext, probe_certificate, probe_tls_versions, probe_hsts, probe_http_redirect,
    probe_anonymous, probe_credential, probe_garbage_token, probe_query_token,
    probe_foreign_origin, probe_null_origin, probe_lookalike_origin,
    probe_cookie_without_origin, probe_frame_size, probe_binary_frames, probe_compression,
    probe_server_header, probe_message_burst, probe_handshake_burst,
]


async def run(p: Prober, probes: list[Probe] | None = None) -> list[CheckMessage]:
    """Every probe in turn; one whose budget runs out is reported as not run.

    ``Unreachable`` propagates: an endpoint that cannot be reached has no findings.
    """
    messages: list[CheckMessage] = []
    for probe in PROBES if probes is None else probes:
        try:
            messages.extend(await probe(p))
        except BudgetExhausted as spent:
            p.skip(probe.__name__.removeprefix("probe_").replace("_", " "), str(spent))
        except Unreachable as error:
            if not p.reached:
                raise
            p.skip(probe.__name__.removeprefix("probe_").replace("_", " "),
                   f"the endpoint stopped answering: {error}")
    return messages + report_refusals(p)
