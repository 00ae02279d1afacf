"""wssecure check: every rule in both directions, the ASGI walker, files, live Redis, output."""

import datetime
import io
import json
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.helpers import ROOT, configure_redis
from wsops.audit import asgi, certs, nginx, rules
from wsops.deploy.certs import _pem_key, mint
from wsops.deploy.certs import serialization as pem

SECURE = {
    "DEBUG": False,
    "ALLOWED_HOSTS": ["app.example.com"],
    "SESSION_COOKIE_SECURE": True,
    "CSRF_COOKIE_SECURE": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
    "CHANNEL_LAYERS": {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                   "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:6379/0",
                                                         "socket_timeout": 10}],
                                              "capacity": 100, "expiry": 30}}},
    "WSOPS": {"REDIS_URL": "redis://127.0.0.1:6379/0", "TRUSTED_PROXIES": ["unix"],
              "ALLOWED_ORIGINS": ["https://app.example.com"]},
    "ASGI_APPLICATION": "tests.asgi_variants.secure",
}

JWT_CHAIN = ["wsops.auth.SimpleJWTAuthenticator", "wsops.auth.TokenAuthenticator"]

# rule id -> settings that trigger it (applied on top of SECURE)
TRIGGERS = {
    "wsops.E001": {"ASGI_APPLICATION": "tests.asgi_variants.no_origin_check"},
    "wsops.W015": {"ASGI_APPLICATION": "tests.asgi_variants.channels_only"},
    "wsops.I002": {"ASGI_APPLICATION": "tests.asgi_variants.no_auth"},
    "wsops.E008": {"ASGI_APPLICATION": "tests.asgi_variants.missing"},
    "wsops.E003": {"WSOPS": {**SECURE["WSOPS"], "ALLOWED_ORIGINS": ["*"]}},
    "wsops.W008": {"WSOPS": {**SECURE["WSOPS"], "RATES": {"message": None}}},
    "wsops.W009": {"WSOPS": {**SECURE["WSOPS"], "MAX_MESSAGE_BYTES": 2 * 1024 * 1024}},
    "wsops.W010": {"WSOPS": {**SECURE["WSOPS"], "TOKEN_TRANSPORTS": ["query_token"]}},
    "wsops.W011": {"WSOPS": {**SECURE["WSOPS"], "TOKEN_TTL": "never"}},
    "wsops.I001": {"WSOPS": {**SECURE["WSOPS"], "FAIL_MODE": "open"}},
    "wsops.W030": {"WSOPS": {**SECURE["WSOPS"], "AUTHENTICATORS": JWT_CHAIN},
                   "SIMPLE_JWT": {"ACCESS_TOKEN_LIFETIME": datetime.timedelta(hours=2),
                                  "SIGNING_KEY": "jwt-only-" + "k" * 40}},
    "wsops.I030": {"WSOPS": {**SECURE["WSOPS"], "AUTHENTICATORS": JWT_CHAIN}},
    "wsops.W031": {"WSOPS": {**SECURE["WSOPS"], "TOKEN_TRANSPORTS": ["header", "query_token"],
                             "AUTHENTICATORS": ["wsops.auth.OAuth2Authenticator"]}},
    "wsops.W007": {"CHANNEL_LAYERS": {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:6379/0", "socket_timeout": 10}],
                   "capacity": 10000}}}},
    "wsops.E009": {"CHANNEL_LAYERS": {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"]}}}},
    "wsops.W001": {"DEBUG": True},
    "wsops.E002": {"ALLOWED_HOSTS": ["*"], "WSOPS": {**SECURE["WSOPS"],
                                                    "ALLOWED_ORIGINS": None}},
    "wsops.W002": {"WSOPS": {**SECURE["WSOPS"], "ALLOWED_ORIGINS": ["http://app.example.com"]}},
    "wsops.W003": {"SESSION_COOKIE_SECURE": False},
    "wsops.W004": {"CSRF_COOKIE_SECURE": False},
    "wsops.E004": {"SESSION_COOKIE_SAMESITE": None},
    "wsops.E005": {"CHANNEL_LAYERS": {"default": {
        "BACKEND": "channels.layers.InMemoryChannelLayer"}}},
    "wsops.W005": {"CHANNEL_LAYERS": {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": "rediss://redis.internal:6380/0",
                              "socket_timeout": 10}]}}}},
    "wsops.W006": {"CHANNEL_LAYERS": {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": "redis://:secret@redis.internal:6379/0",
                              "socket_timeout": 10}]}}}},
    "wsops.E006": {"WSOPS": {k: v for k, v in SECURE["WSOPS"].items() if k != "REDIS_URL"}},
    "wsops.W012": {"WSOPS": {**SECURE["WSOPS"], "TRUSTED_PROXIES": []}},
    "wsops.W013": {"SECURE_PROXY_SSL_HEADER": None},
    "wsops.W017": {"WSOPS": {**SECURE["WSOPS"], "REDIS_SENTINELS": ["10.0.0.1:26379", "b:26379"],
                             "REDIS_SENTINEL_SERVICE": "mymaster"}},
}
DEPLOY_ONLY = {"wsops.W001", "wsops.E002", "wsops.W002", "wsops.W003", "wsops.W004",
               "wsops.E004", "wsops.E005", "wsops.W005", "wsops.W006", "wsops.E006",
               "wsops.W012", "wsops.W013"}


def apply(settings, overrides):
    for key, value in {**SECURE, **overrides}.items():
        setattr(settings, key, value)


def found_ids(deploy=True):
    messages = rules.run(rules.SETTINGS_RULES + rules.ASGI_RULES
                         + (rules.DEPLOY_RULES if deploy else []))
    return {m.id for m in messages}


def test_the_secure_baseline_is_clean(settings):
    apply(settings, {})
    assert found_ids() == set()


@pytest.mark.parametrize("rule_id", sorted(TRIGGERS))
def test_rule_triggers_and_only_then(settings, rule_id):
    apply(settings, TRIGGERS[rule_id])
    assert rule_id in found_ids()
    apply(settings, {})
    assert rule_id not in found_ids()


def test_unusable_authenticator_paths_are_errors(settings):
    """E030 reads the setting as written: it names each path that cannot serve."""
    settings.WSOPS = {"AUTHENTICATORS": ["wsops.auth.Nope", "wsops.tokens.issue",
                                         "wsops.auth.TokenAuthenticator"]}
    messages = rules.check_authenticators()
    assert [m.id for m in messages] == ["wsops.E030", "wsops.E030"]
    assert "'wsops.auth.Nope' cannot be imported" in messages[0].msg
    assert "not a wsops.auth.BaseAuthenticator subclass" in messages[1].msg
    settings.WSOPS = {"AUTHENTICATORS": JWT_CHAIN}
    assert rules.check_authenticators() == []


def test_deploy_rules_only_run_with_deploy(settings):
    apply(settings, {"DEBUG": True, "SESSION_COOKIE_SECURE": False})
    assert {"wsops.W001", "wsops.W003"} <= found_ids(deploy=True)
    assert not {"wsops.W001", "wsops.W003"} & found_ids(deploy=False)
    assert {rule_id for rule_id in TRIGGERS if rule_id in DEPLOY_ONLY} == DEPLOY_ONLY


def test_insecure_settings_module_triggers_every_compatible_rule():
    """One settings module cannot set DEBUG both ways, derive origins and list them, etc.:
    it triggers every rule whose condition does not exclude another's."""
    result = subprocess.run(
        [sys.executable, "manage.py", "wssecure", "check", "--deploy", "--json"],
        cwd=ROOT / "example", capture_output=True, text=True, timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings_insecure",
             "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'example'}"})
    assert result.returncode == 1, result.stderr
    ids = {f["id"] for f in json.loads(result.stdout)["findings"]}
    # W017 (Sentinels) would give E006's settings their shared storage.
    expected = set(TRIGGERS) - {"wsops.W001", "wsops.E003", "wsops.W002", "wsops.W013",
                                "wsops.I002", "wsops.E008", "wsops.W017"}
    assert expected <= ids, expected - ids


def test_example_production_settings_pass_deploy_check():
    result = subprocess.run(
        [sys.executable, "manage.py", "wssecure", "check", "--deploy", "--fail-level",
         "WARNING"], cwd=ROOT / "example", capture_output=True, text=True, timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "chatproject.settings_prod",
             "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'example'}"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 error(s), 0 warning(s)" in result.stdout


def test_rules_are_registered_with_django_checks(settings):
    apply(settings, {"DEBUG": True})
    with pytest.raises(CommandError) as error:
        call_command("check", "--deploy", "--fail-level", "WARNING", stdout=io.StringIO(),
                     stderr=io.StringIO())
    assert "wsops.W001" in str(error.value)
    apply(settings, TRIGGERS["wsops.E001"])
    call_command("check", stdout=io.StringIO(), stderr=io.StringIO())  # not without --deploy
    with pytest.raises(CommandError) as error:
        call_command("check", "--deploy", stdout=io.StringIO(), stderr=io.StringIO())
    assert "wsops.E001" in str(error.value)
    apply(settings, TRIGGERS["wsops.E003"])
    with pytest.raises(CommandError) as error:  # settings rules run in every check
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())
    assert "wsops.E003" in str(error.value)


# --- ASGI walker ------------------------------------------------------------------------


def walk(name):
    from django.utils.module_loading import import_string

    return asgi.walk(import_string(f"tests.asgi_variants.{name}"))


def test_walks_channels_only_stack():
    [route] = walk("channels_only")
    assert route.consumer == "chat.consumers.ChatConsumer"
    assert route.origin_check == ["channels.security.websocket.OriginValidator"]
    assert route.auth == ["channels.auth.AuthMiddleware"]
    assert route.session == ["channels.sessions.SessionMiddleware",
                             "channels.auth.AuthMiddleware"]
    assert route.throttle == [] and route.unknown == []


def test_walks_secure_stack():
    [route] = walk("secure")
    assert route.pattern == r"^ws/chat/(?P<room>\w+)/$"
    assert [n.rsplit(".", 1)[1] for n in route.origin_check] == ["OriginGuard"]
    assert [n.rsplit(".", 1)[1] for n in route.auth] == ["TokenAuthMiddleware"]
    assert [n.rsplit(".", 1)[1] for n in route.throttle] == ["ConnectThrottle",
                                                             "ConnectionRegistry"]


def test_walks_custom_middleware_and_nested_routers():
    [route] = walk("custom")
    assert route.unknown == ["tests.asgi_variants.HomeMadeMiddleware"]
    assert route.pattern == r"api/ws/chat/(?P<room>\w+)/$"
    assert route.consumer == "chat.consumers.ChatConsumer"
    assert asgi.websocket_prefixes([route]) == ["/api/ws/chat/"]


def test_project_without_websocket_routes():
    assert walk("http_only") == []


def test_unknown_callable_does_not_crash():
    async def bare_app(scope, receive, send):
        pass

    [route] = asgi.walk(bare_app)
    assert route.unknown and route.consumer


# --- nginx --------------------------------------------------------------------------------


GOOD_SERVER = """
server {
    listen 443 ssl;
    server_name app.example.com;
    server_tokens off;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:!RC4;
    add_header Strict-Transport-Security "max-age=63072000" always;
    location /ws/ {
        access_log /var/log/nginx/ws.log wsfmt;
        proxy_pass http://backend;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_read_timeout 60s;
    }
}
"""
LOG_FORMAT = "log_format wsfmt '$remote_addr \"$request_method $uri\" $status';\n"
NGINX_BAD = {
    "wsops.E101": ("ssl_protocols TLSv1.2 TLSv1.3;", "ssl_protocols TLSv1 TLSv1.2;"),
    "wsops.E102": ("ECDHE-ECDSA-AES128-GCM-SHA256:!RC4", "RC4-SHA:ECDHE-ECDSA-AES128-GCM-SHA256"),
    "wsops.W101": ('add_header Strict-Transport-Security "max-age=63072000" always;', ""),
    "wsops.E103": ("proxy_set_header Upgrade $http_upgrade;", ""),
    "wsops.W102": ("X-Forwarded-For $remote_addr", "X-Forwarded-For $proxy_add_x_forwarded_for"),
    "wsops.W103": ("access_log /var/log/nginx/ws.log wsfmt;", ""),
    "wsops.W104": ("proxy_read_timeout 60s;", "proxy_read_timeout 15s;"),
    "wsops.W105": ("server_name app.example.com;", "server_name other.example.com;"),
    "wsops.W106": ("server_tokens off;", ""),
}


def write_config(tmp_path, server):
    (tmp_path / "sites").mkdir(exist_ok=True)
    (tmp_path / "sites" / "app.conf").write_text(server)
    main = tmp_path / "nginx.conf"
    main.write_text("events {}\nhttp {\n" + LOG_FORMAT + f"include {tmp_path}/sites/*.conf;\n}}\n")
    return str(main)


def nginx_ids(path):
    return {m.id for m in nginx.check(path, ["/ws/"])}


def test_good_nginx_config_passes(tmp_path, settings):
    settings.ALLOWED_HOSTS = ["app.example.com"]
    assert nginx_ids(write_config(tmp_path, GOOD_SERVER)) == set()


@pytest.mark.parametrize("rule_id", sorted(NGINX_BAD))
def test_bad_nginx_config_fails_on_the_right_rule(tmp_path, settings, rule_id):
    settings.ALLOWED_HOSTS = ["app.example.com"]
    good, bad = NGINX_BAD[rule_id]
    assert good in GOOD_SERVER
    path = write_config(tmp_path, GOOD_SERVER.replace(good, bad))
    found = nginx.check(path, ["/ws/"])
    assert {m.id for m in found} == {rule_id}
    assert "app.conf:" in found[0].msg or "nginx.conf" in found[0].msg  # file and line


def test_default_protocols_and_catch_all_location_are_judged(tmp_path, settings):
    settings.ALLOWED_HOSTS = ["app.example.com"]
    server = GOOD_SERVER.replace("ssl_protocols TLSv1.2 TLSv1.3;", "").replace(
        "location /ws/ {", "location / {")
    assert nginx_ids(write_config(tmp_path, server)) == {"wsops.E101"}


def test_wsdeploy_rendered_config_passes(tmp_path, settings):
    settings.ALLOWED_HOSTS = ["app.example.com"]
    for profile in ("intermediate", "modern"):
        site = tmp_path / f"{profile}.conf"
        call_command("wsdeploy", "nginx", "--domain", "app.example.com", "--tls-profile",
                     profile, "--output", str(site), stdout=io.StringIO(), stderr=io.StringIO())
        assert nginx_ids(str(site)) == set()


# --- certificates -------------------------------------------------------------------------


def write_chain(tmp_path, *certs_and_keys):
    path = tmp_path / "fullchain.pem"
    path.write_bytes(b"".join(c.public_bytes(pem.Encoding.PEM) for c in certs_and_keys))
    return str(path)


def cert_ids(path, key=None, **kwargs):
    return {m.id for m in certs.check(path, key, **kwargs)}


@pytest.fixture
def hosts(settings):
    settings.ALLOWED_HOSTS = ["app.example.com", "localhost"]


def test_good_certificate(tmp_path, hosts):
    leaf, key, ca = mint(["app.example.com"])
    key_path = tmp_path / "privkey.pem"
    key_path.write_bytes(_pem_key(key))
    assert cert_ids(write_chain(tmp_path, leaf, ca), str(key_path)) == set()


def test_expired_and_expiring(tmp_path, hosts):
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=100)
    leaf, _, ca = mint(["app.example.com"], not_before=past, days=30)
    assert cert_ids(write_chain(tmp_path, leaf, ca)) == {"wsops.E201"}
    leaf, _, ca = mint(["app.example.com"], days=10)
    assert cert_ids(write_chain(tmp_path, leaf, ca)) == {"wsops.W201"}
    assert cert_ids(write_chain(tmp_path, leaf, ca), expiry_days=5) == set()


def test_wrong_name_and_wildcard(tmp_path, hosts):
    leaf, _, ca = mint(["other.example.com"])
    assert cert_ids(write_chain(tmp_path, leaf, ca)) == {"wsops.E202"}
    leaf, _, ca = mint(["*.example.com"])
    assert cert_ids(write_chain(tmp_path, leaf, ca)) == set()


def test_weak_key(tmp_path, hosts):
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    leaf, _, ca = mint(["app.example.com"], key=weak)
    assert cert_ids(write_chain(tmp_path, leaf, ca)) == {"wsops.E203"}


def test_incomplete_chain_and_key_mismatch(tmp_path, hosts):
    leaf, _, ca = mint(["app.example.com"])
    _, other_key, _ = mint(["app.example.com"])
    key_path = tmp_path / "privkey.pem"
    key_path.write_bytes(_pem_key(other_key))
    assert cert_ids(write_chain(tmp_path, leaf)) == {"wsops.W202"}
    assert cert_ids(write_chain(tmp_path, leaf, ca), str(key_path)) == {"wsops.E204"}
    _, _, stranger = mint(["x"])
    assert cert_ids(write_chain(tmp_path, leaf, stranger)) == {"wsops.W202"}


# --- the command --------------------------------------------------------------------------


def wssecure(*args):
    out = io.StringIO()
    try:
        call_command("wssecure", "check", *args, stdout=out, stderr=io.StringIO())
        status = 0
    except SystemExit as exit_info:
        status = exit_info.code
    return status, out.getvalue()


def test_exit_status_and_fail_level(settings):
    apply(settings, {})
    assert wssecure("--deploy")[0] == 0
    apply(settings, TRIGGERS["wsops.W011"])
    assert wssecure("--deploy")[0] == 0
    assert wssecure("--deploy", "--fail-level", "WARNING")[0] == 1
    apply(settings, TRIGGERS["wsops.I001"])
    assert wssecure("--fail-level", "INFO")[0] == 1
    settings.SILENCED_SYSTEM_CHECKS = ["wsops.I001"]
    assert wssecure("--fail-level", "INFO")[0] == 0


def test_text_report_groups_by_severity(settings):
    apply(settings, {**TRIGGERS["wsops.E001"], **TRIGGERS["wsops.W011"]})
    status, out = wssecure("--deploy")
    assert status == 1
    assert out.index("Errors (1)") < out.index("Warnings (")
    assert "wsops.E001" in out and "HINT:" in out and "origin   NONE" in out
    assert out.strip().splitlines()[-1].startswith("wssecure: 1 error(s)")


def test_json_schema(settings):
    apply(settings, TRIGGERS["wsops.E001"])
    status, out = wssecure("--json")
    data = json.loads(out)
    assert status == 1
    assert set(data) == {"findings", "routes", "summary"}
    assert set(data["findings"][0]) == {"id", "level", "message", "hint"}
    assert data["summary"]["errors"] >= 1
    assert set(data["routes"][0]) == {"pattern", "consumer", "origin_check", "auth",
                                      "throttle", "session", "unknown"}


@pytest.mark.parametrize("args", [["--nginx-conf", "/nonexistent/nginx.conf"],
                                  ["--cert", "/nonexistent/fullchain.pem"],
                                  ["--key", "/x.pem"]])
def test_unreadable_files_are_usage_errors(settings, args):
    apply(settings, {})
    with pytest.raises(CommandError) as error:
        wssecure(*args)
    assert error.value.returncode == 2 and "\n" not in str(error.value)


def test_live_redis_facts(settings, private_redis):
    apply(settings, {})
    configure_redis(settings, private_redis)
    status, out = wssecure("--live", "--json")
    findings = json.loads(out)["findings"]
    facts = [f for f in findings if f["id"] == "wsops.I301"]
    assert len(facts) == 2 and "maxmemory-policy noeviction" in facts[0]["message"]
    assert any(f["id"] == "wsops.I302" for f in findings)  # no password, loopback
    private_redis.client().config_set("maxmemory-policy", "allkeys-lru")
    status, out = wssecure("--live", "--json")
    assert "wsops.W302" in {f["id"] for f in json.loads(out)["findings"]}
    private_redis.kill()
    status, out = wssecure("--live", "--json")
    assert status == 1 and "wsops.E301" in {f["id"] for f in json.loads(out)["findings"]}


# --- session cookies read by Channels' own stacks -------------------------------------------

NO_COOKIE_TRANSPORT = {"WSOPS": {**SECURE["WSOPS"], "TOKEN_TRANSPORTS": ["subprotocol", "header"]}}
LAX_COOKIES = {"SESSION_COOKIE_SECURE": False, "SESSION_COOKIE_SAMESITE": None}
SESSION_APPS = ["auth_stack", "session_stack", "session_middleware", "auth_middleware", "mixed"]


def cookie_findings():
    return {m.id: m.msg for m in rules.check_cookie_flags()}


@pytest.mark.parametrize("app", SESSION_APPS)
def test_channels_session_stacks_get_the_cookie_rules(settings, app):
    application = {"ASGI_APPLICATION": f"tests.asgi_sessions.{app}"}
    apply(settings, {**NO_COOKIE_TRANSPORT, **LAX_COOKIES, **application})
    found = cookie_findings()
    assert {"wsops.W003", "wsops.E004"} <= set(found)
    assert "route '" in found["wsops.W003"] and "route '" in found["wsops.E004"]
    apply(settings, {**NO_COOKIE_TRANSPORT, **application})
    assert cookie_findings() == {}


def test_the_cookie_rules_name_only_the_routes_that_read_the_session(settings):
    apply(settings, {**NO_COOKIE_TRANSPORT, **LAX_COOKIES,
                     "ASGI_APPLICATION": "tests.asgi_sessions.mixed"})
    message = cookie_findings()["wsops.W003"]
    assert "'web/" in message and "'api/" not in message and "AuthMiddleware" in message


def test_token_only_wsops_stack_is_not_a_session_reader(settings):
    apply(settings, {**NO_COOKIE_TRANSPORT, **LAX_COOKIES})
    assert cookie_findings() == {}
    apply(settings, LAX_COOKIES)  # wsops' cookie transport on: its session path counts
    assert {"wsops.W003", "wsops.E004"} <= set(cookie_findings())


def test_cookie_rules_fall_back_to_the_setting_when_the_app_does_not_load(settings):
    apply(settings, {**LAX_COOKIES, **TRIGGERS["wsops.E008"]})
    assert {"wsops.W003", "wsops.E004"} <= set(cookie_findings())
    apply(settings, {**LAX_COOKIES, **TRIGGERS["wsops.E008"], **NO_COOKIE_TRANSPORT})
    assert cookie_findings() == {}


def test_walker_records_what_reads_the_session(settings):
    from tests.asgi_sessions import session_stack

    [route] = asgi.walk(session_stack)
    assert route.session == ["channels.sessions.SessionMiddleware"] and route.auth == []
    apply(settings, {})
    [route] = walk("secure")
    assert route.session == ["wsops.middleware.TokenAuthMiddleware"]
    apply(settings, NO_COOKIE_TRANSPORT)
    [route] = walk("secure")
    assert route.session == []


def test_text_report_shows_session_readers(settings):
    apply(settings, {"ASGI_APPLICATION": "tests.asgi_sessions.auth_stack"})
    out = wssecure()[1]
    assert "session  SessionMiddleware, AuthMiddleware" in out


# --- passwords in every URL form: counted, and never printed ---------------------------------


@pytest.mark.parametrize("host", [
    {"address": "rediss://redis.internal:6380/0?password=hunter2"},
    {"address": "rediss://redis.internal:6380/0", "password": "hunter2"},
    {"address": "rediss://alice:hun%40ter2@redis.internal:6380/0"},
])
def test_channel_layer_password_in_any_form_counts(settings, host):
    apply(settings, {"CHANNEL_LAYERS": {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{**host, "socket_timeout": 10}]}}}})
    assert "wsops.W005" not in found_ids()


def test_live_authenticates_with_every_password_form_and_never_prints_it(settings,
                                                                         private_redis):
    apply(settings, {})
    private_redis.client().config_set("requirepass", "hunter2")
    base = f"redis://127.0.0.1:{private_redis.port}"
    settings.WSOPS = {**settings.WSOPS, "REDIS_URL": f"{base}/0?password=hunter2"}
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": f"{base}/1", "password": "hunter2",
                              "socket_timeout": 10}]}}}
    _, out = wssecure("--live", "--json")
    ids = [f["id"] for f in json.loads(out)["findings"]]
    assert "hunter2" not in out and "password=***" in out
    assert ids.count("wsops.I301") == 2
    assert "wsops.E301" not in ids and "wsops.I302" not in ids  # Redis wants the password


def test_live_masks_unreachable_urls(settings):
    apply(settings, {})
    settings.WSOPS = {**settings.WSOPS,
                      "REDIS_URL": "unix:///nonexistent/wsops.sock?password=hunter2"}
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": "redis://alice:hun@ter2@127.0.0.1:1/0",
                              "socket_timeout": 10},
                             {"address": "redis://127.0.0.1:1/0?password=hunter2@x"}]}}}
    status, out = wssecure("--live", "--json")
    failures = [f["message"] for f in json.loads(out)["findings"] if f["id"] == "wsops.E301"]
    assert status == 1 and "ter2" not in out and len(failures) == 3
    for shown in ("unix:///nonexistent/wsops.sock?password=***",
                  "redis://alice:***@127.0.0.1:1/0", "redis://127.0.0.1:1/0?password=***"):
        assert any(shown in failure for failure in failures), (shown, failures)
