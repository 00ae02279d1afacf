"""Rules for a deployed nginx configuration, parsed with crossplane (includes followed).

nginx inheritance is modelled where it matters: ``ssl_*``, ``server_tokens`` and
``access_log`` fall back from location to server to http; ``add_header`` and
``proxy_set_header`` are inherited only by a block that sets none of its own.
A WebSocket location is the location nginx would pick for a WebSocket route's
URL prefix (longest prefix match), so a catch-all ``location /`` is judged too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import crossplane
from django.core.checks import CheckMessage

from . import frontend
from .frontend import OLD_PROTOCOLS, PING_INTERVAL, ConfigError, walk

NGINX_DEFAULT_PROTOCOLS = "TLSv1 TLSv1.1 TLSv1.2 TLSv1.3"  # before nginx 1.23.4
QUERY_VARIABLES = re.compile(r"\$(request|request_uri|args|query_string|arg_\w+)\b")
# error_log severities, most verbose first; a message is written at its level and above.
LOG_LEVELS = ["debug", "info", "notice", "warn", "error", "crit", "alert", "emerg"]
UPSTREAM_NOTE = ("nginx also logs upstream errors (a worker down, a timeout) at level error "
                 "with the request line, query string included: no setting leaves it out, so "
                 "keep the error log private (tickets are single-use and expire in seconds).")


@dataclass
class Block:
    """A directive with its file and line, and (for blocks) its children."""

    name: str
    args: list[str]
    file: str
    line: int
    children: list[Block] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def all(self, name: str) -> list[Block]:
        return [c for c in self.children if c.name == name]

    def first(self, name: str) -> Block | None:
        found = self.all(name)
        return found[-1] if found else None


def parse(path: str) -> Block:
    """The whole configuration as one tree, include files inlined."""
    payload = crossplane.parse(path, check_ctx=False, check_args=False, comments=False)
    configs = payload["config"]
    if not configs:
        raise ConfigError(f"cannot read {path}")
    if configs[0].get("errors") and not configs[0].get("parsed"):
        raise ConfigError(f"cannot parse {path}: {configs[0]['errors'][0]['error']}")
    for config in configs:
        for error in config.get("errors", []):
            if "No such file" in error.get("error", "") and config is configs[0]:
                raise ConfigError(error["error"])

    def build(directives: list[dict[str, Any]], file: str) -> list[Block]:
        blocks: list[Block] = []
        for item in directives:
            if item["directive"] == "include" and "includes" in item:
                for index in item["includes"]:
                    included = configs[index]
                    blocks.extend(build(included.get("parsed", []), included["file"]))
                continue
            blocks.append(Block(item["directive"], item.get("args", []), file, item["line"],
                                build(item.get("block", []), file)))
        return blocks

    return Block("main", [], configs[0]["file"], 0, build(configs[0].get("parsed", []),
                                                          configs[0]["file"]))


@dataclass
class Server:
    block: Block
    http: Block
    root: Block | None = None  # the main context (error_log is inherited from it)

    @property
    def tls(self) -> bool:
        return any("ssl" in listen.args for listen in self.block.all("listen"))

    @property
    def names(self) -> list[str]:
        return [n for d in self.block.all("server_name") for n in d.args]

    def setting(self, name: str, location: Block | None = None) -> Block | None:
        """The effective single-valued directive (location -> server -> http)."""
        for scope in (location, self.block, self.http):
            if scope is not None and (found := scope.first(name)) is not None:
                return found
        return None

    def inherited_all(self, name: str, location: Block | None = None) -> list[Block]:
        """Array directives (add_header, proxy_set_header): the nearest level that has any."""
        for scope in (location, self.block, self.http):
            if scope is not None and scope.all(name):
                return scope.all(name)
        return []

    def location_for(self, uri: str) -> Block | None:
        """The prefix location nginx picks for ``uri`` (regex locations are not modelled)."""
        best, best_length = None, -1
        for location in (b for b in walk(self.block) if b.name == "location"):
            prefix = location.args[-1] if location.args else ""
            modifier = location.args[0] if len(location.args) == 2 else ""
            if modifier in ("~", "~*"):
                continue
            matches = uri == prefix if modifier == "=" else uri.startswith(prefix)
            if matches and len(prefix) > best_length:
                best, best_length = location, len(prefix)
        return best


def servers(root: Block) -> list[Server]:
    result = []
    http_blocks = root.all("http") or [root]  # a site file is the inside of http {}
    for http in http_blocks:
        for server in http.all("server"):
            result.append(Server(server, http, root if http is not root else None))
    return result


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total = 0.0
    for amount, unit in re.findall(r"(\d+)(ms|s|m|h|d)?", value):
        total += int(amount) * units.get(unit or "s", 1)
    return total


def _header_names(directives: list[Block]) -> dict[str, Block]:
    return {d.args[0].lower(): d for d in directives if d.args}


def check_tls(server: Server) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    protocols = server.setting("ssl_protocols")
    enabled = protocols.args if protocols else NGINX_DEFAULT_PROTOCOLS.split()
    old = sorted(OLD_PROTOCOLS.intersection(enabled))
    where = protocols.where if protocols else server.block.where
    if old:
        messages.append(frontend.old_protocols(
            where, old, "" if protocols else " (nginx's default: ssl_protocols is not set)",
            hint="ssl_protocols TLSv1.2 TLSv1.3; (wsdeploy nginx renders Mozilla's profiles)"))
    ciphers = server.setting("ssl_ciphers")
    if ciphers and ciphers.args and (weak := frontend.weak_ciphers(ciphers.args[0].split(":"))):
        messages.append(frontend.weak_cipher_suites(ciphers.where, weak))
    headers = _header_names(server.inherited_all("add_header"))
    if "strict-transport-security" not in headers:
        messages.append(frontend.no_hsts(server.block.where,
                                         hint='add_header Strict-Transport-Security '
                                              '"max-age=63072000; includeSubDomains" always;'))
    return messages


def check_websocket_location(server: Server, prefix: str,
                             log_formats: dict[str, str]) -> list[CheckMessage]:
    location = server.location_for(prefix)
    if location is None or not (location.first("proxy_pass") or location.first("uwsgi_pass")):
        return []
    messages: list[CheckMessage] = []
    headers = _header_names(server.inherited_all("proxy_set_header", location))
    version = server.setting("proxy_http_version", location)
    missing = [h for h in ("upgrade", "connection") if h not in headers]
    if missing or version is None or version.args != ["1.1"]:
        problems = [f"no proxy_set_header {h.title()}" for h in missing]
        if version is None or version.args != ["1.1"]:
            problems.append("proxy_http_version is not 1.1")
        messages.append(frontend.no_upgrade(
            location.where, prefix, problems, hint="proxy_http_version 1.1; proxy_set_header "
            "Upgrade $http_upgrade; proxy_set_header Connection $connection_upgrade;"))
    access_log = server.setting("access_log", location)
    if access_log is None or access_log.args[:1] != ["off"]:
        format_name = access_log.args[1] if access_log and len(access_log.args) > 1 \
            else "combined"
        format_text = log_formats.get(format_name, "$request" if format_name == "combined"
                                      else "")
        if QUERY_VARIABLES.search(format_text):
            where = access_log.where if access_log else location.where
            messages.append(frontend.secrets_logged(
                where, f"the access log of WebSocket location {prefix!r} uses format "
                f"{format_name!r}, which records query strings (tickets end up in logs)",
                hint="Log $uri instead of $request (wsdeploy's wsops_ws format does). "
                     + UPSTREAM_NOTE))
    messages.extend(check_rejection_logging(server, prefix, location))
    timeout = server.setting("proxy_read_timeout", location)
    if timeout is not None and _seconds(timeout.args[0]) <= PING_INTERVAL:
        messages.append(frontend.short_timeout(
            timeout.where, f"proxy_read_timeout {timeout.args[0]}",
            hint="proxy_read_timeout 60s; (above daphne's ping interval + timeout)"))
    return messages


def _error_log_level(server: Server, location: Block) -> int:
    """The most verbose level any effective error_log writes (nginx's default: error)."""
    for scope in (location, server.block, server.http, server.root):
        logs = scope.all("error_log") if scope is not None else []
        if logs:
            written = [d for d in logs if d.args and d.args[0] != "/dev/null"]
            if not written:
                return len(LOG_LEVELS)  # discarded
            return min(LOG_LEVELS.index(d.args[1]) if len(d.args) > 1 and d.args[1] in
                       LOG_LEVELS else LOG_LEVELS.index("error") for d in written)
    return LOG_LEVELS.index("error")


def check_rejection_logging(server: Server, prefix: str, location: Block
                            ) -> list[CheckMessage]:
    """limit_req/limit_conn rejections go to the error log with the whole request line
    (query string, so a ?ticket=, included) unless logged below the error_log level."""
    messages: list[CheckMessage] = []
    threshold = _error_log_level(server, location)
    for limit in ("limit_req", "limit_conn"):
        if not server.inherited_all(limit, location):
            continue
        level_directive = server.setting(f"{limit}_log_level", location)
        level = level_directive.args[0] if level_directive and level_directive.args \
            else "error"
        if level in LOG_LEVELS and LOG_LEVELS.index(level) >= threshold:
            messages.append(frontend.secrets_logged(
                (level_directive or location).where, f"{limit} rejections in WebSocket "
                f"location {prefix!r} are written to the error log (level {level}) with the "
                "request line, query string and tickets included",
                hint=f"{limit}_log_level info; (below the error_log level) and "
                     f"{limit}_status 429; so rejections are counted in the query-free "
                     "access log instead. " + UPSTREAM_NOTE))
    return messages


def check(path: str, websocket_prefixes: list[str]) -> list[CheckMessage]:
    root = parse(path)
    messages: list[CheckMessage] = []
    all_blocks = [root, *root.all("http")]
    log_formats = {d.args[0]: " ".join(d.args[1:]) for b in all_blocks
                   for d in b.all("log_format") if d.args}
    for directive in walk(root):
        if directive.name == "proxy_set_header" and len(directive.args) == 2 and \
                directive.args[0].lower() == "x-forwarded-for" and \
                "$proxy_add_x_forwarded_for" in directive.args[1]:
            messages.append(frontend.forgeable_forwarded_for(
                directive.where, "appends to the client's own header",
                hint="proxy_set_header X-Forwarded-For $remote_addr; at the edge proxy."))
    tls_servers = [s for s in servers(root) if s.tls]
    for server in tls_servers:
        messages.extend(check_tls(server))
        for prefix in websocket_prefixes:
            messages.extend(check_websocket_location(server, prefix, log_formats))
        tokens = server.setting("server_tokens")
        if tokens is None or tokens.args != ["off"]:
            messages.append(frontend.version_revealed((tokens or server.block).where,
                                                      "server_tokens is on", "nginx",
                                                      hint="server_tokens off;"))
    messages.extend(frontend.names_uncovered(
        path, [s.names for s in tls_servers], "server_name",
        hint="Add them to server_name (wsdeploy nginx --domain)."))
    return messages

