"""``manage.py wsratelimit``: live rate-limit counters, connection counts and bans in Redis."""

from __future__ import annotations

import sys
import time
from typing import Any

from asgiref.sync import async_to_sync

from wsops import codes, operations, remote, signals, store
from wsops.conf import get_settings
from wsops.limits import operators
from wsops.limits.operators import Identity
from wsops.management.base import WsopsCommand
from wsops.units import duration_help, format_duration

IDENT_HELP = ("ip:1.2.3.4, user:42 (or user:USERNAME) or token:wst_ab12cd34 (or another "
              "credential's identifier from the security events: token:jwt_<jti>, ...)")


class Command(WsopsCommand):
    help = (
        "Inspect and operate the live rate limits in Redis: counters (used/limit, seconds "
        "to reset), live connections per user/ip, and bans. Reads with SCAN, never KEYS."
    )

    def add_arguments(self, parser):
        sub = self.add_subcommands(parser)

        show = sub.add_parser("show", help="Every live counter, connection count and ban.")
        show.add_argument("--scope", help="Only this scope (connect, message, user_message, "
                                          "action.NAME, connections, bans).")
        show.add_argument("--ident", help=f"Only this identity: {IDENT_HELP}.")
        show.add_argument("--json", action="store_true", help="Print JSON.")

        top = sub.add_parser("top", help="The heaviest identities now.")
        top.add_argument("-n", type=int, default=20, dest="limit", help="How many (default 20).")
        top.add_argument("--scope", help="Only this scope.")
        top.add_argument("--watch", action="store_true", help="Redraw until Ctrl-C.")
        top.add_argument("--interval", type=float, default=2.0, help="Seconds between redraws.")
        top.add_argument("--count", type=int, default=0,
                         help="With --watch: stop after this many redraws (0: until Ctrl-C).")
        top.add_argument("--json", action="store_true", help="Print JSON (no --watch).")

        reset = sub.add_parser("reset", help="Forget the counters of an identity.")
        reset.add_argument("ident", help=IDENT_HELP)
        reset.add_argument("--scope", help="Only this scope.")

        block = sub.add_parser("block", help="Refuse new connections of an identity (4403).")
        block.add_argument("ident", help=IDENT_HELP)
        block.add_argument("--for", dest="duration", required=True,
                           help=f"How long: {duration_help()}.")
        block.add_argument("--reason", default="", help="Shown in events and in 'show'.")
        block.add_argument("--disconnect", action="store_true",
                           help="Also close its live sockets on every worker.")

        unblock = sub.add_parser("unblock", help="Lift a ban.")
        unblock.add_argument("ident", help=IDENT_HELP)

    def handle(self, *args, subcommand: str, **options):
        url = store.redis_url()
        if not url:
            self.fail("no shared Redis is configured (set WSOPS['REDIS_URL'] or WSOPS['CACHE']); "
                      "without it limits live in each worker's memory and cannot be inspected")
        try:
            client = store.sync_client(timeout=2.0)
        except ValueError:  # its text may quote pieces of the URL, password included
            self.fail(f"{store.masked(url)} is not a Redis URL: expected redis://, rediss:// "
                      "or unix://")
        try:
            client.ping()
        except store.store_errors() as error:
            self.fail(f"cannot reach Redis at {store.masked(url)} ({type(error).__name__}: "
                      f"{error})")
        except TypeError as error:  # an option redis-py does not know, e.g. ?Password=
            self.fail(f"cannot use Redis URL {store.masked(url)}: {error}")
        try:
            getattr(self, "handle_" + subcommand)(client, **options)
        except store.store_errors() as error:
            self.fail(f"Redis at {store.masked(url)} failed: {type(error).__name__}: {error}")

    # --- helpers -----------------------------------------------------------------------

    def _identity(self, text: str) -> Identity:
        try:
            return operations.resolve_identity(text)
        except ValueError as error:
            self.fail(str(error))

    def _progress(self, scanned: int) -> None:
        self.stderr.write(f"\rscanning Redis: {scanned:,} keys examined...", ending="")

    # --- subcommands -------------------------------------------------------------------

    def check_scope(self, scope: str | None) -> None:
        """Refuse a scope no counter can have, rather than print empty tables."""
        known = {*get_settings().RATES, "connections", "bans"}
        if scope is not None and scope not in known and not scope.startswith("action."):
            self.fail(f"unknown scope {scope!r}: one of {', '.join(sorted(known))} "
                      "or action.NAME")

    def handle_show(self, client: Any, scope: str | None, ident: str | None, json: bool,
                    **_: Any) -> None:
        self.check_scope(scope)
        identity = self._identity(ident) if ident else None
        data = operators.snapshot(client, bucket=scope, identity=identity,
                                  progress=self._progress)
        if json:
            return self.write_json(data)
        self._print_snapshot(data)

    def _print_snapshot(self, data: dict[str, list[dict[str, Any]]]) -> None:
        self.stdout.write(self.style.SUCCESS(f"Rate counters ({len(data['counters'])})"))
        if data["counters"]:
            self.write_table(
                ["SCOPE", "IDENTITY", "USED", "LIMIT", "PERIOD", "RESETS IN"],
                [[c["scope"], f"{c['kind']}:{c['id']}", c["used"], c["limit"],
                  format_duration(c["period"]), f"{c['reset_in']:.1f}s"]
                 for c in sorted(data["counters"], key=lambda c: -c["used"] / c["limit"])],
            )
        self.stdout.write(self.style.SUCCESS(f"Live connections ({len(data['connections'])})"))
        if data["connections"]:
            self.write_table(["IDENTITY", "LIVE", "CAP"],
                             [[f"{c['kind']}:{c['id']}", c["live"], c["cap"] or "-"]
                              for c in sorted(data["connections"], key=lambda c: -c["live"])])
        self.stdout.write(self.style.SUCCESS(f"Bans ({len(data['bans'])})"))
        if data["bans"]:
            self.write_table(["IDENTITY", "REASON", "EXPIRES IN"],
                             [[f"{b['kind']}:{b['id']}", b["reason"] or "-",
                               format_duration(b["expires_in"])] for b in data["bans"]])

    def _heaviest(self, client: Any, scope: str | None, limit: int) -> list[dict[str, Any]]:
        return operations.heaviest(client, scope, limit, progress=self._progress)

    def handle_top(self, client: Any, limit: int, scope: str | None, watch: bool,
                   interval: float, count: int, json: bool, **_: Any) -> None:
        if limit < 1:
            self.fail("-n must be at least 1")
        if not interval > 0:  # also refuses nan; 0 would SCAN Redis in a busy loop
            self.fail(f"--interval must be a positive number of seconds, got {interval:g}")
        if count < 0:
            self.fail(f"--count must be 0 (until Ctrl-C) or more, got {count}")
        if json:
            return self.write_json(self._heaviest(client, scope, limit))
        redraws = 0
        try:
            while True:
                rows = self._heaviest(client, scope, limit)
                if watch:
                    self.stdout.write("\033[H\033[J", ending="")
                    self.stdout.write(f"wsratelimit top (every {interval:g}s, Ctrl-C to stop) "
                                      f"{time.strftime('%H:%M:%S')}")
                self.write_table(
                    ["IDENTITY", "LOAD", "CONNECTIONS", "SCOPES"],
                    [[r["identity"], f"{r['load']:.0%}", r["connections"],
                      " ".join(f"{s}={v}" for s, v in r["scopes"].items()) or "-"] for r in rows],
                ) if rows else self.stdout.write("No live counters.")
                redraws += 1
                if not watch or (count and redraws >= count):
                    return
                self.stdout.flush()
                time.sleep(interval)
        except KeyboardInterrupt:
            self.stdout.write("")

    def handle_reset(self, client: Any, ident: str, scope: str | None, **_: Any) -> None:
        identity = self._identity(ident)
        deleted = operators.reset(client, identity, scope)
        self.stdout.write(f"Reset {deleted} counter(s) of {identity}.")

    def handle_block(self, client: Any, ident: str, duration: str, reason: str,
                     disconnect: bool, **_: Any) -> None:
        identity = self._identity(ident)
        seconds = self.duration_option(duration, "--for")
        operators.ban(client, identity, seconds, reason)
        self.stdout.write(f"Blocked {identity} for {format_duration(seconds)}"
                          + (f" ({reason})" if reason else "") + ".")
        if disconnect:
            failure = async_to_sync(remote.disconnect)(
                {identity.kind: identity.id}, reason=reason or "banned",
                code=codes.FORBIDDEN, kind=signals.BANNED)
            if failure:
                self.stderr.write(f"Blocked, but live sockets could not be closed: {failure}")
                sys.exit(1)
            self.stdout.write("Asked every worker to close its live sockets (4403).")

    def handle_unblock(self, client: Any, ident: str, **_: Any) -> None:
        identity = self._identity(ident)
        if operators.unban(client, identity):
            self.stdout.write(f"Unblocked {identity}.")
        else:
            self.stdout.write(f"{identity} was not blocked.")
