"""``manage.py wstokens``: issue, list, show, revoke, rotate, purge and verify access tokens."""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.db.models import Q

from wsops import remote, tokens
from wsops.conf import get_settings
from wsops.handshake.transports import TOKEN_PREFIX
from wsops.management.base import WsopsCommand
from wsops.models import WebSocketToken
from wsops.units import duration_help, format_duration

SCOPE_RE = re.compile(r"[A-Za-z0-9_.:*-]{1,64}")


def describe(token: WebSocketToken) -> dict[str, Any]:
    """What may be shown about a token: never the secret, never the hash."""
    return {
        "id": token.pk,
        "prefix": token.prefix,
        "owner": token.owner.get_username(),
        "name": token.name,
        "scopes": list(token.scopes),
        "status": str(token.status(tokens.now())),
        "created": token.created_at.isoformat(timespec="seconds"),
        "expires": token.expires_at.isoformat(timespec="seconds") if token.expires_at else None,
        "last_used": token.last_used_at.isoformat(timespec="seconds")
        if token.last_used_at else None,
        "revoked": token.revoked_at.isoformat(timespec="seconds") if token.revoked_at else None,
        "rotated_from": token.rotated_from.prefix if token.rotated_from_id else None,
    }


class Command(WsopsCommand):
    help = (
        "Manage WebSocket access tokens. Secrets are shown once, by 'issue' and 'rotate'; "
        "everything else identifies tokens by their public prefix (wst_xxxxxxxx) or id."
    )

    def add_arguments(self, parser):
        sub = self.add_subcommands(parser)

        issue = sub.add_parser("issue", help="Issue a token and print its secret once.")
        issue.add_argument("--user", required=True, help="Username of the owner.")
        issue.add_argument("--name", default="", help="What the token is for (e.g. 'ci-bot').")
        issue.add_argument("--scope", action="append", default=[], dest="scopes",
                           help="A scope such as chat:write (repeat for several).")
        issue.add_argument("--ttl", default=None,
                           help=f"Lifetime: {duration_help(allow_never=True)}. "
                                "Default: WSOPS['TOKEN_TTL'].")
        issue.add_argument("--json", action="store_true", help="Print JSON.")

        listing = sub.add_parser("list", help="List tokens (active and in grace by default).")
        listing.add_argument("--user", help="Only this user's tokens.")
        listing.add_argument("--all", action="store_true", help="Include revoked and expired.")
        listing.add_argument("--json", action="store_true", help="Print JSON.")

        show = sub.add_parser("show", help="Show one token.")
        show.add_argument("reference", help="Public prefix (wst_ab12...) or id.")
        show.add_argument("--json", action="store_true", help="Print JSON.")

        revoke = sub.add_parser("revoke", help="Revoke tokens; new connections fail at once.")
        revoke.add_argument("reference", nargs="?", help="Public prefix or id.")
        revoke.add_argument("--user", help="With --all: every token of this user.")
        revoke.add_argument("--all", action="store_true", help="All tokens of --user.")
        revoke.add_argument("--disconnect", action="store_true",
                            help="Also close live sockets on every worker (channel layer).")

        rotate = sub.add_parser(
            "rotate", help="Issue a successor with a fresh lifetime; the old token keeps "
                           "working for --grace, then stops.")
        rotate.add_argument("reference", help="Public prefix or id.")
        rotate.add_argument("--grace", default="1h",
                            help=f"How long the old token keeps working: "
                                 f"{duration_help(allow_zero=True)} (0: it stops now). "
                                 "Default 1h.")
        rotate.add_argument("--ttl", default=None,
                            help=f"Lifetime of the successor: {duration_help(allow_never=True)}."
                                 " Default: as long as the old token was issued for.")
        rotate.add_argument("--json", action="store_true", help="Print JSON.")

        purge = sub.add_parser("purge", help="Delete revoked and expired tokens.")
        purge.add_argument("--older-than", default="30d",
                           help="Only those revoked/expired longer ago than this: "
                                f"{duration_help(allow_zero=True)}. Default 30d.")
        purge.add_argument("--dry-run", action="store_true", help="Only count.")

        sub.add_parser("verify", help="Read a token on stdin and say whose it is and if valid "
                                      "(does not mark it used).")

    def handle(self, *args, subcommand: str, **options):
        getattr(self, "handle_" + subcommand)(**options)

    # --- helpers -----------------------------------------------------------------------

    def _user(self, username: str):
        model = get_user_model()
        try:
            return model._default_manager.get_by_natural_key(username)
        except model.DoesNotExist:
            self.fail(f"unknown user {username!r}")

    def _one(self, reference: str) -> WebSocketToken:
        found = tokens.find(reference)
        if not found:
            if not reference.isdigit() and not reference.startswith(TOKEN_PREFIX):
                self.fail(f"{reference!r} is neither an id nor a prefix: prefixes start with "
                          f"{TOKEN_PREFIX} (like wst_ab12cd34)")
            if not reference.isdigit() and len(reference) < len(TOKEN_PREFIX) + 2:
                self.fail(f"{reference!r} is too short: give at least two characters after "
                          f"{TOKEN_PREFIX} (like wst_ab12cd34), or an id")
            self.fail(f"no token matches {reference!r} (give a prefix like wst_ab12cd34, or an id)")
        if len(found) > 1:
            candidates = ", ".join(f"{t.prefix} ({t.owner.get_username()}, {t.name or '-'})"
                                   for t in found)
            self.fail(f"{reference!r} is ambiguous, nothing changed; candidates: {candidates}")
        return found[0]

    def _print_secret(self, token: WebSocketToken, secret: str, as_json: bool) -> None:
        if as_json:
            self.write_json({**describe(token), "secret": secret})
            return
        self.stdout.write(secret)
        expires = token.expires_at.isoformat(timespec="seconds") if token.expires_at else "never"
        self.stderr.write(
            f"Token {token.prefix} for {token.owner.get_username()} (expires {expires}). "
            "Store the secret now: it is not shown again."
        )

    # --- subcommands -------------------------------------------------------------------

    def handle_issue(self, user: str, name: str, scopes: list[str], ttl: str | None,
                     json: bool, **_: Any) -> None:
        owner = self._user(user)
        for scope in scopes:
            if not SCOPE_RE.fullmatch(scope):
                self.fail(f"invalid scope {scope!r}: use letters, digits and . : _ - * "
                          "(at most 64), e.g. chat:write")
        lifetime = (get_settings().TOKEN_TTL if ttl is None
                    else self.duration_option(ttl, "--ttl", allow_never=True))
        token, secret = tokens.issue(owner, name=name, scopes=scopes, ttl=lifetime)
        self._print_secret(token, secret, json)

    def handle_list(self, user: str | None, all: bool, json: bool, **_: Any) -> None:
        queryset = WebSocketToken.objects.select_related("owner", "rotated_from")
        if user:
            queryset = queryset.filter(owner=self._user(user))
        if not all:
            queryset = queryset.usable(tokens.now())
        rows = [describe(t) for t in queryset.order_by("owner_id", "-created_at")]
        if json:
            return self.write_json(rows)
        if not rows:
            return self.stdout.write("No tokens." if all else "No active tokens (--all shows "
                                                               "revoked and expired ones).")
        self.write_table(
            ["PREFIX", "OWNER", "NAME", "SCOPES", "CREATED", "EXPIRES", "LAST USED", "STATUS"],
            [[r["prefix"], r["owner"], r["name"] or "-", ",".join(r["scopes"]) or "-",
              r["created"], r["expires"] or "never", r["last_used"] or "never", r["status"]]
             for r in rows],
        )

    def handle_show(self, reference: str, json: bool, **_: Any) -> None:
        info = describe(self._one(reference))
        if json:
            return self.write_json(info)
        for key, value in info.items():
            shown = ",".join(value) if isinstance(value, list) else value
            self.stdout.write(f"{key:>12}: {'-' if shown in (None, '') else shown}")

    def handle_revoke(self, reference: str | None, user: str | None, all: bool,
                      disconnect: bool, **_: Any) -> None:
        if reference and (user or all):
            self.fail("give either a token (PREFIX|ID) or --user NAME --all, not both")
        if reference:
            chosen = [self._one(reference)]
            matches = [{"token": chosen[0].prefix}]
        elif user and all:
            owner = self._user(user)
            chosen = list(WebSocketToken.objects.filter(owner=owner, revoked_at__isnull=True))
            matches = [{"token": t.prefix} for t in chosen]
        else:
            self.fail("say which tokens: PREFIX|ID, or --user NAME --all")
        already = [t.prefix for t in chosen if t.revoked_at is not None]
        count = tokens.revoke(chosen)
        fresh = [t.prefix for t in chosen if t.prefix not in already]
        self.stdout.write(f"Revoked {count} token(s): " + (", ".join(fresh) or "none") + "."
                          + (f" Already revoked: {', '.join(already)}." if already else ""))
        if disconnect:
            failure = None
            for match in matches:
                failure = failure or async_to_sync(remote.disconnect)(match, reason="revoked")
            if failure:
                self.stderr.write(f"The tokens are revoked, but live sockets could not be "
                                  f"closed: channel layer error: {failure}")
                sys.exit(1)
            self.stdout.write("Asked every worker to close the live sockets (4401).")

    def handle_rotate(self, reference: str, grace: str, ttl: str | None, json: bool,
                      **_: Any) -> None:
        token = self._one(reference)
        if token.status(tokens.now()) in ("revoked", "expired"):
            self.fail(f"{token.prefix} is {token.status(tokens.now())}: issue a new token instead")
        seconds = self.duration_option(grace, "--grace", allow_zero=True)
        lifetime = ("renew" if ttl is None
                    else self.duration_option(ttl, "--ttl", allow_never=True))
        own_left = (token.expires_at - tokens.now()).total_seconds() if token.expires_at else None
        successor, secret = tokens.rotate(token, seconds, ttl=lifetime)
        if not json:
            left = seconds if own_left is None else min(seconds, own_left)
            self.stderr.write(
                f"{token.prefix} stops working now." if left <= 0 else
                f"{token.prefix} keeps working for {format_duration(left)} "
                f"(until {token.expires_at.isoformat(timespec='seconds')}).")
        self._print_secret(successor, secret, json)

    def handle_purge(self, older_than: str, dry_run: bool, **_: Any) -> None:
        cutoff = tokens.now() - timedelta(
            seconds=self.duration_option(older_than, "--older-than", allow_zero=True))
        queryset = WebSocketToken.objects.filter(
            Q(revoked_at__lt=cutoff) | Q(expires_at__lt=cutoff)
        )
        count = queryset.count()
        if dry_run:
            return self.stdout.write(f"Would delete {count} token(s).")
        queryset.delete()
        self.stdout.write(f"Deleted {count} token(s) revoked or expired before "
                          f"{cutoff.isoformat(timespec='seconds')}.")

    def handle_verify(self, **_: Any) -> None:
        secret = sys.stdin.readline().strip()
        if not secret:
            self.fail("verify reads a token on standard input: echo $TOKEN | manage.py "
                      "wstokens verify")
        try:
            token = tokens.verify_sync(secret)
        except tokens.TokenInvalid as error:
            prefix = tokens.public_prefix(secret) if secret.startswith("wst_") else "?"
            self.stdout.write(f"INVALID {prefix}: {error.reason}")
            sys.exit(1)
        self.stdout.write(f"VALID {token.prefix}: owner {token.user.get_username()}, "
                          f"scopes {','.join(token.scopes) or '-'}")
