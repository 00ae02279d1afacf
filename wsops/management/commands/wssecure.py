"""``manage.py wssecure check``: audit the WebSocket setup like ``check --deploy``.

Runs wsops' system checks (the same ones ``manage.py check`` runs), plus, on
request, rules for the deployed nginx config and certificate and live facts
about Redis. Exit status: 0 clean, 1 findings at or above ``--fail-level``,
2 usage errors (an unreadable file).
"""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage

from wsops.audit import apache, asgi, caddy, certs, live, nginx, rules
from wsops.audit.frontend import ConfigError
from wsops.management.base import WsopsCommand

LEVELS = {"ERROR": 40, "WARNING": 30, "INFO": 20}
LEVEL_NAMES = {40: "error", 30: "warning", 20: "info", 10: "debug", 50: "critical"}


def as_dict(message: CheckMessage) -> dict[str, Any]:
    return {"id": message.id, "level": LEVEL_NAMES.get(message.level, str(message.level)),
            "message": message.msg, "hint": message.hint}


class Command(WsopsCommand):
    help = (
        "Audit the project's WebSocket security: the real ASGI middleware chain, settings, "
        "channel layers and caches; with --nginx-conf, --apache-conf or --caddyfile and "
        "--cert/--key the deployed files; with "
        "--live the Redis servers. Exit status 0 clean, 1 findings at or above --fail-level, "
        "2 usage error."
    )

    requires_system_checks = []  # this command *is* the check: report, do not abort

    def add_arguments(self, parser):
        sub = self.add_subcommands(parser)
        check = sub.add_parser("check", help="Run the audit.")
        check.add_argument("--deploy", action="store_true",
                           help="Include the deployment rules (like check --deploy).")
        check.add_argument("--json", action="store_true", help="Print JSON (schema in README).")
        check.add_argument("--fail-level", choices=list(LEVELS), default="ERROR",
                           help="Exit 1 when a finding is at or above this level "
                                "(default ERROR).")
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

    def handle(self, *args, subcommand: str, **options: Any) -> None:
        if options["key"] and not options["cert"]:
            self.fail("--key is checked against --cert: give both")
        messages = rules.run(rules.SETTINGS_RULES + rules.ASGI_RULES)
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
        silenced = set(getattr(settings, "SILENCED_SYSTEM_CHECKS", []))
        messages = [m for m in messages if m.id not in silenced]
        messages.sort(key=lambda m: (-m.level, m.id))
        if options["json"]:
            self._print_json(messages, routes)
        else:
            self._print_text(messages, routes)
        threshold = LEVELS[options["fail_level"]]
        if any(m.level >= threshold for m in messages):
            sys.exit(1)

    def _routes(self) -> list[asgi.Route] | None:
        try:
            return asgi.walk(asgi.load_application())
        except Exception:
            return None  # reported by rule wsops.E008

    def _print_json(self, messages: list[CheckMessage], routes: list[asgi.Route] | None) -> None:
        counts = {name: sum(1 for m in messages if m.level == level)
                  for name, level in (("errors", 40), ("warnings", 30), ("infos", 20))}
        self.write_json({
            "findings": [as_dict(m) for m in messages],
            "routes": [r.as_dict() for r in routes or []],
            "summary": counts,
        })

    def _print_text(self, messages: list[CheckMessage], routes: list[asgi.Route] | None) -> None:
        if routes is not None:
            self.stdout.write(self.style.MIGRATE_HEADING(f"WebSocket routes ({len(routes)})"))
            for route in routes:
                self.stdout.write(f"  {route.pattern or '(root)'} -> {route.consumer}")
                for label, names in (("origin", route.origin_check), ("auth", route.auth),
                                     ("throttle", route.throttle), ("session", route.session),
                                     ("unknown", route.unknown)):
                    if names or label not in ("session", "unknown"):
                        shown = ", ".join(n.rsplit(".", 1)[-1] for n in names) or "NONE"
                        self.stdout.write(f"      {label:<9}{shown}")
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
