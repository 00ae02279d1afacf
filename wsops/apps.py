"""App config: validates ``WSOPS`` at startup and registers the audit rules."""

from django.apps import AppConfig


class WsopsConfig(AppConfig):
    name = "wsops"
    verbose_name = "WebSocket operations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import audit, auth, daphne_compat  # noqa: F401 - audit registers the checks
        from .conf import get_settings
        from .tokens import connect_cache_invalidation

        get_settings()  # raise ImproperlyConfigured now, not on the first connection
        daphne_compat.install()
        connect_cache_invalidation()
        auth.connect_signals()
