"""Rules for a deployed Apache 2.4 configuration (``wssecure check --apache-conf``).

No maintained Python parser keeps file and line numbers (``apacheconfig`` is
Config::General's dialect and unmaintained; Augeas needs a C library), so this
module reads the subset of httpd's syntax the rules need:

- one directive per line, ``\\`` continuing a line, ``#`` comments, arguments
  split like httpd does (double or single quotes group words);
- sections ``<Name args>`` ... ``</Name>``; ``<VirtualHost>``, ``<Location>``
  and ``<Proxy>`` are kept, conditional sections (``<IfModule>``, ``<IfDefine>``,
  ``<IfVersion>``, ``<IfFile>``) are read as if their condition held;
- ``Include``/``IncludeOptional`` with globs, relative to ``ServerRoot`` (the main
  file's directory when not set); ``${VAR}`` is left as written.

A TLS server is a ``<VirtualHost>`` with ``SSLEngine on`` (or under a main server
that has it). Blocks not in a virtual host are the main server's, which every
virtual host inherits unless it sets its own. The WebSocket proxy is the
``ProxyPass`` (or ``<Location>`` with a one-argument ``ProxyPass``) with the
longest path that is a prefix of each WebSocket route.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from django.core.checks import CheckMessage

from . import frontend
from .frontend import OLD_PROTOCOLS, PING_INTERVAL, ConfigError, walk
from .nginx import Block

CONDITIONAL = {"ifmodule", "ifdefine", "ifversion", "iffile", "ifdirective", "ifsection"}
ALL_PROTOCOLS = ["SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
DEFAULT_PROTOCOLS = "all -SSLv3"  # httpd 2.4's default SSLProtocol
QUERY_FORMATS = re.compile(r"%[<>]?(\{[^}]*\})?[rq]")  # %r: request line, %q: query string
BUILTIN_FORMATS = {"common": '%h %l %u %t "%r" %>s %b',
                   "combined": '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"'}
DEFAULT_TIMEOUT = 60  # httpd's Timeout, which ProxyTimeout and timeout= default to


def _logical_lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    lines: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        lines.append((start, pending + raw))
        pending = ""
    if pending:
        lines.append((start, pending))
    return lines


def _split(text: str, where: str) -> list[str]:
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError:
        raise ConfigError(f"{where}: cannot parse {text.strip()!r}") from None


def parse(path: str) -> Block:
    """The configuration as one tree: includes inlined, conditional sections flattened."""
    main = Path(path)
    if not main.is_file():
        raise ConfigError(f"cannot read {path}: no such file")
    root = Block("main", [], str(main), 0)
    server_root = [main.resolve().parent]
    seen: set[Path] = set()

    def read(file: Path, stack: list[Block]) -> None:
        resolved = file.resolve()
        if resolved in seen:
            return  # an include loop; httpd refuses it too
        seen.add(resolved)
        for number, line in _logical_lines(file):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            where = f"{file}:{number}"
            if text.startswith("</"):
                name = text[2:].rstrip(">").strip().lower()
                if name in CONDITIONAL:
                    continue
                if len(stack) == 1 or stack[-1].name != name:
                    raise ConfigError(f"{where}: unexpected </{name}>")
                stack.pop()
                continue
            if text.startswith("<"):
                words = _split(text[1:].rstrip().removesuffix(">"), where)
                if not words:
                    raise ConfigError(f"{where}: empty section")
                if words[0].lower() in CONDITIONAL:
                    continue
                section = Block(words[0].lower(), words[1:], str(file), number)
                stack[-1].children.append(section)
                stack.append(section)
                continue
            words = _split(text, where)
            directive = Block(words[0].lower(), words[1:], str(file), number)
            if directive.name == "serverroot" and directive.args:
                server_root[0] = Path(directive.args[0])
            if directive.name in ("include", "includeoptional") and directive.args:
                pattern = directive.args[0]
                if not os.path.isabs(pattern):
                    pattern = str(server_root[0] / pattern)
                matches = sorted(glob.glob(pattern))
                if not matches and directive.name == "include" and not glob.has_magic(pattern):
                    raise ConfigError(f"{where}: Include {directive.args[0]}: no such file")
                for match in matches:
                    if Path(match).is_file():
                        read(Path(match), stack)
                continue
            stack[-1].children.append(directive)
        depth = len(stack)
        if depth > 1 and stack[-1].file == str(file):
            raise ConfigError(f"{file}: <{stack[-1].name}> opened at line {stack[-1].line} is "
                              "never closed")

    read(main, [root])
    return root


@dataclass
class Host:
    """A ``<VirtualHost>`` and the main server it inherits from."""

    block: Block
    main: Block

    def setting(self, name: str) -> Block | None:
        return self.block.first(name) or self.main.first(name)

    def inherited_all(self, name: str) -> list[Block]:
        return self.block.all(name) or self.main.all(name)

    @property
    def tls(self) -> bool:
        engine = self.setting("sslengine")
        return bool(engine and engine.args and engine.args[0].lower() == "on")

    @property
    def names(self) -> list[str]:
        return [name.lower() for d in (self.block.all("servername")
                                       + self.block.all("serveralias")) for name in d.args]


def enabled_protocols(spec: str) -> set[str]:
    """The protocols an ``SSLProtocol`` value enables (``all``, ``+X``, ``-X``, ``X``)."""
    enabled: set[str] = set()
    for word in spec.split():
        sign, name = (word[0], word[1:]) if word[0] in "+-" else ("=", word)
        names = ALL_PROTOCOLS if name.lower() == "all" else \
            [p for p in ALL_PROTOCOLS if p.lower() == name.lower()]
        if sign == "-":
            enabled -= set(names)
        else:
            enabled |= set(names)
    return enabled


def check_tls(host: Host) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    protocol = host.setting("sslprotocol")
    old = sorted(OLD_PROTOCOLS & enabled_protocols(" ".join(protocol.args) if protocol
                                                   else DEFAULT_PROTOCOLS))
    if old:
        messages.append(frontend.old_protocols(
            (protocol or host.block).where, old,
            "" if protocol else " (Apache's default: SSLProtocol is not set)",
            hint="SSLProtocol -all +TLSv1.2 +TLSv1.3 (wsdeploy apache renders Mozilla's "
                 "profiles)"))
    ciphers = host.setting("sslciphersuite")
    if ciphers and ciphers.args and (weak := frontend.weak_ciphers(ciphers.args[-1].split(":"))):
        messages.append(frontend.weak_cipher_suites(ciphers.where, weak))
    hsts = [d for d in _everywhere(host, "header")
            if "strict-transport-security" in [a.lower() for a in d.args]]
    if not hsts:
        messages.append(frontend.no_hsts(host.block.where,
                                         hint='Header always set Strict-Transport-Security '
                                              '"max-age=63072000; includeSubDomains"'))
    return messages


def _everywhere(host: Host, name: str) -> list[Block]:
    """``name`` directives of the virtual host (any depth) and of the main server."""
    found = [d for d in walk(host.block) if d.name == name]
    return found + [d for d in host.main.children if d.name == name]


def _params(args: list[str]) -> dict[str, str]:
    return dict(a.split("=", 1) for a in args if "=" in a)


@dataclass
class Proxying:
    """Where a WebSocket prefix is proxied: the ProxyPass and its target's workers."""

    directive: Block
    target: str
    params: dict[str, str]
    members: list[Block]


def proxy_for(host: Host, prefix: str) -> Proxying | None:
    """How httpd proxies a request under ``prefix``: the last matching ``<Location>`` with its
    own ProxyPass, else the first ProxyPass whose path prefixes it (httpd tries them in
    order); None when it is not proxied (``ProxyPass /path !`` or no match)."""
    chosen: tuple[Block, str, list[str]] | None = None
    for location in host.block.all("location"):
        inner = location.first("proxypass")
        if location.args and prefix.startswith(location.args[-1]) and inner and inner.args:
            chosen = (inner, inner.args[0], inner.args[1:])
    if chosen is None:
        chosen = next(((d, d.args[1], d.args[2:]) for d in host.block.all("proxypass")
                       if len(d.args) >= 2 and prefix.startswith(d.args[0])), None)
    if chosen is None or chosen[1] == "!":
        return None
    directive, target, params = chosen
    members: list[Block] = []
    if target.lower().startswith("balancer://"):
        name = target.lower().split("/")[2]
        for section in walk(host.block) + walk(host.main):
            if section.name == "proxy" and section.args and \
                    section.args[0].lower().rstrip("/") == f"balancer://{name}":
                members += section.all("balancermember")
    return Proxying(directive, target, _params(params), members)


def _upgrades(proxying: Proxying) -> bool:
    if proxying.target.lower().startswith(("ws://", "wss://")):  # mod_proxy_wstunnel
        return True
    if proxying.params.get("upgrade", "").lower() == "websocket":
        return True
    return bool(proxying.members) and all(
        _params(m.args[1:]).get("upgrade", "").lower() == "websocket"
        or m.args[0].lower().startswith(("ws://", "wss://")) for m in proxying.members)


def _timeout(host: Host, proxying: Proxying) -> tuple[float, Block] | None:
    """The tunnel's idle timeout and the directive that sets it, when one is set."""
    for source in [*proxying.members, proxying.directive]:
        value = _params(source.args).get("timeout")
        if value and value.isdigit():
            return float(value), source
    for name in ("proxytimeout", "timeout"):
        directive = host.setting(name)
        if directive and directive.args and directive.args[0].isdigit():
            return float(directive.args[0]), directive
    return None


def _env_set_for(host: Host, prefix: str) -> set[str]:
    """Environment variables SetEnvIf Request_URI sets for a request under ``prefix``."""
    names: set[str] = set()
    for directive in _everywhere(host, "setenvif") + _everywhere(host, "setenvifnocase"):
        if len(directive.args) < 3 or directive.args[0].lower() != "request_uri":
            continue
        flags = re.IGNORECASE if directive.name == "setenvifnocase" else 0
        try:
            if re.search(directive.args[1], prefix, flags):
                names |= {a.split("=")[0] for a in directive.args[2:] if not a.startswith("!")}
        except re.error:
            continue
    return names


def check_logs(host: Host, prefix: str, formats: dict[str, str]) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    env = _env_set_for(host, prefix)
    logs = host.block.all("customlog") or host.main.all("customlog")
    for log in logs:
        if len(log.args) < 2:
            continue
        condition = next((a[4:] for a in log.args[2:] if a.startswith("env=")), None)
        if condition is not None and (condition.lstrip("!") in env) == condition.startswith("!"):
            continue  # this log skips requests under the prefix
        fmt = log.args[1]
        text = fmt if "%" in fmt else formats.get(fmt, BUILTIN_FORMATS.get(fmt, ""))
        if QUERY_FORMATS.search(text):
            messages.append(frontend.secrets_logged(
                log.where, f"the access log {log.args[0]} records requests under WebSocket "
                f"location {prefix!r} with format {fmt!r}, which has the query string "
                "(tickets end up in logs)",
                hint='Log %U (the path) instead of %r for the WebSocket paths: SetEnvIf '
                     'Request_URI "^/ws/" ws, then CustomLog ... env=ws with such a format '
                     "and env=!ws on the others (wsdeploy apache does)."))
    return messages


def check_websocket(host: Host, prefix: str, formats: dict[str, str]) -> list[CheckMessage]:
    proxying = proxy_for(host, prefix)
    if proxying is None:
        return []
    messages: list[CheckMessage] = []
    if not _upgrades(proxying):
        messages.append(frontend.no_upgrade(
            proxying.directive.where, prefix, ["no upgrade=websocket on the ProxyPass or "
                                               "its BalancerMembers"],
            hint="ProxyPass /ws/ http://daphne/ws/ upgrade=websocket (mod_proxy_http, Apache "
                 ">= 2.4.47), or BalancerMember ... upgrade=websocket"))
    messages.extend(check_logs(host, prefix, formats))
    timeout = _timeout(host, proxying)
    seconds, source = timeout if timeout else (DEFAULT_TIMEOUT, None)
    if source is not None and seconds <= PING_INTERVAL:
        messages.append(frontend.short_timeout(
            source.where, f"the proxy timeout ({source.name} {int(seconds)}s)",
            hint="timeout=60 on the BalancerMembers (above daphne's ping interval + "
                 "timeout)"))
    return messages


def check_forwarded_for(host: Host) -> list[CheckMessage]:
    """mod_proxy appends the client address to the client's own X-Forwarded-For (daphne
    takes the first one); with ProxyAddHeaders Off the client's header passes as sent."""
    headers = [d for d in _everywhere(host, "requestheader") if len(d.args) >= 2
               and d.args[1].lower() == "x-forwarded-for"]
    overwritten = any(d.args[0].lower() in ("set", "unset") for d in headers)
    appended = [d for d in headers if d.args[0].lower() in ("append", "add", "merge")]
    add_headers = host.setting("proxyaddheaders")
    adds = add_headers is None or not add_headers.args or add_headers.args[0].lower() != "off"
    if appended:
        return [frontend.forgeable_forwarded_for(appended[0].where, "is appended to",
                                                 hint=OVERWRITE_HINT)]
    if not overwritten:
        how = "appends to the client's own header (ProxyAddHeaders On, Apache's default)" \
            if adds else "passes the client's own header on (ProxyAddHeaders Off)"
        return [frontend.forgeable_forwarded_for((add_headers or host.block).where, how,
                                                 hint=OVERWRITE_HINT)]
    return []


OVERWRITE_HINT = ('ProxyAddHeaders Off and RequestHeader set X-Forwarded-For '
                  '"expr=%{REMOTE_ADDR}" (or RequestHeader unset X-Forwarded-For) at the edge.')


def check(path: str, websocket_prefixes: list[str]) -> list[CheckMessage]:
    root = parse(path)
    main = Block("main", [], root.file, 0, [c for c in root.children
                                                if c.name != "virtualhost"])
    hosts = [Host(block, main) for block in root.all("virtualhost")]
    formats = {d.args[1]: d.args[0] for d in walk(root) if d.name == "logformat"
               and len(d.args) >= 2}
    formats.update({name: text for name, text in BUILTIN_FORMATS.items() if name not in formats})
    messages: list[CheckMessage] = []
    tls_hosts = [h for h in hosts if h.tls]
    for host in tls_hosts:
        messages.extend(check_tls(host))
        if any(proxy_for(host, prefix) for prefix in websocket_prefixes or ["/"]):
            messages.extend(check_forwarded_for(host))
        for prefix in websocket_prefixes:
            messages.extend(check_websocket(host, prefix, formats))
    tokens = main.first("servertokens")
    if tls_hosts and (tokens is None or not tokens.args
                      or tokens.args[0].lower() not in ("prod", "productonly")):
        messages.append(frontend.version_revealed(
            tokens.where if tokens else path,
            f"ServerTokens is {tokens.args[0] if tokens and tokens.args else 'Full (not set)'}",
            "Apache", hint="ServerTokens Prod and ServerSignature Off in the main config."))
    messages.extend(frontend.names_uncovered(
        path, [h.names for h in tls_hosts], "ServerName/ServerAlias",
        hint="Add them as ServerAlias (wsdeploy apache --domain)."))
    return messages

