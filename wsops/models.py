"""Access tokens for services, devices and CLIs.

Only a SHA-256 hash of the secret is stored, with a short public prefix
(``wst_`` + 8 characters) that identifies the token in lists, logs and events
and lets secret scanners recognise a leaked one. The secret itself is shown
once, by ``wstokens issue``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class TokenStatus(models.TextChoices):
    ACTIVE = "active"
    GRACE = "expiring-in-grace"
    EXPIRED = "expired"
    REVOKED = "revoked"


class WebSocketTokenQuerySet(models.QuerySet):
    def usable(self, at=None):
        """Tokens that would authenticate now: not revoked, not expired."""
        at = at or timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=at)
        )


class WebSocketToken(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="websocket_tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, db_index=True, editable=False)
    hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    rotated_at = models.DateTimeField(
        null=True, blank=True, help_text="When a successor was issued (grace period running)."
    )
    rotated_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="successors"
    )

    objects = WebSocketTokenQuerySet.as_manager()

    class Meta:
        verbose_name = "WebSocket token"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "revoked_at"])]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'})"

    def status(self, at=None) -> str:
        at = at or timezone.now()
        if self.revoked_at is not None:
            return TokenStatus.REVOKED
        if self.expires_at is not None and self.expires_at <= at:
            return TokenStatus.EXPIRED
        if self.rotated_at is not None:
            return TokenStatus.GRACE
        return TokenStatus.ACTIVE


# --- the admin's live pages: Redis state, no tables ------------------------------------
#
# Unmanaged models without tables: they give the admin its pages and Django's usual
# permissions for them (``wsops.view_liveconnection``; ``delete`` = disconnect;
# ``wsops.add_ban``/``delete_ban``; ``wsops.view_ratecounter``). Rows come from Redis.


class LiveConnection(models.Model):
    class Meta:
        managed = False
        default_permissions = ("view", "delete")
        verbose_name = "live connection"


class Ban(models.Model):
    class Meta:
        managed = False
        default_permissions = ("view", "add", "delete")
        verbose_name = "ban"


class RateCounter(models.Model):
    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = "top rate counter"
