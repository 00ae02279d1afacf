"""App config: validates ``WSOPS`` at startup and registers the audit rules."""

from django.apps import AppConfig


class WsopsConfig(AppConfig):
    name = "wsops"
    verbose_name = "WebSocket operations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_save

        from . import audit, daphne_compat  # noqa: F401 - audit registers the system checks
        from .conf import get_settings
        from .tokens import forget_user

        get_settings()  # raise ImproperlyConfigured now, not on the first connection
        daphne_compat.install()

        def forget_tokens_of(sender, instance, **kwargs):
            # A deactivated user must be refused at once, not when the cache expires.
            forget_user(instance.pk)

        post_save.connect(forget_tokens_of, sender=get_user_model(),
                          dispatch_uid="wsops.forget_tokens_of")
