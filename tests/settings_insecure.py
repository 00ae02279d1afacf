"""Everything wssecure complains about (except DEBUG, which some rules need off)."""

from datetime import timedelta

from tests.settings import *  # noqa: F403

DEBUG = False
ASGI_APPLICATION = "tests.asgi_variants.no_origin_check"
ALLOWED_HOSTS = ["*"]
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
SESSION_COOKIE_SAMESITE = None
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CHANNEL_LAYERS = {
    "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
    "remote": {"BACKEND": "channels_redis.core.RedisChannelLayer",
               "CONFIG": {"hosts": ["redis://redis.internal:6379/0"], "capacity": 5000,
                          "expiry": 600}},
}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
WSOPS = {
    "RATES": {"connect": None, "message": None},
    "MAX_MESSAGE_BYTES": 8 * 1024 * 1024,
    "TOKEN_TRANSPORTS": ["subprotocol", "header", "query", "query_token", "cookie"],
    "TOKEN_TTL": "never",
    "FAIL_MODE": "open",
    "AUTHENTICATORS": ["wsops.auth.SimpleJWTAuthenticator", "wsops.auth.TokenAuthenticator"],
}
SIMPLE_JWT = {"ACCESS_TOKEN_LIFETIME": timedelta(days=1)}  # signed with SECRET_KEY (HS256)
