"""A bare Channels project, as many are deployed: ``AllowedHostsOriginValidator`` with
``ALLOWED_HOSTS = ["*"]``, no authentication, no throttling, daphne's defaults.
``wssecure probe`` must find what is wrong with it (tests/test_probe.py)."""

SECRET_KEY = "bare-project-tests-only-" + "b" * 40
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
ROOT_URLCONF = "bare_asgi"
ASGI_APPLICATION = "bare_asgi.application"
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
DATABASES = {}
USE_TZ = True
