"""``manage.py wssecure check|probe``: audit the WebSocket setup, from inside and outside.

``check`` runs wsops' system checks (the same ones ``manage.py check`` runs),
the known-vulnerable-dependencies rule, plus, on request, rules for the deployed
nginx config and certificate and live facts about Redis. ``probe URL`` audits a
running endpoint as a client (``wsops.audit.probe``). Both report the same way:
text or ``--json``, exit status 0 clean, 1 findings at or above ``--fail-level``,
2 usage errors (an unreadable file, a host outside ``ALLOWED_HOSTS``, an
unreachable endpoint).
"""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage
from django.http.request import validate_host

from wsops.audit import advisories, apache, asgi, caddy, certs, live, nginx, probe, probing, rules
from wsops.audit.frontend import ConfigError
from wsops.conf import get_settings
from wsops.management.base import WsopsCommand
from wsops.origins import derived_origins, parse_origin

LEVELS = {"ERROR": 40, "WARNING": 30, "INFO": 20}
LEVEL_NAMES = {40: "error", 30: "warning", 20: "info", 10: "debug", 50: "critical"}


COOKIE_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
Header = tuple[str, list[str]] | None  # the text report's first block: title and lines


def as_dict(message: CheckMessage) -> dict[str, Any]:
    return {"id": message.id, "level": LEVEL_NAMES.get(message.level, str(message.level)),
            "message": message.msg, "hint": message.hint}


class Command(WsopsCommand):
    help = (
        "Audit the project's WebSocket security. 'check' reads the real ASGI middleware "
        "chain, settings, channel layers, caches and installed versions; with --nginx-conf, "
        "--apache-conf or --caddyfile and --cert/--key the deployed files; with --live the "
        "Redis servers. 'probe URL' audits a running endpoint from the outside. Exit status "
        "0 clean, 1 findings at or above --fail-level, 2 usage error."
    )

    requires_system_checks = []  # this command *is* the check: report, do not abort

    def add_arguments(self, parser):
        sub = self.add_subcommands(parser)
        check = sub.add_parser("check", help="Run the audit of the project.")
        check.add_argument("--deploy", action="store_true",
                           help="Include the deployment rules (like check --deploy).")
        self._add_report_options(check)
        check.add_argument("--nginx-conf", help="An nginx config to audit (includes followed).")
        check.add_argument("--apache-conf",
                           help="An Apache config to audit, e.g. /etc/apache2/apache2.conf "
                                "(includes followed).")
        check.add_argument("--caddyfile",
                           help="A Caddyfile (read with `caddy adapt`) or Caddy JSON config "
                                "to audit.")
        check.add_argument("--cert", help="A PEM certificate chain, e.g. certbot's "
                                          "fullchain.pem.")
        check.add_argument("--key", help="The private key that must match --cert.")
        check.add_argument("--expiry-days", type=int, default=21,
                           help="Warn when the certificate expires within this many days.")
        check.add_argument("--live", action="store_true",
                           help="Connect to the configured Redis servers.")
        check.add_argument("--advisories", metavar="PATH",
                           help="Read this advisory table (the shipped advisories.json's "
                                "format) instead of the shipped one.")
        probe_parser = sub.add_parser(
            "probe", help="Audit a running endpoint from the outside (needs wsops[probe]).",
            description="Probe a running WebSocket endpoint as hostile pages, anonymous "
                        "clients and floods would: origin checks, authentication, size "
                        "limits, throttling, TLS. Bounded: at most --max-connections "
                        "connections and --max-messages frames in all, only to URL's host, "
                        "which must be in ALLOWED_HOSTS (unless --allow-any-host).")
        probe_parser.add_argument("url", metavar="URL",
                                  help="ws:// or wss:// URL of a WebSocket route.")
        probe_parser.add_argument("--origin", help="The page origin the endpoint should "
                                                   "accept (default: the first of "
                                                   "ALLOWED_ORIGINS, or derived).")
        credential = probe_parser.add_mutually_exclusive_group()
        credential.add_argument("--token", help="A valid token (offered in the subprotocol, "
                                                "as wsops clients do); '-' reads it from "
                                                "stdin, out of ps and shell history.")
        credential.add_argument("--cookie", metavar="NAME=VALUE",
                                help="A valid cookie, e.g. sessionid=... of a logged-in user; "
                                     "'-' reads NAME=VALUE from stdin.")
        self._add_report_options(probe_parser)
        probe_parser.add_argument("--max-connections", type=int, default=30,
                                  help="Connections in all, every TLS test and HTTP request "
                                       "included (default 30).")
        probe_parser.add_argument("--max-messages", type=int, default=200,
                                  help="Frames sent in all, pings included (default 200).")
        probe_parser.add_argument("--timeout", type=float, default=5,
                                  help="Seconds to wait for each handshake or answer "
                                       "(default 5).")
        probe_parser.add_argument("--message", default=probing.Target.message,
                                  help="The frame the message burst sends: one the endpoint "
                                       "accepts, so that only a rate can stop it (default "
                                       "%(default)s).")
        probe_parser.add_argument("--http-port", type=int, default=80,
                                  help="Where to test the http->https redirect (default 80).")
        probe_parser.add_argument("--allow-any-host", action="store_true",
                                  help="Probe a host that is not in ALLOWED_HOSTS.")

    def _add_report_options(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON (schema in README).")
        parser.add_argument("--fail-level", choices=list(LEVELS), default="ERROR",
                            help="Exit 1 when a finding is at or above this level "
                                 "(default ERROR).")

    def handle(self, *args, subcommand: str, **options: Any) -> None:
        run = self._probe if subcommand == "probe" else self._check
        messages, data, header = run(options)
        silenced = set(getattr(settings, "SILENCED_SYSTEM_CHECKS", []))
        messages = [m for m in messages if m.id not in silenced]
        messages.sort(key=lambda m: (-m.level, m.id))
        if options["json"]:
            self._print_json(messages, data)
        else:
            self._print_text(messages, header)
        threshold = LEVELS[options["fail_level"]]
        if any(m.level >= threshold for m in messages):
            sys.exit(1)

    # --- check ----------------------------------------------------------------------------

    def _check(self, options: dict[str, Any]) -> tuple[list[CheckMessage], dict, Header]:
        if options["key"] and not options["cert"]:
            self.fail("--key is checked against --cert: give both")
        try:
            table = advisories.load(options["advisories"] or advisories.SHIPPED)
        except advisories.TableError as error:
            self.fail(str(error))
        messages = rules.run(rules.SETTINGS_RULES + rules.ASGI_RULES)
        messages += advisories.check(table)
        if options["deploy"]:
            messages += rules.run(rules.DEPLOY_RULES)
        routes = self._routes()
        try:
            prefixes = asgi.websocket_prefixes(routes or [])
            for option, audit in (("nginx_conf", nginx), ("apache_conf", apache),
                                  ("caddyfile", caddy)):
                if options[option]:
                    messages += audit.check(options[option], prefixes)
            if options["cert"]:
                messages += certs.check(options["cert"], options["key"], options["expiry_days"])
        except ConfigError as error:
            self.fail(str(error))
        if options["live"]:
            messages += live.check()
        data = {"routes": [r.as_dict() for r in routes or []]}
        return messages, data, None if routes is None else self._route_lines(routes)

    def _routes(self) -> list[asgi.Route] | None:
        try:
            return asgi.walk(asgi.load_application())
        except Exception:
            return None  # reported by rule wsops.E008

    def _route_lines(self, routes: list[asgi.Route]) -> Header:
        lines = []
        for route in routes:
            lines.append(f"  {route.pattern or '(root)'} -> {route.consumer}")
            for label, names in (("origin", route.origin_check), ("auth", route.auth),
                                 ("throttle", route.throttle), ("session", route.session),
                                 ("unknown", route.unknown)):
                if names or label not in ("session", "unknown"):
                    shown = ", ".join(n.rsplit(".", 1)[-1] for n in names) or "NONE"
                    lines.append(f"      {label:<9}{shown}")
        return f"WebSocket routes ({len(routes)})", lines

    # --- probe ----------------------------------------------------------------------------

    def _probe(self, options: dict[str, Any]) -> tuple[list[CheckMessage], dict, Header]:
        """Everything is validated before the first connection; then the probes run."""
        try:
            import websockets  # noqa: F401
        except ImportError:
            self.fail('wssecure probe needs the websockets client: pip install "wsops[probe]"')
        target = self._target(options)
        for option in ("max_connections", "max_messages"):
            if options[option] < 1:
                self.fail(f"--{option.replace('_', '-')} must be at least 1")
        budget = probing.Budget(options["max_connections"], options["max_messages"])
        prober = probing.Prober(target, budget)
        try:
            messages = asyncio.run(probe.run(prober))
        except probing.Unreachable as error:
            self.fail(f"cannot probe {target.url}: {error}")
        data = {"target": target.as_dict(), "budget": budget.as_dict(),
                "refusals": probe.refusals(prober)}
        credential = target.as_dict()["credential"] or "no credential"
        return messages, data, (f"Probed {target.url}", [
            f"  origin {target.origin}, {credential}",
            f"  {budget.connections} of {budget.max_connections} connections, "
            f"{budget.messages} of {budget.max_messages} messages"])

    def _target(self, options: dict[str, Any]) -> probing.Target:
        url = options["url"]
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            self.fail(f"URL must be ws://HOST/... or wss://HOST/..., not {url!r}")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            self.fail(f"URL {url!r} has an invalid port")
        host = parts.hostname
        if not options["allow_any_host"] and not self._host_allowed(host):
            self.fail(f"{host} is not in ALLOWED_HOSTS: wssecure probe is for your own "
                      "deployment (--allow-any-host to probe it anyway)")
        origin = options["origin"] or self._default_origin(parts)
        if parse_origin(origin) is None:
            self.fail(f"--origin {origin!r} is not an origin (scheme://host[:port])")
        token, cookie = self._secret(options["token"]), None
        if options["cookie"]:
            name, sep, value = self._secret(options["cookie"]).partition("=")
            if not sep or not COOKIE_NAME.fullmatch(name) or any(c in value for c in ";\r\n"):
                self.fail("--cookie must be NAME=VALUE, e.g. sessionid=abc123")
            cookie = (name, value)
        if options["timeout"] <= 0:
            self.fail("--timeout must be positive")
        if not 0 < options["http_port"] < 65536:
            self.fail("--http-port must be a port number")
        return probing.Target(url, origin, token, cookie, options["timeout"],
                              options["http_port"], options["message"])

    def _secret(self, value: str | None) -> str | None:
        """The option's value, or for '-' the first line of stdin."""
        if value != "-":
            return value
        value = sys.stdin.readline().strip()
        if not value:
            self.fail("'-' reads the credential from stdin, which gave nothing")
        return value

    @staticmethod
    def _host_allowed(host: str) -> bool:
        allowed = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not allowed:  # as Django's HttpRequest.get_host
            allowed = [".localhost", "127.0.0.1", "[::1]"]
        return validate_host(f"[{host}]" if ":" in host else host, allowed)

    @staticmethod
    def _default_origin(parts: Any) -> str:
        configured = get_settings().ALLOWED_ORIGINS
        for origin in configured if configured is not None else derived_origins():
            if "*" not in origin:
                return origin
        scheme = "https" if parts.scheme == "wss" else "http"
        return f"{scheme}://{parts.netloc.rpartition('@')[2]}"

    # --- the report, for both -------------------------------------------------------------

    def _print_json(self, messages: list[CheckMessage], data: dict[str, Any]) -> None:
        counts = {name: sum(1 for m in messages if m.level == level)
                  for name, level in (("errors", 40), ("warnings", 30), ("infos", 20))}
        self.write_json({"findings": [as_dict(m) for m in messages], **data,
                         "summary": counts})

    def _print_text(self, messages: list[CheckMessage], header: Header) -> None:
        if header is not None:
            title, lines = header
            self.stdout.write(self.style.MIGRATE_HEADING(title))
            for line in lines:
                self.stdout.write(line)
        for level, title, style in ((40, "Errors", self.style.ERROR),
                                    (30, "Warnings", self.style.WARNING),
                                    (20, "Info", self.style.NOTICE)):
            group = [m for m in messages if m.level == level]
            if not group:
                continue
            self.stdout.write(style(f"{title} ({len(group)})"))
            for message in group:
                self.stdout.write(f"  {message.id}: {message.msg}")
                if message.hint:
                    self.stdout.write(f"      HINT: {message.hint}")
        errors = sum(1 for m in messages if m.level >= 40)
        warnings = sum(1 for m in messages if m.level == 30)
        infos = sum(1 for m in messages if m.level == 20)
        summary = f"wssecure: {errors} error(s), {warnings} warning(s), {infos} info."
        self.stdout.write(self.style.SUCCESS(summary) if not errors else self.style.ERROR(summary))
