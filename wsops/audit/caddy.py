"""Rules for a deployed Caddy configuration (``wssecure check --caddyfile``).

The Caddyfile is read by Caddy itself: ``caddy adapt`` turns it into Caddy's JSON
config, which the rules walk (a ``.json`` file is read as that JSON directly, so
no binary is needed for it). Caddy's JSON has no line numbers: a finding names
the file and the site (its host names).

A TLS server is an ``apps.http.servers`` entry that listens on the HTTPS port or
has TLS connection policies. A WebSocket route is proxied by every
``reverse_proxy`` of such a server whose routes (and subroutes) have no path
matcher or one that matches the route's prefix. Caddy upgrades WebSockets by
itself and its versions (2.x) send no version in ``Server``, so W106 does not
apply.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.checks import CheckMessage

from ..deploy import caddy as caddy_binary
from . import frontend
from .frontend import PING_INTERVAL, ConfigError

OLD_PROTOCOLS = {"tls1.0": "TLSv1", "tls1.1": "TLSv1.1"}
# The request fields of an access log entry that carry credentials, and what they hold.
SECRET_FIELDS = {"request>uri": "the query string (tickets)",
                 "request>headers>Sec-Websocket-Protocol": "the Sec-WebSocket-Protocol header "
                                                            "(tokens)",
                 "request>headers>Authorization": "the Authorization header (bearer tokens)",
                 "request>headers>Cookie": "the Cookie header (sessions)"}
GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
EVERYONE = {"0.0.0.0/0", "::/0"}


def load(path: str) -> dict[str, Any]:
    """Caddy's JSON config for ``path`` (a Caddyfile through ``caddy adapt``, or JSON)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"cannot read {path}: no such file")
    if file.suffix == ".json":
        try:
            return json.loads(file.read_text())
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read {path}: {error}") from None
    binary = caddy_binary.find_caddy()
    if binary is None:
        raise ConfigError("reading a Caddyfile takes the caddy binary (`caddy adapt`; Debian: "
                          "apt-get install caddy), or give Caddy's JSON config (.json)")
    with tempfile.TemporaryDirectory(prefix="wsops-caddy-audit-") as home:
        config, output = caddy_binary.adapt(binary, file, caddy_binary.isolated_env(Path(home)))
    if config is None:
        raise ConfigError(f"cannot adapt {path}: {caddy_binary.error_line(output)}")
    return config


def _seconds(value: Any) -> float | None:
    """A Caddy duration: nanoseconds (int) or Go's duration text ("15s", "1m30s")."""
    if isinstance(value, (int, float)):
        return value / 1e9
    if isinstance(value, str) and (parts := GO_DURATION.findall(value)):
        return sum(float(amount) * UNITS[unit] for amount, unit in parts)
    return None


def _handlers(routes: list[dict[str, Any]], paths: tuple[list[str], ...] = ()
              ) -> Iterator[tuple[dict[str, Any], tuple[list[str], ...]]]:
    """Every handler under ``routes`` (subroutes followed), with the path matchers above it."""
    for route in routes or []:
        matchers = [m.get("path") for m in route.get("match", []) if m.get("path")]
        scope = (*paths, [p for group in matchers for p in group]) if matchers else paths
        for handler in route.get("handle", []):
            yield handler, scope
            if handler.get("handler") == "subroute":
                yield from _handlers(handler.get("routes", []), scope)


def _reaches(scope: tuple[list[str], ...], prefix: str) -> bool:
    probe = prefix + "x"  # a request under the prefix, e.g. /ws/x
    return all(any(fnmatch.fnmatchcase(probe, pattern) or probe.startswith(pattern)
                   for pattern in patterns) for patterns in scope)


class Server:
    def __init__(self, name: str, config: dict[str, Any], https_port: int):
        self.name, self.config = name, config
        self.https_port = https_port

    @property
    def tls(self) -> bool:
        return bool(self.config.get("tls_connection_policies")) or any(
            str(listen).endswith(f":{self.https_port}") for listen in
            self.config.get("listen", []))

    @property
    def names(self) -> list[str]:
        return [host.lower() for handler_route in self.config.get("routes", [])
                for match in handler_route.get("match", []) for host in match.get("host", [])]

    def where(self, path: str) -> str:
        return f"{path} (site {', '.join(self.names) or self.name})"

    def handlers(self, kind: str) -> list[tuple[dict[str, Any], tuple[list[str], ...]]]:
        return [(h, s) for h, s in _handlers(self.config.get("routes", []))
                if h.get("handler") == kind]


def check_tls(server: Server, where: str) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for policy in server.config.get("tls_connection_policies", []):
        floor = policy.get("protocol_min", "tls1.2")
        if floor in OLD_PROTOCOLS:
            old = [p for key, p in OLD_PROTOCOLS.items() if key >= floor]
            messages.append(frontend.old_protocols(
                where, old, f" (protocols {floor} and up)",
                hint="tls { protocols tls1.2 tls1.3 } (wsdeploy caddy renders Mozilla's "
                     "profiles)"))
        if weak := frontend.weak_ciphers(policy.get("cipher_suites", [])):
            messages.append(frontend.weak_cipher_suites(where, weak))
    hsts = any(name.lower() == "strict-transport-security" for handler, _ in
               server.handlers("headers") for group in ("set", "add")
               for name in (handler.get("response", {}).get(group) or {}))
    if not hsts:
        messages.append(frontend.no_hsts(
            where, hint='header Strict-Transport-Security "max-age=63072000; '
                        'includeSubDomains"'))
    return messages


def check_proxies(server: Server, prefix: str, where: str) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for proxy, scope in server.handlers("reverse_proxy"):
        if not _reaches(scope, prefix):
            continue
        request = proxy.get("headers", {}).get("request", {})
        removed = [h for h in request.get("delete", []) if h.lower() in ("upgrade", "connection")]
        versions = proxy.get("transport", {}).get("versions")
        problems = [f"header_up -{h} removes the upgrade" for h in removed]
        if versions and "1.1" not in versions:
            problems.append(f"transport versions {' '.join(versions)} (no HTTP/1.1)")
        if problems:
            messages.append(frontend.no_upgrade(
                where, prefix, problems,
                hint="Keep the Upgrade and Connection headers and HTTP/1.1 to daphne "
                     "(Caddy's defaults)."))
        transport = proxy.get("transport", {})
        for key in ("read_timeout", "write_timeout"):
            seconds = _seconds(transport.get(key))
            if seconds is not None and seconds <= PING_INTERVAL:
                messages.append(frontend.short_timeout(
                    where, f"reverse_proxy {key} {transport[key]!r}",
                    hint="Leave read_timeout and write_timeout unset (no timeout), or above "
                         "60s."))
    return messages


def check_forwarded_for(server: Server, where: str) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    trusted = set(server.config.get("trusted_proxies", {}).get("ranges", []))
    for proxy, _ in server.handlers("reverse_proxy"):
        trusted |= set(proxy.get("trusted_proxies", []))
        values = proxy.get("headers", {}).get("request", {}).get("set", {})
        for name, value in values.items():
            if name.lower() == "x-forwarded-for" and \
                    "{http.request.header.x-forwarded-for}" in " ".join(value).lower():
                messages.append(frontend.forgeable_forwarded_for(
                    where, "is appended to the client's own header",
                    hint="header_up X-Forwarded-For {remote_host}"))
    if trusted & EVERYONE:
        messages.append(frontend.forgeable_forwarded_for(
            where, f"from any client is trusted (trusted_proxies {', '.join(sorted(trusted))})",
            hint="At the edge, list no trusted_proxies (or only your load balancers)."))
    return messages


def _logger(config: dict[str, Any], server: Server) -> list[tuple[str, dict[str, Any]]]:
    """The loggers the server's access log writes to: (name, their config)."""
    logs = server.config.get("logs")
    if logs is None:
        return []  # no access log
    names = set(logs.get("logger_names", {}).values()) | {logs.get("default_logger_name")}
    defined = config.get("logging", {}).get("logs", {})
    return [(name, defined.get(name) or defined.get("default") or {})
            for name in sorted(n for n in names if n)] or [("default",
                                                            defined.get("default") or {})]


def _recorded(logger: dict[str, Any]) -> list[str]:
    """What of SECRET_FIELDS a logger writes: all of it unless its encoder filters."""
    encoder = logger.get("encoder") or {}
    fields = encoder.get("fields", {}) if encoder.get("format") == "filter" else {}
    deleted = {key for key, flt in fields.items() if flt.get("filter") == "delete"}
    cleaned = {key for key, flt in fields.items()
               if key == "request>uri" and flt.get("filter") in ("regexp", "query")}
    return [what for key, what in SECRET_FIELDS.items() if key not in cleaned
            and not any(key == d or key.startswith(d + ">") for d in deleted)]


LOG_HINT = ('format filter { wrap json; fields { request>uri regexp "\\?.*$" ""; '
            "request>headers>Sec-Websocket-Protocol delete; request>headers>Authorization "
            "delete; request>headers>Cookie delete } } (wsdeploy caddy does)")


def check_logs(config: dict[str, Any], server: Server, where: str) -> list[CheckMessage]:
    return [frontend.secrets_logged(where, f"the access log ({name}) records "
                                           f"{', '.join(recorded)}",
                                    hint=f"In the site's log {{ }}: {LOG_HINT}.")
            for name, logger in _logger(config, server) if (recorded := _recorded(logger))]


def check_default_log(config: dict[str, Any], path: str) -> list[CheckMessage]:
    """Caddy's default logger writes a request that failed upstream (a daphne worker down)
    with its URI and headers."""
    default = config.get("logging", {}).get("logs", {}).get("default") or {}
    if recorded := _recorded(default):
        return [frontend.secrets_logged(
            f"{path} (Caddy's default log)", "requests that fail upstream (a daphne worker "
            f"down) are logged with {', '.join(recorded)}",
            hint=f"In the global options: log default {{ output stderr; {LOG_HINT} }}.")]
    return []


def check(path: str, websocket_prefixes: list[str]) -> list[CheckMessage]:
    config = load(path)
    http = config.get("apps", {}).get("http", {})
    https_port = http.get("https_port", 443)
    servers = [Server(name, body, https_port) for name, body in http.get("servers", {}).items()]
    messages: list[CheckMessage] = []
    tls_servers = [s for s in servers if s.tls]
    for server in tls_servers:
        where = server.where(path)
        messages.extend(check_tls(server, where))
        messages.extend(check_forwarded_for(server, where))
        messages.extend(check_logs(config, server, where))
        for prefix in websocket_prefixes:
            messages.extend(check_proxies(server, prefix, where))
    if tls_servers:
        messages.extend(check_default_log(config, path))
    messages.extend(frontend.names_uncovered(
        path, [s.names for s in tls_servers], "site address",
        hint="Add them to the site's addresses (wsdeploy caddy --domain)."))
    return messages
