"""wsdeploy: rendering, options, overrides, bad input, and `nginx -t` on every combination."""

import io
import itertools
import subprocess

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.conftest import require_tool

pytestmark = pytest.mark.django_db


def wsdeploy(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("wsdeploy", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_nginx_site_has_every_required_block():
    site, _ = wsdeploy("nginx", "--domain", "chat.example.com", "--domain", "www.example.com",
                       "--nginx-version", "1.22.1")
    for needle in [
        "server_name chat.example.com www.example.com;",
        "location ^~ /.well-known/acme-challenge/",
        "return 301 https://$host$request_uri;",
        "listen 443 ssl http2 default_server;",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "ssl_session_tickets off;",
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_buffering off;",
        "proxy_read_timeout 60s;",
        "server_tokens off;",
        'add_header Strict-Transport-Security "max-age=63072000; includeSubDomains" always;',
        "limit_conn wsops_conn 500;",  # MAX_CONNECTIONS_PER_IP of tests.settings
        "limit_req zone=wsops_connect burst=1000 nodelay;",
        "/etc/letsencrypt/live/chat.example.com/fullchain.pem",
        "server unix:/run/daphne/daphne-1.sock;",
        "server unix:/run/daphne/daphne-2.sock;",
        '"$request_method $uri $server_protocol"',
    ]:
        assert needle in site, needle
    assert "$proxy_add_x_forwarded_for" not in site and "$request_uri $server" not in site
    assert "dhparam" not in site and "ssl_stapling" not in site


def test_version_dependent_directives_and_modern_profile():
    site, _ = wsdeploy("nginx", "--domain", "a.example.com", "--nginx-version", "1.26.0",
                       "--tls-profile", "modern", "--hsts-preload", "--ocsp")
    assert "http2 on;" in site and "listen 443 ssl default_server;" in site
    assert "ssl_protocols TLSv1.3;" in site and "ssl_ciphers" not in site
    assert "ssl_session_tickets" not in site
    assert "includeSubDomains; preload" in site and "ssl_stapling on;" in site


def test_defaults_come_from_settings(settings):
    settings.ALLOWED_HOSTS = ["*.example.com", ".example.net", "chat.example.com"]
    settings.WSOPS = {**settings.WSOPS, "MAX_CONNECTIONS_PER_IP": 7, "RATES": {"connect": "30/m"}}
    site, _ = wsdeploy("nginx")
    assert "server_name chat.example.com;" in site
    assert "limit_conn wsops_conn 7;" in site and "rate=30r/m" in site


def test_huge_connection_cap_is_clamped_for_nginx(settings):
    settings.WSOPS = {**settings.WSOPS, "MAX_CONNECTIONS_PER_IP": 1_000_000}
    _, err = wsdeploy("nginx", "--domain", "a.example.com", "--check")
    assert "configuration OK" in err


def test_upstreams_and_paths():
    site, _ = wsdeploy("nginx", "--domain", "a.example.com", "--upstream", "10.0.0.5:8001",
                       "--upstream", "10.0.0.6:8001", "--ws-path", "/ws/", "--ws-path", "/live/")
    assert "server 10.0.0.5:8001;" in site and "server 10.0.0.6:8001;" in site
    assert "location /ws/ {" in site and "location /live/ {" in site


def test_daphne_units_match_settings(settings):
    settings.WSOPS = {**settings.WSOPS, "MAX_MESSAGE_BYTES": 32768}
    units, _ = wsdeploy("daphne", "--domain", "a.example.com", "--workers", "3")
    for needle in ["--proxy-headers", "--websocket-max-message-size 32768",
                   "--websocket-max-frame-size 32768", "--unix-socket /run/daphne/daphne-%i.sock",
                   "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                   "PrivateTmp=yes", "User=www-data", "RuntimeDirectory=daphne",
                   "Wants=daphne@1.service daphne@2.service daphne@3.service",
                   "chatproject.asgi:application", "KillSignal=SIGTERM"]:
        assert needle in units, needle


def test_systemd_units_verify(tmp_path):
    analyze = require_tool("systemd-analyze")
    import sys
    from pathlib import Path

    venv = Path(sys.executable).parent.parent
    wsdeploy("daphne", "--domain", "a.example.com", "--venv", str(venv), "--user", "root",
             "--group", "root", "--output", str(tmp_path))
    (tmp_path / "daphne@1.service").symlink_to(tmp_path / "daphne@.service")
    (tmp_path / "daphne@2.service").symlink_to(tmp_path / "daphne@.service")
    result = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / "daphne@1.service"),
                             str(tmp_path / "daphne@2.service"), str(tmp_path / "daphne.target")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_certbot_commands_and_hook():
    out, _ = wsdeploy("certbot", "--domain", "a.example.com", "--domain", "b.example.com",
                      "--email", "ops@example.com")
    assert ("certbot certonly --webroot -w /var/www/letsencrypt -d a.example.com "
            "-d b.example.com --deploy-hook") in out
    assert "--email ops@example.com" in out and "certbot renew --dry-run" in out
    assert "nginx -t -q" in out and "systemctl reload nginx" in out


@pytest.mark.parametrize(("args", "message"), [
    (["nginx", "--domain", "not a domain"], "invalid domain"),
    (["nginx", "--domain", "a..example.com"], "invalid domain"),
    (["certbot", "--domain", "*.example.com"], "wildcard"),
    (["nginx", "--domain", "a.example.com", "--workers", "0"], "--workers 0"),
    (["nginx", "--domain", "a.example.com", "--upstream", "nohost"], "invalid upstream"),
    (["nginx", "--domain", "a.example.com", "--ws-path", "ws"], "invalid --ws-path"),
    (["nginx", "--domain", "a.example.com", "--output", "/proc/forbidden/x.conf"], "cannot"),
    (["all", "--domain", "a.example.com"], "--output"),
])
def test_bad_input_is_one_line_exit_2(args, message):
    with pytest.raises(CommandError) as error:
        wsdeploy(*args)
    assert message in str(error.value) and error.value.returncode == 2
    assert "\n" not in str(error.value)


def test_unknown_profile_is_a_usage_error():
    with pytest.raises(CommandError, match="invalid choice"):
        wsdeploy("nginx", "--domain", "a.example.com", "--tls-profile", "old")


def test_all_writes_everything_or_nothing(tmp_path):
    out = tmp_path / "deploy"
    wsdeploy("all", "--domain", "a.example.com", "--output", str(out))
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["DEPLOY.md", "certbot/commands.sh", "certbot/deploy-hook.sh",
                       "nginx/a.example.com.conf", "systemd/daphne.target",
                       "systemd/daphne@.service"]
    assert (out / "certbot/deploy-hook.sh").stat().st_mode & 0o111
    fresh = tmp_path / "partial"
    (fresh / "systemd").mkdir(parents=True)
    (fresh / "systemd" / "daphne.target").write_text("mine")
    with pytest.raises(CommandError, match="exists; use --force"):
        wsdeploy("all", "--domain", "a.example.com", "--output", str(fresh))
    assert [p.name for p in fresh.rglob("*") if p.is_file()] == ["daphne.target"]
    assert (fresh / "systemd" / "daphne.target").read_text() == "mine"
    wsdeploy("all", "--domain", "a.example.com", "--output", str(fresh), "--force")
    assert "daphne@1.service" in (fresh / "systemd" / "daphne.target").read_text()
    assert not list(fresh.rglob(".*"))  # no temporary files left behind


def test_diff_shows_changes_and_writes_nothing(tmp_path):
    path = tmp_path / "site.conf"
    wsdeploy("nginx", "--domain", "a.example.com", "--output", str(path))
    before = path.read_text()
    out, _ = wsdeploy("nginx", "--domain", "a.example.com", "--hsts-seconds", "600",
                      "--output", str(path), "--diff")
    assert "-    add_header Strict-Transport-Security \"max-age=63072000" in out
    assert "+    add_header Strict-Transport-Security \"max-age=600" in out
    assert path.read_text() == before


def test_project_templates_override_and_template_option(settings, tmp_path):
    (tmp_path / "wsops").mkdir()
    (tmp_path / "wsops" / "daphne.target").write_text("# ours: {{ workers }} workers\n")
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [str(tmp_path)]}]
    out, _ = wsdeploy("daphne", "--domain", "a.example.com", "--workers", "4")
    assert "# ours: 4 workers" in out
    custom = tmp_path / "custom.conf"
    custom.write_text("server_name {{ server_names }};\n")
    out, _ = wsdeploy("nginx", "--domain", "a.example.com", "--template", str(custom))
    assert out == "server_name a.example.com;\n"


def test_certbot_run_without_certbot_says_how_to_install(monkeypatch, tmp_path):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    with pytest.raises(CommandError, match=r"pip install 'wsops\[certbot\]'"):
        wsdeploy("certbot", "--domain", "a.example.com", "--run")


COMBINATIONS = list(itertools.product(["intermediate", "modern"], [1, 3], ["unix", "tcp"]))


@pytest.mark.parametrize(("profile", "workers", "upstream"), COMBINATIONS)
def test_every_combination_passes_nginx_t(profile, workers, upstream):
    require_tool("nginx")
    args = ["nginx", "--domain", "a.example.com", "--tls-profile", profile,
            "--workers", str(workers), "--check"]
    if upstream == "tcp":
        for n in range(workers):
            args += ["--upstream", f"127.0.0.1:{9000 + n}"]
    _, err = wsdeploy(*args)
    assert "nginx -t: configuration OK" in err


def test_check_reports_nginx_error_line(tmp_path):
    require_tool("nginx")
    broken = tmp_path / "broken.conf"
    broken.write_text("server { listen {{ https_port }} ssl; bogus_directive on; }\n")
    err = io.StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("wsdeploy", "nginx", "--domain", "a.example.com", "--template",
                     str(broken), "--check", stdout=io.StringIO(), stderr=err)
    assert exit_info.value.code == 1
    assert ('nginx -t failed: [emerg] unknown directive "bogus_directive" in <check>/site.conf:1'
            in err.getvalue())
