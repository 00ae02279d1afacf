"""Redis passwords never reach output: every URL form is masked where it is printed or logged."""

import io
import logging

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from wsops import store

# (URL, what must be shown): every place a Redis URL can carry a password.
FORMS = [
    ("redis://:hunter2@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
    ("redis://alice:hunter2@cache.internal:6379/0", "redis://alice:***@cache.internal:6379/0"),
    ("rediss://:hunter2@cache.internal", "rediss://:***@cache.internal"),
    ("redis://cache.internal:6379/0?password=hunter2", "redis://cache.internal:6379/0?password=***"),
    ("redis://cache.internal/0?db=1&PassWord=hunter2&ssl_cert_reqs=none",
     "redis://cache.internal/0?db=1&PassWord=***&ssl_cert_reqs=none"),
    ("unix:///run/redis/redis.sock?db=0&password=hunter2",
     "unix:///run/redis/redis.sock?db=0&password=***"),
    ("unix://alice:hunter2@/run/redis/redis.sock", "unix://alice:***@/run/redis/redis.sock"),
    ("redis://:hun%40ter2%3A@cache.internal/0", "redis://:***@cache.internal/0"),
    ("redis://:hun@ter2@cache.internal:6379/0", "redis://:***@cache.internal:6379/0"),
    ("redis://alice:hun@t/er2@cache.internal/0?password=hun@ter2",
     "redis://alice:***@cache.internal/0?password=***"),
    ("redis://hunter2@cache.internal/0", "redis://***@cache.internal/0"),
]
CLEAN = ["redis://127.0.0.1:6379/0", "unix:///run/redis@main/redis.sock?db=2",
         "rediss://cache.internal:6380/0?ssl_cert_reqs=required", "127.0.0.1:6379"]


@pytest.mark.parametrize(("url", "shown"), FORMS)
def test_masked_hides_every_password_form_and_keeps_the_rest(url, shown):
    assert store.masked(url) == shown
    assert "ter2" not in store.masked(url)


@pytest.mark.parametrize("url", CLEAN)
def test_masked_leaves_urls_without_a_password_alone(url):
    assert store.masked(url) == url
    assert store.masked(None) == ""


@pytest.mark.parametrize(("url", "shown"), FORMS)
def test_outage_warnings_mask_the_url(settings, caplog, url, shown):
    settings.WSOPS = {**settings.WSOPS, "REDIS_URL": url}
    tracker = store.OutageTracker()
    with caplog.at_level(logging.WARNING, logger="wsops"):
        tracker.failed(ConnectionError("refused"))
        tracker.succeeded()
    assert len(caplog.records) == 2
    assert "ter2" not in caplog.text and caplog.text.count(shown) == 2


def wsratelimit(*args):
    call_command("wsratelimit", *args, stdout=io.StringIO(), stderr=io.StringIO())


UNREACHABLE = [
    ("redis://alice:hunter2@127.0.0.1:1/0", "redis://alice:***@127.0.0.1:1/0"),
    ("rediss://:hun%40ter2@127.0.0.1:1", "rediss://:***@127.0.0.1:1"),
    ("redis://127.0.0.1:1/0?password=hunter2", "redis://127.0.0.1:1/0?password=***"),
    ("unix:///nonexistent/wsops-redis.sock?password=hunter2",
     "unix:///nonexistent/wsops-redis.sock?password=***"),
    # redis-py does not know ?Password=: still one line, still masked
    ("redis://127.0.0.1:1/0?Password=hunter2", "redis://127.0.0.1:1/0?Password=***"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("url", "shown"), UNREACHABLE)
def test_wsratelimit_unreachable_redis_masks_the_url(settings, url, shown):
    settings.WSOPS = {**settings.WSOPS, "REDIS_URL": url}
    with pytest.raises(CommandError) as error:
        wsratelimit("show")
    message = str(error.value)
    assert error.value.returncode == 2 and "\n" not in message
    assert "ter2" not in message and shown in message


@pytest.mark.django_db
def test_wsratelimit_masks_a_cache_location(settings):
    """WSOPS['CACHE'] reuses a django-redis LOCATION: the same masking applies."""
    settings.CACHES = {**settings.CACHES, "shared": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0?password=hunter2"}}
    settings.WSOPS = {**settings.WSOPS, "CACHE": "shared"}
    with pytest.raises(CommandError) as error:
        wsratelimit("show")
    assert "hunter2" not in str(error.value) and "password=***" in str(error.value)


@pytest.mark.django_db
def test_wsratelimit_malformed_location_is_one_line(settings):
    settings.CACHES = {**settings.CACHES, "shared": {
        "BACKEND": "django_redis.cache.RedisCache", "LOCATION": "hunter2@127.0.0.1:6379"}}
    settings.WSOPS = {**settings.WSOPS, "CACHE": "shared"}
    with pytest.raises(CommandError) as error:
        wsratelimit("show")
    message = str(error.value)
    assert error.value.returncode == 2 and "\n" not in message
    assert "hunter2" not in message and "not a Redis URL" in message
