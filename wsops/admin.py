"""Admin for access tokens: list by owner and status, search by prefix, revoke."""

from asgiref.sync import async_to_sync
from django.contrib import admin, messages

from . import tokens
from .models import WebSocketToken
from .remote import disconnect


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
