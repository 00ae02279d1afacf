"""Production settings for the example: what `wssecure check --deploy` expects.

Behind the nginx from `wsdeploy`, with daphne workers on unix sockets.
"""

import os

from .settings import *  # noqa: F403
from .settings import on_redis

DEBUG = False
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "prod-example-" + "k3y" * 20)
ALLOWED_HOSTS = ["chat.example.com"]
CSRF_TRUSTED_ORIGINS = ["https://chat.example.com"]

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = True
SECURE_HSTS_SECONDS = 63072000
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_SAMESITE = "Lax"

REDIS_URL = os.environ.get("EXAMPLE_REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL_LAYERS, CACHES = on_redis(REDIS_URL)
WSOPS = {
    "REDIS_URL": REDIS_URL,
    "ALLOWED_ORIGINS": ["https://chat.example.com"],
    "RATES": {"connect": "30/m", "message": "20/s", "user_message": "40/s"},
    "MAX_CONNECTIONS_PER_USER": 10,
    "MAX_CONNECTIONS_PER_IP": 50,
    "TOKEN_TTL": "30d",
    "TRUSTED_PROXIES": ["unix", "127.0.0.1"],
}
