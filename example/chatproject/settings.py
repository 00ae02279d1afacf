"""Example chat project on embedded defaults: SQLite, in-memory channel layer,
local-memory cache. No Redis needed. Set EXAMPLE_REDIS_URL to run it on Redis
(channels-redis layer and shared wsops state) instead.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-not-secret-" + "x" * 40)
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "wsops",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatproject.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# ModelBackend for global permissions; the room backend answers user.has_perm(
# "chat.join_room", room) for wsops.permissions.HasObjectPerm (any object backend works).
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "chat.backends.RoomMembershipBackend",
]

ASGI_APPLICATION = "chatproject.asgi.application"

DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}
}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

WSOPS = {
    "RATES": {"connect": "60/m", "message": "20/s", "user_message": "40/s"},
    "MAX_CONNECTIONS_PER_USER": 10,
}



def on_redis(url: str, *, capacity: int = 100) -> tuple[dict, dict]:
    """CHANNEL_LAYERS and CACHES on one Redis.

    socket_timeout must exceed channels-redis' 5 s blocking receive: redis-py 8
    defaults it to 5 s, which tears consumers down every few seconds
    (channels_redis#422; `wssecure check` reports it as wsops.E009).
    """
    layers = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": url, "socket_timeout": 10}],
                   "capacity": capacity, "expiry": 30},
    }}
    caches = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": url}}
    return layers, caches


REDIS_URL = os.environ.get("EXAMPLE_REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS, CACHES = on_redis(REDIS_URL, capacity=200)
    WSOPS["REDIS_URL"] = REDIS_URL

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"wsops": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}
