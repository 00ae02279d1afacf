"""Test settings: the example project, on SQLite (a file, so daphne subprocesses
share the test database) or PostgreSQL when DATABASE_URL is set.

A daphne started by the ``daphne_server`` fixture imports this module too and
reads its variations from the environment:

- ``WSOPS_TEST_DB_NAME``: the test database pytest-django created.
- ``WSOPS_TEST_REDIS_URL`` / ``WSOPS_TEST_KEY_PREFIX``: run the channel layer,
  the cache and wsops' shared state on that Redis, under that key prefix.
- ``WSOPS_TEST_LAYER=memory``: keep the in-memory channel layer even with Redis.
- ``WSOPS_TEST_WSOPS``: JSON merged into ``WSOPS``.
- ``WSOPS_TEST_LAYER_HOSTS``: JSON, the channel layer's ``hosts`` (a channels-redis
  Sentinel host, say) instead of the Redis above.
"""

import json
import os
import tempfile
from pathlib import Path

from chatproject.settings import *  # noqa: F403
from chatproject.settings import INSTALLED_APPS, WSOPS

DEBUG = False
SECRET_KEY = "tests-only-" + "s" * 50
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver", "app.example.com"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "daphne"] + [
    # The credentials wsops.auth accepts besides its own (the dev extra installs them).
    "rest_framework", "rest_framework.authtoken", "rest_framework_simplejwt.token_blacklist",
    "oauth2_provider",
    "guardian",
]
# django-guardian's tables, for HasObjectPerm's tests (tests/test_object_permissions.py
# switches AUTHENTICATION_BACKENDS to guardian's or django-rules' backend); no
# anonymous user row.
ANONYMOUS_USER_NAME = None
SILENCED_SYSTEM_CHECKS = ["guardian.W001"]  # its backend is on only in those tests
# One backend, as Channels' tests expect (channels.auth.login needs a backend argument
# with several); the object-permission tests choose theirs.
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]

_sqlite_dir = Path(os.environ.get("WSOPS_TEST_SQLITE_DIR", tempfile.gettempdir()))
if os.environ.get("DATABASE_URL"):
    import dj_database_url

    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"])}
    # One test database per run, as on SQLite: two runs on one server (two checkouts,
    # CI next to a developer) would otherwise share test_<name> and break each other.
    DATABASES["default"]["TEST"] = {"NAME": f"test_wsops_{os.getpid()}"}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(_sqlite_dir / "wsops-dev.sqlite3"),
            "TEST": {"NAME": str(_sqlite_dir / f"wsops-test-{os.getpid()}.sqlite3")},
        }
    }
if os.environ.get("WSOPS_TEST_DB_NAME"):  # inside a daphne started by the tests
    DATABASES["default"]["NAME"] = os.environ["WSOPS_TEST_DB_NAME"]

WSOPS = {
    **WSOPS,
    "ALLOWED_ORIGINS": ["https://app.example.com", "https://*.example.org",
                        "http://localhost:8443"],
    "RATES": {"connect": "1000/m", "message": "200/s", "user_message": "400/s"},
    "MAX_CONNECTIONS_PER_USER": 50,
    "MAX_CONNECTIONS_PER_IP": 500,
    # Not the 50 ms default: on a loaded 2-core CI machine a Redis answer (or 50 parallel
    # connects) can take longer, and tests prove outcomes, not speed. An outage in the
    # tests is a killed server: refused at once whatever the timeout.
    "REDIS_TIMEOUT": 2,
}

_redis = os.environ.get("WSOPS_TEST_REDIS_URL")
_prefix = os.environ.get("WSOPS_TEST_KEY_PREFIX", "")
if _redis and os.environ.get("WSOPS_TEST_LAYER") != "memory":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": json.loads(os.environ.get("WSOPS_TEST_LAYER_HOSTS", "null"))
                       or [{"address": _redis, "socket_timeout": 10}],
                       "prefix": _prefix + "asgi", "capacity": 200, "expiry": 30},
        }
    }
if _redis:
    CACHES = {
        "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": _redis,
                    "KEY_PREFIX": _prefix + "cache"}
    }
    WSOPS.update({"REDIS_URL": _redis, "KEY_PREFIX": _prefix})
WSOPS.update(json.loads(os.environ.get("WSOPS_TEST_WSOPS", "{}")))

# wsops logs propagate to the root logger: daphne's console handler in workers,
# pytest's capture in the test process.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"wsops": {"level": "INFO", "propagate": True}},
}
