"""wsdeploy apache / caddy: rendering, `all --server`, hostile values, and `apachectl -t` /
`caddy validate` on every combination (tests/test_deploy.py does the same for nginx)."""

import io
import itertools
import re

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.helpers import require_tool
from tests.test_deploy import BENIGN, CONTROL, HOSTILE, QUOTED, wsdeploy

pytestmark = pytest.mark.django_db


def test_apache_site_has_every_required_block():
    site, _ = wsdeploy("apache", "--domain", "chat.example.com", "--domain", "www.example.com")
    for needle in [
        "ServerName chat.example.com",
        "ServerAlias www.example.com",
        "Alias /.well-known/acme-challenge/ /var/www/letsencrypt/.well-known/acme-challenge/",
        "RewriteCond %{REQUEST_URI} !^/\\.well-known/acme-challenge/",
        "RewriteRule ^ https://%{SERVER_NAME}%{REQUEST_URI} [R=301,L]",
        "SSLProtocol -all +TLSv1.2 +TLSv1.3",
        "SSLCipherSuite ECDHE-ECDSA-AES128-GCM-SHA256:",
        "SSLOpenSSLConfCmd Curves X25519:prime256v1:secp384r1",
        "SSLSessionTickets off",
        "ServerTokens Prod", "ServerSignature Off",
        'Header always set Strict-Transport-Security "max-age=63072000; includeSubDomains"',
        'BalancerMember "unix:/run/daphne/daphne-1.sock|http://localhost" upgrade=websocket '
        "timeout=60",
        'BalancerMember "unix:/run/daphne/daphne-2.sock|http://localhost"',
        "ProxySet lbmethod=bybusyness",
        "ProxyAddHeaders Off",
        'RequestHeader set X-Forwarded-For "expr=%{REMOTE_ADDR}"',
        'RequestHeader set X-Forwarded-Proto "https"',
        "ProxyPreserveHost On",
        "ProxyPass /ws/ balancer://wsops_daphne/ws/",
        'SetEnvIf Request_URI "^/ws/" wsops_ws',
        '\\"%m %U %H\\"',
        "CustomLog /var/log/apache2/wsops-ws.log wsops_ws env=wsops_ws",
        "LimitRequestFieldSize 8190",
        "/etc/letsencrypt/live/chat.example.com/fullchain.pem",
    ]:
        assert needle in site, needle
    assert "Listen" not in site  # ports 80 and 443: the stock config listens there
    assert "SSLUseStapling" not in site


def test_apache_ports_modern_profile_and_upstreams():
    site, _ = wsdeploy("apache", "--domain", "a.example.com", "--tls-profile", "modern",
                       "--http-port", "8080", "--https-port", "8443", "--ocsp",
                       "--upstream", "127.0.0.1:9000", "--upstream", "[::1]:9001",
                       "--ws-path", "/live.v2/")
    assert "Listen 8080\nListen 8443" in site and "<VirtualHost *:8443>" in site
    assert "https://%{SERVER_NAME}:8443%{REQUEST_URI}" in site
    assert "SSLProtocol -all +TLSv1.3" in site and "SSLCipherSuite" not in site
    assert "SSLUseStapling On" in site
    assert 'BalancerMember "http://127.0.0.1:9000"' in site
    assert 'BalancerMember "http://[::1]:9001"' in site
    assert 'SetEnvIf Request_URI "^/live\\.v2/" wsops_ws' in site


def test_caddyfile_gets_its_own_certificates_by_default():
    site, _ = wsdeploy("caddy", "--domain", "chat.example.com", "--domain", "www.example.com",
                       "--acme-ca", "https://acme.internal/directory", "--email",
                       "ops@example.com")
    for needle in [
        "\temail ops@example.com",
        "\tacme_ca https://acme.internal/directory",
        "\tadmin localhost:2019",
        "chat.example.com, www.example.com {",
        "\t\tprotocols tls1.2 tls1.3",
        "\t\tciphers TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 ",
        "\t\tcurves x25519 secp256r1 secp384r1",
        '\t\tStrict-Transport-Security "max-age=63072000; includeSubDomains"',
        "\t\t-Server",
        '\t\t\t\trequest>uri regexp "\\?.*$" ""',
        "\t\t\t\trequest>headers>Sec-Websocket-Protocol delete",
        "\t\toutput file /var/log/caddy/wsops-access.log",
        "\treverse_proxy unix//run/daphne/daphne-1.sock unix//run/daphne/daphne-2.sock {",
        "\t\tlb_policy least_conn",
        "\t\tfail_duration 30s",
        "\t\theader_up X-Forwarded-For {remote_host}",
    ]:
        assert needle in site, needle
    assert "letsencrypt" not in site and "http://" not in site.split("}", 1)[1]


def test_caddyfile_with_a_certificate_serves_certbots_webroot():
    site, _ = wsdeploy("caddy", "--domain", "a.example.com", "--cert", "/etc/c.pem", "--key",
                       "/etc/k.pem", "--https-port", "8443", "--tls-profile", "modern",
                       "--upstream", "127.0.0.1:9000")
    assert "\ttls /etc/c.pem /etc/k.pem {" in site
    assert "http://a.example.com {" in site and "\t\troot * /var/www/letsencrypt" in site
    assert "\t\tredir https://{host}:8443{uri} 301" in site
    assert "\t\tprotocols tls1.3 tls1.3" in site and "ciphers" not in site
    assert "\treverse_proxy 127.0.0.1:9000 {" in site


def test_caddy_gets_no_wildcard_without_a_certificate():
    with pytest.raises(CommandError, match="Caddy's automatic HTTPS cannot validate") as error:
        wsdeploy("caddy", "--domain", "*.example.com")
    assert error.value.returncode == 2
    site, _ = wsdeploy("caddy", "--domain", "*.example.com", "--cert", "/etc/c.pem", "--key",
                       "/etc/k.pem")
    assert "*.example.com {" in site


def test_cert_and_key_go_together():
    with pytest.raises(CommandError, match="--cert and --key go together") as error:
        wsdeploy("caddy", "--domain", "a.example.com", "--cert", "/etc/c.pem")
    assert error.value.returncode == 2


@pytest.mark.parametrize(("server", "site", "certbot"), [
    ("apache", "apache/a.example.com.conf", True),
    ("caddy", "caddy/Caddyfile", False),
    ("nginx", "nginx/a.example.com.conf", True),
])
def test_all_renders_the_chosen_front_end(tmp_path, server, site, certbot):
    wsdeploy("all", "--server", server, "--domain", "a.example.com", "--output", str(tmp_path))
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert site in written and "systemd/daphne@.service" in written and "DEPLOY.md" in written
    assert ("certbot/commands.sh" in written) is certbot
    assert len([p for p in written if p.startswith(("nginx/", "apache/", "caddy/"))]) == 1
    guide = (tmp_path / "DEPLOY.md").read_text()
    assert site in guide
    if server == "apache":
        hook = (tmp_path / "certbot" / "deploy-hook.sh").read_text()
        assert "apachectl" in hook and "systemctl reload apache2" in hook and "nginx" not in hook
        assert "wsops-reload-apache.sh" in guide


def test_caddy_with_a_certificate_gets_certbot_files_reloading_caddy(tmp_path):
    wsdeploy("all", "--server", "caddy", "--domain", "a.example.com", "--cert", "/etc/c.pem",
             "--key", "/etc/k.pem", "--output", str(tmp_path))
    hook = (tmp_path / "certbot" / "deploy-hook.sh").read_text()
    assert "systemctl reload caddy" in hook and "nginx" not in hook


@pytest.mark.parametrize(("args", "option"), [
    (["all", "--server", "lighttpd"], "--web-server"),
    (["caddy", "--acme-ca", "ftp://acme.example/dir"], "--acme-ca"),
    (["caddy", "--caddy-admin", "0.0.0.0:2019"], "--caddy-admin"),
    (["caddy", "--caddy-admin", "localhost:2019 { }"], "--caddy-admin"),
    (["certbot", "--apache-conf", "/etc/apache2/a.conf; id"], "--apache-conf"),
    (["apache", "--ws-path", "/ws/ balancer://evil/"], "--ws-path"),
    (["apache", "--upstream", 'unix:/run/d.sock|http://x" upgrade=none'], "--upstream"),
])
def test_bad_values_are_one_line_exit_2(args, option):
    with pytest.raises(CommandError) as error:
        wsdeploy(*args, "--domain", "a.example.com")
    assert error.value.returncode == 2 and option in str(error.value)
    assert "\n" not in str(error.value)


# Every option that reaches the Apache site or the Caddyfile, with hostile fragments: exit 2,
# or a file whose lines have the same directives and word counts as with the harmless value.
REACHING = ["--domain", "--upstream", "--socket-dir", "--ws-path", "--cert", "--key",
            "--static-root", "--acme-webroot", "--log-dir", "--name", "--email", "--acme-ca",
            "--caddy-admin", "--hsts-seconds"]


def line_shape(text: str) -> list[tuple[str, int]]:
    shape = []
    for line in text.splitlines():
        words = line.split()
        if words and not words[0].startswith("#"):
            shape.append((words[0], len(words)))
    return shape


def render_front(server, flag, value):
    extra = ["--cert", "/etc/c.pem", "--key", "/etc/k.pem"] if flag in ("--cert", "--key") \
        else []
    out = io.StringIO()
    call_command("wsdeploy", server, "--domain", "a.example.com", *extra, f"{flag}={value}",
                 stdout=out, stderr=io.StringIO())
    return out.getvalue()


CADDY_ONLY = {"--acme-ca", "--caddy-admin"}


@pytest.mark.parametrize(("server", "flag"), [
    *(("apache", flag) for flag in REACHING if flag not in CADDY_ONLY),
    *(("caddy", flag) for flag in REACHING)])
def test_hostile_values_exit_2_or_stay_data(server, flag):
    baseline = line_shape(render_front(server, flag, BENIGN.get(flag, "600")))
    for fragment in HOSTILE:
        try:
            text = render_front(server, flag, BENIGN.get(flag, "600") + fragment)
        except CommandError as error:
            assert error.returncode == 2 and flag in str(error), (flag, fragment, str(error))
            continue
        assert flag in QUOTED and fragment not in CONTROL, (server, flag, fragment)
        assert line_shape(text) == baseline, (server, flag, fragment)
        assert not re.search(r"[{}\"'\s]", BENIGN[flag] + fragment), (flag, fragment)


# --- the servers' own checks --------------------------------------------------------------

COMBINATIONS = list(itertools.product(["intermediate", "modern"], [1, 3], ["unix", "tcp"]))


def upstream_args(workers, upstream):
    if upstream == "unix":
        return ["--workers", str(workers)]
    return [arg for n in range(workers) for arg in ("--upstream", f"127.0.0.1:{9000 + n}")]


@pytest.mark.parametrize(("profile", "workers", "upstream"), COMBINATIONS)
def test_every_combination_passes_apachectl_t(profile, workers, upstream):
    require_tool("apachectl")
    _, err = wsdeploy("apache", "--domain", "a.example.com", "--tls-profile", profile,
                      "--static-root", "/srv/static", *upstream_args(workers, upstream),
                      "--check")
    assert "apachectl -t: configuration OK" in err


@pytest.mark.parametrize(("profile", "workers", "upstream"), COMBINATIONS)
@pytest.mark.parametrize("cert", [True, False])
def test_every_combination_passes_caddy_validate(profile, workers, upstream, cert):
    require_tool("caddy")
    certs = ["--cert", "/etc/wsops-missing/c.pem", "--key", "/etc/wsops-missing/k.pem"] \
        if cert else []
    _, err = wsdeploy("caddy", "--domain", "a.example.com", "--tls-profile", profile, *certs,
                      *upstream_args(workers, upstream), "--check")
    assert "caddy validate: configuration OK" in err
    assert ("throwaway certificate" in err) is cert


@pytest.mark.parametrize(("server", "tool", "broken", "expected"), [
    ("apache", "apachectl", "<VirtualHost *:{{ https_port }}>\nBogusDirective on\n"
     "</VirtualHost>\n",
     "apachectl -t failed: AH00526: Syntax error on line 2 of <check>/site.conf:"),
    ("caddy", "caddy", "localhost:{{ https_port }} {\n\tbogus_directive on\n}\n",
     "caddy validate failed: Error: <check>/Caddyfile:2: unrecognized directive: "
     "bogus_directive"),
])
def test_check_reports_the_servers_error_line(tmp_path, server, tool, broken, expected):
    require_tool(tool)
    template = tmp_path / "broken"
    template.write_text(broken)
    err = io.StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("wsdeploy", server, "--domain", "a.example.com", "--template",
                     str(template), "--check", stdout=io.StringIO(), stderr=err)
    assert exit_info.value.code == 1
    assert expected in err.getvalue(), err.getvalue()
