"""Admin: access tokens (list, search, revoke), and live pages read from Redis.

The live pages are for staff with wsops' permissions (Django's usual ones, on
table-less models): live connections by user and by IP from the connection
registry, with a disconnect action (``view``/``delete`` ``liveconnection``);
bans, with add, remove and expiry (``view``/``add``/``delete`` ``ban``); and the
heaviest identities as ``wsratelimit top`` ranks them (``view`` ``ratecounter``).
They read Redis with SCAN through the functions ``wsratelimit`` uses, and each
reads at most ``MAX_KEYS`` keys of a kind and shows at most ``MAX_ROWS`` rows,
so a page stays quick with a million keys in Redis (it then says it is partial).
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from . import codes, operations, signals, store, tokens
from .conf import get_settings
from .limits import operators
from .models import Ban, LiveConnection, RateCounter, WebSocketToken
from .remote import disconnect
from .units import FINITE_DURATION_HELP, format_duration, parse_duration

MAX_KEYS = 10_000  # keys of one kind read per page
MAX_ROWS = 200  # rows shown per table


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "active"), ("revoked", "revoked"), ("expired", "expired")]

    def queryset(self, request, queryset):
        now = tokens.now()
        if self.value() == "active":
            return queryset.usable(now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        return queryset


@admin.register(WebSocketToken)
class WebSocketTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "owner", "name", "status", "created_at", "expires_at",
                    "last_used_at")
    list_filter = (StatusFilter, "owner")
    search_fields = ("prefix", "name", "owner__username")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at", "rotated_at",
                       "rotated_from")
    fields = ("owner", "name", "scopes", "expires_at", *readonly_fields)
    actions = ["revoke_and_disconnect"]

    def has_add_permission(self, request):
        return False  # the secret must be shown once: issue tokens with `wstokens issue`

    @admin.display(description="status")
    def status(self, obj):
        return obj.status()

    @admin.action(description="Revoke selected tokens and close their live sockets")
    def revoke_and_disconnect(self, request, queryset):
        chosen = list(queryset)
        count = tokens.revoke(chosen)
        failed = None
        for token in chosen:
            failed = failed or async_to_sync(disconnect)({"token": token.prefix},
                                                         reason="revoked")
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)
        if failed:
            self.message_user(request, f"Could not reach the channel layer: {failed}",
                              messages.ERROR)


# --- live pages ----------------------------------------------------------------------


class LivePage(admin.ModelAdmin):
    """A changelist that is a page of live Redis state (the model has no table)."""

    template = ""
    title = ""

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def actions_urls(self) -> list[tuple[str, Any]]:
        """``(name, view)`` of the page's POST actions, mounted under its changelist."""
        return []

    def get_urls(self) -> list[Any]:
        info = self.opts.app_label, self.opts.model_name
        mine = [path(f"{name}/", self.admin_site.admin_view(require_POST(view)),
                     name=f"{info[0]}_{info[1]}_{name}") for name, view in self.actions_urls()]
        return mine + super().get_urls()

    def page_url(self) -> str:
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist",
                       current_app=self.admin_site.name)

    def redis(self, request: HttpRequest) -> Any:
        """A Redis client, or None after telling the operator why there is none."""
        url = store.redis_url()
        if not url:
            self.message_user(request, "No shared Redis is configured (WSOPS['REDIS_URL'] or "
                              "WSOPS['CACHE']): limits live in each worker's memory.",
                              messages.WARNING)
            return None
        try:
            client = store.sync_client(timeout=2.0)
            client.ping()
        except (*store.store_errors(), ValueError, TypeError) as error:
            self.message_user(request, f"Cannot reach Redis at {store.masked(url)} "
                              f"({type(error).__name__}).", messages.ERROR)
            return None
        return client

    def rows(self, request: HttpRequest, client: Any) -> dict[str, Any]:
        raise NotImplementedError

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {**self.admin_site.each_context(request), "opts": self.opts,
                   "title": self.title, "max_rows": MAX_ROWS, "max_keys": MAX_KEYS,
                   "has_delete_permission": self.has_delete_permission(request),
                   "has_add_permission": self.has_add_permission(request),
                   "page_url": self.page_url()}
        client = self.redis(request)
        if client is not None:
            try:
                context.update(self.rows(request, client))
            except store.store_errors() as error:
                self.message_user(request, f"Redis failed: {type(error).__name__}",
                                  messages.ERROR)
        context.update(extra_context or {})  # a bound form with its errors wins
        return TemplateResponse(request, self.template, context)

    def act(self, request: HttpRequest, done: Any) -> HttpResponse:
        """Run ``done(client, identity)`` for the posted ``ident``, then back to the page."""
        client = self.redis(request)
        if client is not None:
            try:
                done(client, operations.resolve_identity(request.POST.get("ident", "")))
            except ValueError as error:
                self.message_user(request, str(error), messages.ERROR)
            except store.store_errors() as error:
                self.message_user(request, f"Redis failed: {type(error).__name__}",
                                  messages.ERROR)
        return HttpResponseRedirect(self.page_url())


def _usernames(ids: list[str]) -> dict[str, str]:
    model = get_user_model()
    try:
        users = model._default_manager.filter(pk__in=ids)
        return {str(user.pk): user.get_username() for user in users}
    except (ValueError, TypeError):  # ids that are not this model's primary keys
        return {}


def _partial(found: int) -> bool:
    return found >= MAX_KEYS


@admin.register(LiveConnection)
class LiveConnectionAdmin(LivePage):
    template = "admin/wsops/live_connections.html"
    title = "Live connections"

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("wsops.delete_liveconnection")

    def rows(self, request: HttpRequest, client: Any) -> dict[str, Any]:
        found = operators.snapshot(client, bucket="connections", limit=MAX_KEYS)["connections"]
        found.sort(key=lambda row: -row["live"])
        users = [row for row in found if row["kind"] == "user"][:MAX_ROWS]
        names = _usernames([row["id"] for row in users])
        for row in users:
            row["name"] = names.get(row["id"], "")
        return {"users": users, "ips": [row for row in found if row["kind"] == "ip"][:MAX_ROWS],
                "partial": _partial(len(found))}

    def actions_urls(self) -> list[tuple[str, Any]]:
        return [("disconnect", self.disconnect_view)]

    def disconnect_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_delete_permission(request):
            raise PermissionDenied

        def close(client: Any, identity: operators.Identity) -> None:
            failure = async_to_sync(disconnect)(
                {identity.kind: identity.id}, reason="disconnected_by_operator",
                code=codes.FORBIDDEN, kind=signals.PERMISSION)
            if failure:
                self.message_user(request, f"Could not reach the channel layer: {failure}",
                                  messages.ERROR)
            else:
                self.message_user(request, f"Asked every worker to close the sockets of "
                                  f"{identity} (4403).", messages.SUCCESS)

        return self.act(request, close)


class BanForm(forms.Form):
    ident = forms.CharField(label="Identity", max_length=200,
                            help_text="ip:1.2.3.4, ip:2001:db8::/48, user:42 or user:NAME, "
                                      "token:wst_ab12cd34")
    duration = forms.CharField(label="For", max_length=20, initial="1h",
                               help_text=FINITE_DURATION_HELP)
    reason = forms.CharField(max_length=200, required=False,
                             help_text="Shown in events and, when refusals are explained, "
                                       "to the client.")
    disconnect = forms.BooleanField(required=False,
                                    help_text="Also close its live sockets on every worker.")

    def clean_ident(self) -> operators.Identity:
        try:
            return operations.resolve_identity(self.cleaned_data["ident"].strip())
        except ValueError as error:
            raise forms.ValidationError(str(error))

    def clean_duration(self) -> int:
        try:
            return parse_duration(self.cleaned_data["duration"].strip(), allow_never=False)
        except ValueError:
            raise forms.ValidationError(f"Expected {FINITE_DURATION_HELP}.")


@admin.register(Ban)
class BanAdmin(LivePage):
    template = "admin/wsops/bans.html"
    title = "Bans"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("wsops.add_ban")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("wsops.delete_ban")

    def rows(self, request: HttpRequest, client: Any) -> dict[str, Any]:
        bans = operators.snapshot(client, bucket="bans", limit=MAX_KEYS)["bans"]
        bans.sort(key=lambda ban: ban["expires_in"])
        for ban in bans:
            ban["expires"] = format_duration(ban["expires_in"])
        return {"bans": bans[:MAX_ROWS], "partial": _partial(len(bans)),
                "form": BanForm() if self.has_add_permission(request) else None}

    def actions_urls(self) -> list[tuple[str, Any]]:
        return [("unban", self.unban_view)]

    def add_view(self, request: HttpRequest, form_url: str = "",
                 extra_context: Any = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = BanForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            client = self.redis(request)
            if client is not None:
                return self._ban(request, client, form.cleaned_data)
        return self.changelist_view(request, {"form": form})

    def _ban(self, request: HttpRequest, client: Any, data: dict[str, Any]) -> HttpResponse:
        identity, seconds, reason = data["ident"], data["duration"], data["reason"]
        try:
            operators.ban(client, identity, seconds, reason)
        except store.store_errors() as error:
            self.message_user(request, f"Redis failed: {type(error).__name__}", messages.ERROR)
            return HttpResponseRedirect(self.page_url())
        self.message_user(request, f"Blocked {identity} for {format_duration(seconds)}.",
                          messages.SUCCESS)
        if data["disconnect"]:
            failure = async_to_sync(disconnect)({identity.kind: identity.id},
                                                reason=reason or "banned",
                                                code=codes.FORBIDDEN, kind=signals.BANNED)
            if failure:
                self.message_user(request, f"Blocked, but live sockets could not be closed: "
                                  f"{failure}", messages.ERROR)
        return HttpResponseRedirect(self.page_url())

    def unban_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_delete_permission(request):
            raise PermissionDenied

        def lift(client: Any, identity: operators.Identity) -> None:
            if operators.unban(client, identity):
                self.message_user(request, f"Unblocked {identity}.", messages.SUCCESS)
            else:
                self.message_user(request, f"{identity} was not blocked.", messages.WARNING)

        return self.act(request, lift)


@admin.register(RateCounter)
class RateCounterAdmin(LivePage):
    template = "admin/wsops/rate_counters.html"
    title = "Top rate counters"

    def rows(self, request: HttpRequest, client: Any) -> dict[str, Any]:
        scopes = sorted({*get_settings().RATES, "connections"})
        scope = request.GET.get("scope") or None
        if scope is not None and scope not in scopes and not scope.startswith("action."):
            self.message_user(request, f"Unknown scope {scope!r}.", messages.ERROR)
            scope = None
        data = operators.snapshot(client, bucket=scope, limit=MAX_KEYS)
        rows = operations.rank(data, MAX_ROWS)
        for row in rows:
            row["percent"] = f"{row['load']:.0%}"
            row["scope_text"] = " ".join(f"{s}={v}" for s, v in row["scopes"].items()) or "-"
        return {"rows": rows, "scopes": scopes, "scope": scope or "",
                "partial": _partial(max(len(data["counters"]), len(data["connections"])))}
