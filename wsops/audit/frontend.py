"""The front-end rules every server's audit reports (nginx, Apache, Caddy), one id each.

A parser (``nginx``, ``apache``, ``caddy``) finds the facts in its own syntax and
calls these with the place (``file:line``, or the Caddyfile site) and a hint in
that syntax; the id, level and wording stay the same whatever the server, so
``SILENCED_SYSTEM_CHECKS`` and scripts reading ``--json`` see one rule:

- E101 TLS older than 1.2 enabled; E102 weak ciphers; W101 no HSTS;
- E103 a WebSocket route whose upgrade never reaches daphne;
- W102 X-Forwarded-For appended to (or passed from) the client's own header;
- W103 query strings (tickets) or credentials in a log; W104 a proxy timeout not
  above daphne's ping interval; W105 TLS names not covering ``ALLOWED_HOSTS``;
  W106 responses revealing the server's version.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

OLD_PROTOCOLS = {"SSLv2", "SSLv3", "TLSv1", "TLSv1.1"}
WEAK_CIPHER_PARTS = ("RC4", "DES", "MD5", "NULL", "EXPORT", "EXP-", "ANULL", "ENULL", "ADH",
                     "AECDH", "PSK", "SEED", "IDEA")
PING_INTERVAL = 20  # daphne's default keepalive ping, seconds
LOCAL_HOSTS = ("*", "localhost", "127.0.0.1", "[::1]", "testserver")


class ConfigError(Exception):
    """The file cannot be read or parsed (a usage error for the command)."""


def walk(block: Any) -> list[Any]:
    """Every directive under ``block`` (a parsed block with ``children``), depth first."""
    found = []
    for child in block.children:
        found.append(child)
        found.extend(walk(child))
    return found


def weak_ciphers(names: list[str]) -> list[str]:
    """The enabled names (not ``!X``/``-X`` exclusions) of weak suites in a cipher list."""
    return [c for c in names if c and c[0] not in "!-"
            and any(part in c.upper() for part in WEAK_CIPHER_PARTS)]


def uncovered_hosts(names: list[str]) -> list[str]:
    """``ALLOWED_HOSTS`` entries that none of ``names`` (exact, ``*.x`` or ``.x``) covers."""
    def covered(host: str) -> bool:
        return any(name == host or (name.startswith("*.") and host.endswith(name[1:]))
                   or (name.startswith(".") and (host == name[1:] or host.endswith(name)))
                   for name in names)

    return [h for h in settings.ALLOWED_HOSTS
            if h not in LOCAL_HOSTS and not h.startswith(".") and not covered(h)]


def old_protocols(where: str, old: list[str], note: str, hint: str) -> CheckMessage:
    return Error(f"{where}: TLS server enables {', '.join(old)}{note}.", hint=hint,
                 id="wsops.E101")


def weak_cipher_suites(where: str, weak: list[str], hint: str = "Use Mozilla's intermediate "
                       "cipher list (ECDHE + AEAD).") -> CheckMessage:
    return Error(f"{where}: weak ciphers enabled: {', '.join(weak)}.", hint=hint,
                 id="wsops.E102")


def no_hsts(where: str, hint: str) -> CheckMessage:
    return Warning(f"{where}: TLS server sends no Strict-Transport-Security header.", hint=hint,
                   id="wsops.W101")


def no_upgrade(where: str, prefix: str, problems: list[str], hint: str) -> CheckMessage:
    return Error(f"{where}: WebSocket location {prefix!r}: {'; '.join(problems)}: the upgrade "
                 "never reaches daphne.", hint=hint, id="wsops.E103")


def forgeable_forwarded_for(where: str, how: str, hint: str) -> CheckMessage:
    return Warning(f"{where}: X-Forwarded-For {how}: at the edge a client can forge its "
                   "address (and dodge per-IP limits and bans).", hint=hint, id="wsops.W102")


def secrets_logged(where: str, what: str, hint: str) -> CheckMessage:
    return Warning(f"{where}: {what}.", hint=hint, id="wsops.W103")


def short_timeout(where: str, what: str, hint: str) -> CheckMessage:
    return Warning(f"{where}: {what} is not longer than daphne's {PING_INTERVAL}s ping "
                   "interval: idle sockets are cut.", hint=hint, id="wsops.W104")


def names_uncovered(where: str, tls_names: list[list[str]], names_word: str, hint: str
                    ) -> list[CheckMessage]:
    """W105 when there are TLS servers (``tls_names``: each one's names) and some host of
    ``ALLOWED_HOSTS`` is named by none of them."""
    uncovered = uncovered_hosts([name for names in tls_names for name in names])
    if not tls_names or not uncovered:
        return []
    return [Warning(f"{where}: no TLS {names_word} covers ALLOWED_HOSTS "
                    f"{', '.join(uncovered)}.", hint=hint, id="wsops.W105")]


def version_revealed(where: str, what: str, server: str, hint: str) -> CheckMessage:
    return Warning(f"{where}: {what}: responses reveal the {server} version.", hint=hint,
                   id="wsops.W106")
