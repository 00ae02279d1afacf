"""Soak test settings: the bench settings with limits tight enough to catch abusers."""

import os

from bench.settings import *  # noqa: F403
from bench.settings import WSOPS

ASGI_APPLICATION = "chatproject.asgi.application"
WSOPS = {
    **WSOPS,
    "ALLOWED_ORIGINS": [os.environ.get("SOAK_ORIGIN", "https://localhost")],
    "RATES": {"connect": "1000000/m", "message": "10/s", "user_message": None},
    "THROTTLE_CLOSE_AFTER": 10,
    "MAX_MESSAGE_BYTES": 16384,
    "TRUSTED_PROXIES": ["unix"],
}
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "handlers": {"console": {"class": "logging.StreamHandler"}},
           "loggers": {"wsops.security": {"handlers": ["console"], "level": "WARNING",
                                          "propagate": False},
                       "django": {"level": "ERROR"}}}
