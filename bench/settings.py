"""Settings for the benchmark's daphne workers: the example project on a private Redis.

The bench runner sets BENCH_REDIS_URL and BENCH_DB to its own throwaway Redis and
SQLite file. Limits are on (so their cost is measured) but set high enough that
the load generator never hits them.
"""

import os

from chatproject.settings import *  # noqa: F403
from chatproject.settings import on_redis

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ASGI_APPLICATION = "bench.benchapp.secure"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.environ.get("BENCH_DB", "/tmp/wsops-bench.sqlite3")}}
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL_LAYERS, CACHES = on_redis(REDIS_URL)
WSOPS = {
    "REDIS_URL": REDIS_URL,
    "ALLOWED_ORIGINS": ["http://127.0.0.1"],
    "RATES": {"connect": "1000000/m", "message": "100000/s",
              # BENCH_USER_MESSAGE=1: also the per-user shared throttle (a Redis trip/message)
              "user_message": "1000000/s" if os.environ.get("BENCH_USER_MESSAGE") else None},
    "MAX_CONNECTIONS_PER_USER": 100000,
    "MAX_CONNECTIONS_PER_IP": 100000,
    "TOKEN_CACHE_SECONDS": 300,
    # BENCH_METRICS=0: Prometheus metrics off, to measure what recording them costs
    "METRICS": os.environ.get("BENCH_METRICS", "1") != "0",
}
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "loggers": {"wsops": {"level": "ERROR"}, "django": {"level": "ERROR"}}}
