"""wssecure check --apache-conf / --caddyfile: the front-end rules of the nginx audit, with
the same ids, on a good config, on the rendered ones, and on seeded mistakes one by one."""

import io
import json

import pytest
from django.core.management import call_command

from tests.helpers import require_tool
from wsops.audit import apache, caddy
from wsops.audit.frontend import ConfigError

pytestmark = pytest.mark.django_db

APACHE_MAIN = """ServerRoot {root}
ServerTokens Prod
LogFormat "%a %t \\"%m %U %H\\" %>s" wsfmt
<IfModule ssl_module>
    SSLProtocol -all +TLSv1.2 +TLSv1.3
</IfModule>
IncludeOptional sites/*.conf
"""
APACHE_SITE = """<VirtualHost *:443>
    ServerName app.example.com
    SSLEngine on
    SSLCipherSuite ECDHE-ECDSA-AES128-GCM-SHA256:!RC4
    Header always set Strict-Transport-Security "max-age=63072000"
    ProxyAddHeaders Off
    RequestHeader set X-Forwarded-For "expr=%{REMOTE_ADDR}"
    SetEnvIf Request_URI "^/ws/" ws
    CustomLog /var/log/apache2/access.log combined env=!ws
    CustomLog /var/log/apache2/ws.log wsfmt env=ws
    <Proxy balancer://daphne>
        BalancerMember "unix:/run/daphne/daphne-1.sock|http://localhost" upgrade=websocket \\
            timeout=60
    </Proxy>
    ProxyPass /ws/ balancer://daphne/ws/
    ProxyPass / balancer://daphne/
</VirtualHost>
"""
APACHE_BAD = {
    "wsops.E101": ("SSLProtocol -all +TLSv1.2 +TLSv1.3", "SSLProtocol all -SSLv3"),
    "wsops.E102": ("ECDHE-ECDSA-AES128-GCM-SHA256:!RC4", "RC4-SHA:ECDHE-ECDSA-AES128-GCM-SHA256"),
    "wsops.W101": ('Header always set Strict-Transport-Security "max-age=63072000"', ""),
    "wsops.E103": (" upgrade=websocket \\", " \\"),
    "wsops.W102": ('RequestHeader set X-Forwarded-For "expr=%{REMOTE_ADDR}"', ""),
    "wsops.W103": ("CustomLog /var/log/apache2/ws.log wsfmt env=ws",
                   "CustomLog /var/log/apache2/ws.log combined env=ws"),
    "wsops.W104": ("timeout=60", "timeout=15"),
    "wsops.W105": ("ServerName app.example.com", "ServerName other.example.com"),
    "wsops.W106": ("ServerTokens Prod", "ServerTokens OS"),
}


def write_apache(tmp_path, site=APACHE_SITE, main=APACHE_MAIN):
    (tmp_path / "sites").mkdir(exist_ok=True)
    (tmp_path / "sites" / "app.conf").write_text(site)
    path = tmp_path / "apache2.conf"
    path.write_text(main.format(root=tmp_path))
    return str(path)


def ids(found):
    return {m.id for m in found}


@pytest.fixture
def hosts(settings):
    settings.ALLOWED_HOSTS = ["app.example.com"]


def test_good_apache_config_passes(tmp_path, hosts):
    assert ids(apache.check(write_apache(tmp_path), ["/ws/"])) == set()


@pytest.mark.parametrize("rule_id", sorted(APACHE_BAD))
def test_bad_apache_config_fails_on_the_right_rule(tmp_path, hosts, rule_id):
    good, bad = APACHE_BAD[rule_id]
    text = APACHE_SITE + APACHE_MAIN
    assert text.count(good) == 1
    path = write_apache(tmp_path, APACHE_SITE.replace(good, bad), APACHE_MAIN.replace(good, bad))
    found = apache.check(path, ["/ws/"])
    assert ids(found) == {rule_id}
    assert "app.conf:" in found[0].msg or "apache2.conf" in found[0].msg  # file and line


def test_apache_defaults_are_judged(tmp_path, hosts):
    """Unset SSLProtocol (all -SSLv3), ServerTokens (Full) and ProxyAddHeaders (On: mod_proxy
    appends to the client's header), and a <Location> with its own ProxyPass."""
    main = APACHE_MAIN.replace("ServerTokens Prod\n", "").replace(
        "    SSLProtocol -all +TLSv1.2 +TLSv1.3\n", "")
    site = APACHE_SITE.replace("    ProxyAddHeaders Off\n", "").replace(
        '    RequestHeader set X-Forwarded-For "expr=%{REMOTE_ADDR}"\n', "").replace(
        "    ProxyPass /ws/ balancer://daphne/ws/\n",
        "    <Location /ws/>\n        ProxyPass http://127.0.0.1:9000/ws/ timeout=10\n"
        "    </Location>\n")
    found = apache.check(write_apache(tmp_path, site, main), ["/ws/chat/"])
    assert ids(found) == {"wsops.E101", "wsops.W106", "wsops.W102", "wsops.E103",
                          "wsops.W104"}
    assert any("Apache's default" in m.msg and "TLSv1, TLSv1.1" in m.msg for m in found)


@pytest.mark.parametrize("profile", ["intermediate", "modern"])
def test_rendered_apache_site_passes(tmp_path, hosts, profile):
    site = tmp_path / "site.conf"
    call_command("wsdeploy", "apache", "--domain", "app.example.com", "--tls-profile", profile,
                 "--output", str(site), stdout=io.StringIO(), stderr=io.StringIO())
    assert ids(apache.check(str(site), ["/ws/chat/"])) == set()


@pytest.mark.parametrize(("text", "message"), [
    ("<VirtualHost *:443>\nServerName a\n", "is never closed"),
    ("</VirtualHost>\n", "unexpected </virtualhost>"),
    ("Include /nonexistent/wsops.conf\n", "no such file"),
    ('ServerName "unterminated\n', "cannot parse"),
])
def test_unreadable_apache_configs_are_usage_errors(tmp_path, text, message):
    path = tmp_path / "apache2.conf"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        apache.check(str(path), ["/ws/"])


# --- Caddy ----------------------------------------------------------------------------------

CADDYFILE = """{
\thttps_port 443
\tlog default {
\t\tformat filter {
\t\t\twrap json
\t\t\tfields {
\t\t\t\trequest>uri query {
\t\t\t\t\tdelete ticket
\t\t\t\t}
\t\t\t\trequest>headers delete
\t\t\t}
\t\t}
\t}
}

app.example.com {
\ttls /etc/c.pem /etc/k.pem {
\t\tprotocols tls1.2 tls1.3
\t\tciphers TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
\t}
\theader Strict-Transport-Security "max-age=63072000"
\tlog {
\t\toutput file /var/log/caddy/access.log
\t\tformat filter {
\t\t\twrap json
\t\t\tfields {
\t\t\t\trequest>uri regexp "\\?.*$" ""
\t\t\t\trequest>headers delete
\t\t\t}
\t\t}
\t}
\treverse_proxy unix//run/daphne/daphne-1.sock {
\t\theader_up X-Forwarded-For {remote_host}
\t\ttransport http {
\t\t\tread_timeout 60s
\t\t}
\t}
}
"""
CADDY_BAD = {
    "wsops.W101": ('header Strict-Transport-Security "max-age=63072000"', ""),
    "wsops.E103": ("read_timeout 60s", "read_timeout 60s\n\t\t\tversions h2c 2"),
    "wsops.W102": ("header_up X-Forwarded-For {remote_host}",
                   "header_up X-Forwarded-For \"{http.request.header.X-Forwarded-For}, "
                   "{remote_host}\""),
    "wsops.W103": ("\t\t\t\trequest>uri regexp \"\\?.*$\" \"\"\n", ""),
    "wsops.W103/default-log": ("\t\t\t\trequest>uri query {\n\t\t\t\t\tdelete ticket\n"
                               "\t\t\t\t}\n", ""),
    "wsops.W104": ("read_timeout 60s", "read_timeout 15s"),
    "wsops.W105": ("app.example.com {", "other.example.com {"),
}


@pytest.fixture
def caddy_tool():
    require_tool("caddy")


def caddy_ids(tmp_path, text):
    path = tmp_path / "Caddyfile"
    path.write_text(text)
    return caddy.check(str(path), ["/ws/"])


def test_good_caddyfile_passes(tmp_path, hosts, caddy_tool):
    assert ids(caddy_ids(tmp_path, CADDYFILE)) == set()


@pytest.mark.parametrize("rule_id", sorted(CADDY_BAD))
def test_bad_caddyfile_fails_on_the_right_rule(tmp_path, hosts, caddy_tool, rule_id):
    good, bad = CADDY_BAD[rule_id]
    assert CADDYFILE.count(good) == 1
    found = caddy_ids(tmp_path, CADDYFILE.replace(good, bad))
    assert ids(found) == {rule_id.split("/")[0]}
    assert "Caddyfile" in found[0].msg


@pytest.mark.parametrize(("rule_id", "policy"), [
    ("wsops.E101", {"protocol_min": "tls1.1"}),
    ("wsops.E102", {"cipher_suites": ["TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
                                      "TLS_RSA_WITH_RC4_128_SHA"]}),
])
def test_caddy_json_with_old_protocols_or_weak_ciphers(tmp_path, hosts, caddy_tool, rule_id,
                                                        policy):
    """The Caddyfile refuses TLS < 1.2 and these suites; Caddy's JSON config does not."""
    (tmp_path / "Caddyfile").write_text(CADDYFILE)
    config = caddy.load(str(tmp_path / "Caddyfile"))
    [server] = config["apps"]["http"]["servers"].values()
    server["tls_connection_policies"][0].update(policy)
    path = tmp_path / "caddy.json"
    path.write_text(json.dumps(config))
    found = caddy.check(str(path), ["/ws/"])
    assert ids(found) == {rule_id} and "caddy.json (site app.example.com)" in found[0].msg


def test_caddy_access_log_without_filters_records_credentials(tmp_path, hosts, caddy_tool):
    head, site = CADDYFILE.split("app.example.com {")
    text = head + "app.example.com {" + site.replace("\t\t\t\trequest>headers delete\n", "")
    [finding] = caddy_ids(tmp_path, text)
    assert finding.id == "wsops.W103" and "Sec-WebSocket-Protocol header (tokens)" in finding.msg
    assert "query string" not in finding.msg


@pytest.mark.parametrize("args", [[], ["--cert", "/etc/c.pem", "--key", "/etc/k.pem"],
                                  ["--tls-profile", "modern"]])
def test_rendered_caddyfile_passes(tmp_path, hosts, caddy_tool, args):
    path = tmp_path / "Caddyfile"
    call_command("wsdeploy", "caddy", "--domain", "app.example.com", *args, "--output",
                 str(path), stdout=io.StringIO(), stderr=io.StringIO())
    assert ids(caddy.check(str(path), ["/ws/chat/"])) == set()


def test_caddy_json_config_is_read_without_the_binary(tmp_path, hosts, monkeypatch):
    from wsops.deploy import caddy as deploy_caddy

    monkeypatch.setattr(deploy_caddy, "find_caddy", lambda: None)
    config = {"apps": {"http": {"servers": {"srv0": {
        "listen": [":443"], "routes": [{"match": [{"host": ["app.example.com"]}], "handle": [
            {"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:9000"}],
             "trusted_proxies": ["0.0.0.0/0"]}]}]}}}}}
    path = tmp_path / "caddy.json"
    path.write_text(json.dumps(config))
    # no HSTS, trusted_proxies for everyone, and Caddy's default log unfiltered
    assert ids(caddy.check(str(path), ["/ws/"])) == {"wsops.W101", "wsops.W102", "wsops.W103"}
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text("app.example.com {\n}\n")
    with pytest.raises(ConfigError, match="takes the caddy binary"):
        caddy.check(str(caddyfile), ["/ws/"])


def test_wssecure_check_audits_each_front_end(tmp_path, hosts, caddy_tool):
    apache_conf = write_apache(tmp_path, APACHE_SITE.replace("timeout=60", "timeout=15")
                               .replace(" upgrade=websocket", ""))
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(CADDYFILE.replace("app.example.com {", "other.example.com {"))
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("wssecure", "check", "--json", "--apache-conf", apache_conf,
                     "--caddyfile", str(caddyfile), stdout=out, stderr=io.StringIO())
    assert exit_info.value.code == 1  # E103 (below) is an error
    found = {(f["id"], f["message"].split(":")[0].rsplit("/", 1)[-1])
             for f in json.loads(out.getvalue())["findings"]}
    assert ("wsops.W104", "app.conf") in found
    assert ("wsops.W105", "Caddyfile") in found


@pytest.mark.parametrize("option", ["--apache-conf", "--caddyfile"])
def test_missing_config_is_a_usage_error(option):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError) as error:
        call_command("wssecure", "check", option, "/nonexistent/site.conf",
                     stdout=io.StringIO(), stderr=io.StringIO())
    assert error.value.returncode == 2 and "/nonexistent/site.conf" in str(error.value)


def test_apache_proxypass_order_decides_the_websocket_route(tmp_path, hosts):
    """httpd uses the first matching ProxyPass: a catch-all before /ws/ takes the sockets."""
    site = APACHE_SITE.replace("    ProxyPass /ws/ balancer://daphne/ws/\n", "").replace(
        "    ProxyPass / balancer://daphne/\n",
        "    ProxyPass / http://127.0.0.1:9000/\n    ProxyPass /ws/ balancer://daphne/ws/\n")
    found = apache.check(write_apache(tmp_path, site), ["/ws/"])
    assert ids(found) == {"wsops.E103"} and "app.conf:15:" in found[0].msg  # the catch-all
