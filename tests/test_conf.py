"""WSOPS settings: defaults, and one clear ImproperlyConfigured per kind of mistake."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from wsops.conf import DEFAULT_RATES, get_settings, validate
from wsops.units import Rate, format_duration, parse_duration, parse_rate


def test_every_key_has_a_default():
    conf = validate({})
    assert conf.MAX_MESSAGE_BYTES == 65536
    assert conf.TICKET_TTL == 30
    assert conf.FAIL_MODE == "closed"
    assert conf.REJECT_WITH == "handshake"
    assert conf.REDIS_TIMEOUT == 0.05
    assert conf.TOKEN_TRANSPORTS == ("subprotocol", "header", "query", "cookie")
    assert set(conf.RATES) == set(DEFAULT_RATES)
    assert conf.rate("connect") == Rate(60, 60)


def test_none_means_no_settings():
    assert validate(None) == validate({})


@pytest.mark.parametrize(
    ("raw", "fragments"),
    [
        ({"MAX_MESAGE_BYTES": 10}, ["unknown key 'MAX_MESAGE_BYTES'", "MAX_MESSAGE_BYTES"]),
        ({"MAX_MESSAGE_BYTES": "64k"}, ["MAX_MESSAGE_BYTES", "'64k'", "positive integer"]),
        ({"MAX_MESSAGE_BYTES": True}, ["MAX_MESSAGE_BYTES", "positive integer"]),
        ({"RATES": {"connect": "ten/m"}}, ["RATES", "'connect'", "'ten/m'", "30/m"]),
        ({"RATES": {"message": "5/10y"}}, ["RATES", "'5/10y'"]),
        ({"RATES": ["30/m"]}, ["RATES", "dict"]),
        ({"FAIL_MODE": "sometimes"}, ["FAIL_MODE", "'sometimes'", "'closed' or 'open'"]),
        ({"REJECT_WITH": 403}, ["REJECT_WITH", "'handshake' or 'close_code'"]),
        ({"TOKEN_TTL": "forever"}, ["TOKEN_TTL", "'forever'", "never"]),
        ({"TICKET_TTL": "never"}, ["TICKET_TTL", "'never'"]),
        ({"TOKEN_TRANSPORTS": "subprotocol"}, ["TOKEN_TRANSPORTS", "list"]),
        ({"TOKEN_TRANSPORTS": ["carrier-pigeon"]}, ["TOKEN_TRANSPORTS", "subprotocol"]),
        ({"ALLOWED_ORIGINS": ["example.com"]}, ["ALLOWED_ORIGINS", "https://app.example.com"]),
        ({"ALLOWED_ORIGINS": ["https://a.*.example.com"]}, ["ALLOWED_ORIGINS"]),
        ({"ALLOWED_ORIGINS": ["https://x.com:port"]}, ["ALLOWED_ORIGINS"]),
        ({"REDIS_URL": "http://localhost"}, ["REDIS_URL", "redis://"]),
        ({"CACHE": "nope"}, ["CACHE", "'nope'", "'default'"]),
        ({"TRUSTED_PROXIES": ["10.0.0.0/33"]}, ["TRUSTED_PROXIES", "CIDR"]),
        ({"REDIS_TIMEOUT": 0}, ["REDIS_TIMEOUT", "positive number"]),
        ({"MAX_CONNECTIONS_PER_USER": -1}, ["MAX_CONNECTIONS_PER_USER"]),
        ({"TICKET_RATE": "lots"}, ["TICKET_RATE", "'lots'"]),
        ({"AUTHENTICATORS": "wsops.auth.TokenAuthenticator"}, ["AUTHENTICATORS",
                                                               "a list of strings"]),
        ({"AUTHENTICATORS": ["wsops.auth.Nope"]}, ["AUTHENTICATORS", "'wsops.auth.Nope' "
                                                   "cannot be imported"]),
        ({"AUTHENTICATORS": ["myproject.auth.Missing"]}, ["AUTHENTICATORS", "cannot be imported"]),
        ({"AUTHENTICATORS": ["wsops.tokens.issue"]}, ["AUTHENTICATORS", "BaseAuthenticator"]),

        ({"REDIS_CLUSTER": "yes"}, ["REDIS_CLUSTER", "True or False"]),
        ({"REDIS_SENTINELS": "10.0.0.1:26379"}, ["REDIS_SENTINELS", "list"]),
        ({"REDIS_SENTINELS": ["10.0.0.1"], "REDIS_SENTINEL_SERVICE": "m"},
         ["REDIS_SENTINELS", "10.0.0.1:26379"]),
        ({"REDIS_SENTINELS": ["h:70000"], "REDIS_SENTINEL_SERVICE": "m"}, ["REDIS_SENTINELS"]),
        ({"REDIS_SENTINEL_SERVICE": "my master"}, ["REDIS_SENTINEL_SERVICE", "mymaster"]),
        ({"REDIS_SENTINELS": ["10.0.0.1:26379"]}, ["REDIS_SENTINEL_SERVICE", "go together"]),
        ({"REDIS_SENTINEL_SERVICE": "mymaster"}, ["REDIS_SENTINELS", "go together"]),
        ({"REDIS_CLUSTER": True}, ["REDIS_CLUSTER", "REDIS_URL", "one node"]),
        ({"REDIS_CLUSTER": True, "REDIS_URL": "unix:///run/redis.sock"},
         ["REDIS_CLUSTER", "redis://"]),
        ({"REDIS_CLUSTER": True, "REDIS_URL": "redis://h:7000", "KEY_PREFIX": "{app}:"},
         ["KEY_PREFIX", "hash tag"]),
        ({"REDIS_CLUSTER": True, "REDIS_URL": "redis://h:7000",
          "REDIS_SENTINELS": ["h:26379"], "REDIS_SENTINEL_SERVICE": "m"},
         ["REDIS_CLUSTER", "REDIS_SENTINELS", "exclude"]),
    ],
)
def test_mistakes_name_key_value_and_what_is_allowed(raw, fragments):
    with pytest.raises(ImproperlyConfigured) as error:
        validate(raw)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_topologies_validate():
    cluster = validate({"REDIS_CLUSTER": True, "REDIS_URL": "redis://10.0.0.1:7000/0"})
    assert cluster.REDIS_CLUSTER and not cluster.REDIS_SENTINELS
    sentinel = validate({"REDIS_SENTINELS": ["10.0.0.1:26379", "[::1]:26380"],
                         "REDIS_SENTINEL_SERVICE": "mymaster", "REDIS_URL": "redis://:pw@/0"})
    assert sentinel.REDIS_SENTINELS == ("10.0.0.1:26379", "[::1]:26380")


def test_sentinel_primary_takes_password_and_db_from_the_url(settings):
    from wsops import store

    settings.WSOPS = {"REDIS_SENTINELS": ["127.0.0.1:26379"], "REDIS_SENTINEL_SERVICE": "m",
                      "REDIS_URL": "redis://:s%40cret@/3"}
    assert store.topology() == store.SENTINEL and store.redis_url()
    assert store.credentials() == {"password": "s@cret", "db": 3}
    assert "s@cret" not in store.describe() and "127.0.0.1:26379" in store.describe()
    settings.WSOPS = {"REDIS_SENTINELS": ["127.0.0.1:26379"], "REDIS_SENTINEL_SERVICE": "m"}
    assert store.redis_url() and store.credentials() == {}


def test_not_a_dict():
    with pytest.raises(ImproperlyConfigured, match="WSOPS must be a dict"):
        validate(["x"])


def test_normalises_durations_rates_and_merges_rates_with_defaults():
    conf = validate({"TOKEN_TTL": "12h", "RATES": {"message": "5/10s", "user_message": None},
                     "TICKET_TTL": 45, "ALLOWED_ORIGINS": ["https://App.Example.com/"]})
    assert conf.TOKEN_TTL == 12 * 3600
    assert conf.rate("message") == Rate(5, 10)
    assert conf.rate("user_message") is None
    assert conf.rate("connect") == Rate(60, 60)
    assert conf.TICKET_TTL == 45
    assert conf.ALLOWED_ORIGINS == ("https://app.example.com",)
    assert validate({"TOKEN_TTL": "never"}).TOKEN_TTL is None


def test_settings_are_reloaded_when_changed(settings):
    settings.WSOPS = {"MAX_MESSAGE_BYTES": 1234}
    assert get_settings().MAX_MESSAGE_BYTES == 1234
    settings.WSOPS = {"MAX_MESSAGE_BYTES": 99}
    assert get_settings().MAX_MESSAGE_BYTES == 99


def test_startup_validation_raises(settings):
    from django.apps import apps

    settings.WSOPS = {"FAIL_MODE": "maybe"}
    with pytest.raises(ImproperlyConfigured, match="FAIL_MODE"):
        apps.get_app_config("wsops").ready()


@pytest.mark.parametrize(
    ("text", "rate"),
    [("30/m", Rate(30, 60)), ("5/10s", Rate(5, 10)), ("1000/h", Rate(1000, 3600)),
     ("7/2d", Rate(7, 172800)), ("3", None), ("3/", Rate(3, 1)), ("0/m", None),
     ("30/mx", None), (" 30/m ", Rate(30, 60))],
)
def test_rate_strings_follow_django_ratelimit(text, rate):
    if rate is None:
        with pytest.raises(ValueError):
            parse_rate(text)
    else:
        assert parse_rate(text) == rate


def test_durations():
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("2w") == 14 * 86400
    assert parse_duration(90) == 90
    assert parse_duration("never") is None
    with pytest.raises(ValueError):
        parse_duration("never", allow_never=False)
    with pytest.raises(ValueError):
        parse_duration("-5m")
    assert format_duration(90061) == "1d1h1m1s"
    assert format_duration(None) == "never"


def test_authenticators_default_to_wsops_tokens_tickets_and_session():
    assert validate({}).AUTHENTICATORS == ("wsops.auth.TokenAuthenticator",
                                           "wsops.auth.TicketAuthenticator",
                                           "wsops.auth.SessionAuthenticator")
    chain = ["wsops.auth.SimpleJWTAuthenticator", "wsops.auth.DRFTokenAuthenticator",
             "wsops.auth.OAuth2Authenticator"]
    configured = validate({"AUTHENTICATORS": chain}).AUTHENTICATORS
    assert configured == tuple(chain)


def test_an_authenticator_whose_extra_is_missing_is_refused(monkeypatch):
    from wsops.auth import SimpleJWTAuthenticator

    monkeypatch.setattr(SimpleJWTAuthenticator, "requires", ("not_installed_anywhere",))
    with pytest.raises(ImproperlyConfigured, match=r'wsops\[jwt\]'):
        validate({"AUTHENTICATORS": ["wsops.auth.SimpleJWTAuthenticator"]})
