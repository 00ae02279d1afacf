"""wsdeploy: rendering, options, overrides, bad input, and `nginx -t` on every combination."""

import io
import itertools
import re
import shutil
import subprocess

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.helpers import require_tool

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
    require_tool("nginx")
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


def systemd_verify(directory):
    """``systemd-analyze verify`` on the template unit (as two instances) and the target."""
    analyze = require_tool("systemd-analyze")
    for n in (1, 2):
        (directory / f"daphne@{n}.service").symlink_to(directory / "daphne@.service")
    return subprocess.run([analyze, "verify", "--man=no", str(directory / "daphne@1.service"),
                           str(directory / "daphne@2.service"), str(directory / "daphne.target"),
                           str(directory / "daphne-metrics.service")],
                          capture_output=True, text=True, timeout=60)


def test_systemd_units_verify(tmp_path):
    import sys
    from pathlib import Path

    venv = Path(sys.executable).parent.parent
    wsdeploy("daphne", "--domain", "a.example.com", "--venv", str(venv), "--user", "root",
             "--group", "root", "--output", str(tmp_path))
    result = systemd_verify(tmp_path)
    assert result.returncode == 0, result.stderr


def test_systemd_units_with_defaults_verify(tmp_path):
    """Issue 13.10: the defaults name a daphne that exists (the running virtualenv's)."""
    require_tool("systemd-analyze")
    wsdeploy("daphne", "--domain", "a.example.com", "--output", str(tmp_path))
    result = systemd_verify(tmp_path)
    assert result.returncode == 0, result.stderr


def test_daphne_defaults_venv_and_writable_settings_paths(settings, tmp_path):
    import sys
    from pathlib import Path

    media = tmp_path / "media"
    settings.MEDIA_ROOT = str(media)
    units, _ = wsdeploy("daphne", "--domain", "a.example.com", "--writable-path", "/srv/extra")
    assert sys.prefix != sys.base_prefix  # the suite runs in a virtualenv
    assert f"ExecStart={sys.prefix}/bin/daphne " in units
    default_db = settings.DATABASES["default"]
    if "sqlite3" in default_db["ENGINE"]:
        assert f"ReadWritePaths={Path(default_db['NAME']).parent}\n" in units
    assert f"ReadWritePaths={media}\n" in units and "ReadWritePaths=/srv/extra\n" in units
    assert "ProtectSystem=strict" in units and "ProtectHome=yes" in units


def test_writable_paths_from_database_settings(monkeypatch):
    from types import SimpleNamespace

    from wsops.deploy import context

    monkeypatch.setattr(context, "settings", SimpleNamespace(MEDIA_ROOT="", DATABASES={
        "files": {"ENGINE": "django.db.backends.sqlite3", "NAME": "var/db/files.sqlite3"},
        "memory": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        "pg": {"ENGINE": "django.db.backends.postgresql", "NAME": "app"},
    }))
    # a relative NAME is relative to WorkingDirectory
    assert context.settings_writable_paths("/srv/p") == ["/srv/p/var/db"]


def test_units_for_a_project_in_a_home_directory_can_read_it():
    units, _ = wsdeploy("daphne", "--domain", "a.example.com", "--venv", "/home/app/venv",
                        "--socket-dir", "/srv/sockets")
    service = units.split("# ==> daphne.target <==")[0]  # the metrics unit has its own
    assert "ProtectHome=read-only" in service
    assert "RuntimeDirectory=" not in service and "ReadWritePaths=/srv/sockets\n" in service


def test_certbot_commands_and_hook():
    out, _ = wsdeploy("certbot", "--domain", "a.example.com", "--domain", "b.example.com",
                      "--email", "ops@example.com")
    assert ("certbot certonly --webroot -w /var/www/letsencrypt -d a.example.com "
            "-d b.example.com --deploy-hook") in out
    assert "--email ops@example.com" in out and "certbot renew --dry-run" in out
    assert "nginx -t -q" in out and "systemctl reload nginx" in out


@pytest.mark.parametrize(("args", "message"), [
    (["nginx", "--domain", "not a domain"], "invalid --domain"),
    (["nginx", "--domain", "a..example.com"], "invalid --domain"),
    (["certbot", "--domain", "*.example.com"], "wildcard"),
    (["nginx", "--domain", "a.example.com", "--workers", "0"], "--workers '0'"),
    (["nginx", "--domain", "a.example.com", "--workers", "many"], "--workers 'many'"),
    (["nginx", "--domain", "a.example.com", "--upstream", "nohost"], "invalid --upstream"),
    (["nginx", "--domain", "a.example.com", "--upstream", "unix:/" + "s" * 120],
     "at most 107 bytes"),
    (["nginx", "--domain", "a.example.com", "--tls-profile", "old"], "one of intermediate"),
    (["nginx", "--domain", "a.example.com", "--nginx-version", "1.x"], "--nginx-version"),
    (["nginx", "--domain", "a.example.com", "--name", "1site"], "starting with a letter"),
    (["nginx", "--domain", "a.example.com", "--ws-path", "ws"], "invalid --ws-path"),
    (["nginx", "--domain", "a.example.com", "--output", "/proc/forbidden/x.conf"], "cannot"),
    (["all", "--domain", "a.example.com"], "--output"),
])
def test_bad_input_is_one_line_exit_2(args, message):
    with pytest.raises(CommandError) as error:
        wsdeploy(*args)
    assert message in str(error.value) and error.value.returncode == 2
    assert "\n" not in str(error.value)


def test_all_writes_everything_or_nothing(tmp_path):
    out = tmp_path / "deploy"
    wsdeploy("all", "--domain", "a.example.com", "--output", str(out))
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["DEPLOY.md", "certbot/commands.sh", "certbot/deploy-hook.sh",
                       "monitoring/wsops-alerts.yml", "monitoring/wsops-dashboard.json",
                       "monitoring/wsops-prometheus.yml", "nginx/a.example.com.conf",
                       "systemd/daphne-metrics.service", "systemd/daphne.target",
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


# --- hostile values (issue 12.9) ----------------------------------------------------------
#
# Every value wsdeploy writes into a file either exits 2 with one line naming the option, or
# the files parse exactly as with a harmless value: the same nginx directive tree (crossplane),
# the same systemd keys, the same shell words (bash -n, and the value only inside quotes).

# A harmless value per option, and the subcommand whose output has every file it reaches.
BENIGN = {
    "--domain": "b.example.com", "--workers": "3", "--upstream": "127.0.0.1:9000",
    "--socket-dir": "/run/daphne2", "--ws-path": "/live/", "--tls-profile": "modern",
    "--cert": "/etc/ssl/c.pem", "--key": "/etc/ssl/k.pem", "--hsts-seconds": "600",
    "--static-root": "/srv/static", "--acme-webroot": "/var/www/acme", "--http-port": "8080",
    "--https-port": "8443", "--log-dir": "/var/log/site", "--nginx-version": "1.26.0",
    "--name": "site", "--ipv6-prefix": "56", "--project-dir": "/srv/p", "--venv": "/srv/v",
    "--user": "deploy", "--group": "web", "--asgi": "site.asgi:application",
    "--django-settings": "site.settings", "--writable-path": "/srv/uploads",
    "--email": "ops@example.com", "--deploy-hook": "/etc/hooks/reload.sh",
    "--nginx-conf": "/etc/nginx/other.conf", "--reload-command": "nginx -s reload",
    "--server": "https://acme.example/dir", "--config-dir": "/etc/le",
    "--work-dir": "/var/lib/le", "--logs-dir": "/var/log/le",
    "--acme-ca": "https://acme.example/dir", "--caddy-admin": "localhost:2020",
    "--apache-conf": "/etc/apache2/other.conf",
}
# The socket directory decides the unit's shape: under /run systemd creates it
# (RuntimeDirectory=), elsewhere the unit lets the workers write it (ReadWritePaths=).
BENIGN_OUTSIDE_RUN = {"--socket-dir": "/srv/sockets"}
# Values that become numbers (or one of two profiles) and choose the files' shape.
CHOSEN_SHAPE = {"--workers", "--http-port", "--https-port", "--hsts-seconds", "--ipv6-prefix",
                "--nginx-version", "--tls-profile"}
CERTBOT_ONLY = {"--server", "--config-dir", "--work-dir", "--logs-dir"}
# Values that are shell code or URLs by nature: `;`, quotes and `$(...)` are allowed there, and
# the scripts carry them inside single quotes. Control characters are refused everywhere.
QUOTED = {"--reload-command", "--server", "--acme-ca"}
CONTROL = ["\n", "\r", "\x00", "\t", "\x0b", "\x1b", "\u0085", "\u2028", "\u2029", "\u200e"]
HOSTILE = [*CONTROL, " ", ";", "{", "}", "'", '"', "$(id)", "`id`", "${HOME}", "#", "%i", "\\",
           "; id > /tmp/p", "\nExecStartPre=/bin/id", "; } server { listen 1; }", "*"]


def render_all(directory, flag, value):
    """``wsdeploy all`` (certbot for certbot-only flags) with one option set; the files."""
    subcommand = "certbot" if flag in CERTBOT_ONLY else "all"
    fixed = [] if flag == "--nginx-version" else ["--nginx-version", "1.22.1"]
    call_command("wsdeploy", subcommand, "--domain", "a.example.com", *fixed, f"{flag}={value}",
                 "--output", str(directory), stdout=io.StringIO(), stderr=io.StringIO())
    return {p.name: p.read_text() for p in directory.rglob("*") if p.is_file()}


def nginx_tree(text, tmp):
    import crossplane

    path = tmp / "parse.conf"
    path.write_text(text)
    payload = crossplane.parse(str(path), check_ctx=False, check_args=False, comments=False,
                               single=True)
    assert payload["status"] == "ok", payload["errors"]

    def shape(directives, parent=""):
        # inside a map the "directive" is the source value (a pattern built from --name)
        return [("<key>" if parent == "map" else d["directive"], len(d["args"]),
                 shape(d.get("block", []), d["directive"])) for d in directives]

    return shape(payload["config"][0]["parsed"])


def unit_keys(text):
    keys, section = [], None
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), line
            section = line
            continue
        assert "=" in line and not line.endswith("\\"), line
        keys.append((section, line.split("=", 1)[0]))
    return keys


def shell_shape(text, value):
    """The script as a sequence of tokens: "W" for a word, the operator itself otherwise;
    the quoted value counts as one word (quoted, ";" is a word but looks like an operator)."""
    import shlex

    lexer = shlex.shlex(text.replace(shlex.quote(value), "VALUE"), posix=True,
                        punctuation_chars=True)
    lexer.whitespace_split = True
    return [token if token and set(token) <= set("();<>|&") else "W" for token in lexer]


def assert_parses_as_intended(files, baseline, flag, value, tmp):
    import shlex

    assert files.keys() == baseline.keys()
    for name, text in files.items():
        if name.endswith(".conf"):
            assert nginx_tree(text, tmp) == nginx_tree(baseline[name], tmp), (flag, value)
            assert text.count("$") == baseline[name].count("$"), (flag, value)
        elif name.endswith((".service", ".target")):
            assert unit_keys(text) == unit_keys(baseline[name]), (flag, value)
            for special in "%$\\":  # specifiers, variable expansion, escapes
                assert text.count(special) == baseline[name].count(special), (flag, value)
        elif name.endswith(".sh"):
            check = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True,
                                   timeout=60)
            assert check.returncode == 0, (flag, value, check.stderr)
            assert shell_shape(text, value) == shell_shape(baseline[name], BENIGN[flag]), \
                (flag, value)
            if value != shlex.quote(value):  # shell-special: only ever inside its quotes
                outside = text.replace(shlex.quote(value), "").count(value)
                template = baseline[name].replace(shlex.quote(BENIGN[flag]), "").count(value)
                assert outside == template, (flag, value)


@pytest.fixture(scope="module")
def baselines(tmp_path_factory, django_db_blocker):
    with django_db_blocker.unblock():
        return {flag: render_all(tmp_path_factory.mktemp("baseline"), flag.split()[0], value)
                for flag, value in [*BENIGN.items(), *((f"{flag} outside /run", value) for
                                                       flag, value in BENIGN_OUTSIDE_RUN.items())]}


def hostile_outcome(flag, value, baselines, tmp):
    """Exit 2 naming the option (True), or files that parse as intended (False)."""
    out = tmp / "out"
    try:
        files = render_all(out, flag, value)
    except CommandError as error:
        assert error.returncode == 2, (flag, value, str(error))
        assert flag in str(error) and "\n" not in str(error), (flag, value, str(error))
        assert not out.exists()  # nothing written
        return True
    if flag in CHOSEN_SHAPE:  # a number or a profile: it may change the shape, not inject
        assert re.fullmatch(r"[0-9.]+|intermediate|modern", value), (flag, value)
        shutil.rmtree(out)
        return False
    key = flag
    if flag in BENIGN_OUTSIDE_RUN and not value.rstrip("/").startswith("/run/"):
        key = f"{flag} outside /run"
    assert_parses_as_intended(files, baselines[key], flag, value, tmp)
    shutil.rmtree(out)
    return False


def test_issue_examples_are_refused(tmp_path):
    """The injections from issue 12.9, each of which used to reach a generated file."""
    cases = [
        ("certbot", "--acme-webroot", "/x; id > /tmp/p"),
        ("certbot", "--nginx-conf", "/etc/nginx/nginx.conf; id"),
        ("certbot", "--deploy-hook", "/etc/hook.sh\nid"),
        ("daphne", "--name", "x\nExecStartPre=/bin/id"),
        ("daphne", "--venv", "/srv/v --proxy-headers=no"),
        ("nginx", "--upstream", "unix:/run/d.sock; } server { listen 1; }"),
        ("nginx", "--log-dir", "/var/log/$host"),
    ]
    for subcommand, flag, value in cases:
        with pytest.raises(CommandError) as error:
            wsdeploy(subcommand, "--domain", "a.example.com", flag, value)
        assert error.value.returncode == 2 and f"invalid {flag} " in str(error.value)
        assert "\n" not in str(error.value)


@pytest.mark.parametrize(("args", "option"), [
    (["daphne", "--name", "x\nExecStartPre=/bin/id"], "--name"),
    (["certbot", "--acme-webroot", "/x; id > /tmp/p"], "--acme-webroot"),
    (["nginx", "--workers", "$(id)"], "--workers"),
])
def test_hostile_value_from_the_command_line_is_one_line_exit_2(args, option, tmp_path):
    """From a shell: status 2, one line on stderr naming the option, no traceback."""
    import os
    import sys

    from tests.helpers import ROOT

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "example")])}
    result = subprocess.run([sys.executable, "manage.py", "wsdeploy", *args, "--domain",
                             "a.example.com", "--output", str(tmp_path / "out")],
                            cwd=ROOT / "example", env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and option in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", sorted(BENIGN))
def test_every_option_refuses_hostile_values(flag, baselines, tmp_path):
    for fragment in HOSTILE:
        refused = hostile_outcome(flag, BENIGN[flag] + fragment, baselines, tmp_path)
        assert refused or (flag in QUOTED and fragment not in CONTROL), (flag, fragment)


def test_quoted_values_stay_one_shell_word(tmp_path):
    hook_dir = tmp_path / "out"
    files = render_all(hook_dir, "--reload-command",
                       "nginx -s reload && touch '/tmp/x y' $(id) `id`")
    assert "sh -c 'nginx -s reload && touch '\"'\"'/tmp/x y'\"'\"' $(id) `id`'\n" in \
        files["deploy-hook.sh"]


def test_idna_domains_become_their_ascii_form():
    site, _ = wsdeploy("nginx", "--domain", "Bücher.example.", "--domain", "*.bücher.example")
    assert "server_name xn--bcher-kva.example *.xn--bcher-kva.example;" in site
    assert "/etc/letsencrypt/live/xn--bcher-kva.example/fullchain.pem" in site


def test_wildcard_first_domain_uses_certbots_lineage_name(tmp_path):
    site, _ = wsdeploy("nginx", "--domain", "*.example.com")
    assert "/etc/letsencrypt/live/example.com/fullchain.pem" in site
    wsdeploy("nginx", "--domain", "*.example.com", "--output", str(tmp_path))
    assert (tmp_path / "example.com.conf").exists()


@pytest.mark.parametrize(("setting", "value", "named"), [
    ("ALLOWED_HOSTS", ["bad host;"], "ALLOWED_HOSTS"),
    ("STATIC_ROOT", "/srv/static; }", "STATIC_ROOT"),
    ("BASE_DIR", "/srv/my app", "BASE_DIR"),
    ("MEDIA_ROOT", "/srv/media\nExecStartPre=/bin/id", "MEDIA_ROOT"),
])
def test_hostile_settings_are_named(settings, setting, value, named):
    setattr(settings, setting, value)
    args = ["daphne"] if setting != "ALLOWED_HOSTS" else ["nginx"]
    with pytest.raises(CommandError) as error:
        wsdeploy(*args, *([] if setting == "ALLOWED_HOSTS" else ["--domain", "a.example.com"]))
    assert error.value.returncode == 2 and named in str(error.value)
    assert "\n" not in str(error.value)


def hostile_text():
    from hypothesis import strategies as st

    # hostile characters, anything, and odd-but-valid text (letters of any script, the
    # punctuation paths may hold) that must render and stay data
    return st.sampled_from(HOSTILE) | st.text(max_size=12) | st.text(
        alphabet=st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Zs", "Po", "Ps", "Pe",
                                           "Sm", "Sc"]), min_size=1, max_size=6) | st.text(
        alphabet=st.characters(categories=["L", "N"]) | st.sampled_from("._-+,=@~/"),
        min_size=1, max_size=8)


@pytest.mark.django_db
def test_hypothesis_hostile_values_exit_2_or_parse_as_intended(baselines, tmp_path_factory):
    from hypothesis import given
    from hypothesis import strategies as st

    outcomes = {True: 0, False: 0}

    @given(flag=st.sampled_from(sorted(BENIGN)), data=st.data())
    def check(flag, data):
        base = BENIGN[flag]
        position = data.draw(st.integers(0, len(base)), label="position")
        fragment = data.draw(hostile_text(), label="fragment")
        value = data.draw(st.sampled_from([base[:position] + fragment + base[position:],
                                           fragment, base + fragment]), label="value")
        outcomes[hostile_outcome(flag, value, baselines, tmp_path_factory.mktemp("hostile"))] \
            += 1

    check()
    assert outcomes[True] and outcomes[False]  # both paths were exercised


# --- nginx logs and limits (issues 12.3 and 12.11) -----------------------------------------


def test_limits_key_ipv6_by_prefix_from_settings(settings):
    site, _ = wsdeploy("nginx", "--domain", "a.example.com")
    assert '"~^(?s)(?<wsops_v6>.{8}).{8}$" 6$wsops_v6;' in site  # the default /64
    assert "limit_conn_zone $wsops_client zone=wsops_conn:10m;" in site
    assert "limit_req_zone $wsops_client zone=wsops_connect:10m" in site
    assert "limit_conn_zone $binary_remote_addr" not in site
    settings.WSOPS = {**settings.WSOPS, "IPV6_PREFIX": 44}
    site, _ = wsdeploy("nginx", "--domain", "a.example.com")
    assert '"~^(?s)(?<wsops_v6>.{5}).{11}$" 6$wsops_v6;' in site
    assert "is /44, not a whole number of" in site and "rounded down to /40" in site
    site, _ = wsdeploy("nginx", "--domain", "a.example.com", "--ipv6-prefix", "128",
                       "--name", "chat-2")
    assert '"~^(?s)(?<chat_2_v6>.{16}).{0}$" 6$chat_2_v6;' in site
    assert "rounded down" not in site


@pytest.mark.parametrize("prefix", ["1", "7", "64", "60", "128"])
def test_every_ipv6_prefix_passes_nginx_t(prefix):
    require_tool("nginx")
    _, err = wsdeploy("nginx", "--domain", "a.example.com", "--ipv6-prefix", prefix, "--check")
    assert "nginx -t: configuration OK" in err


def audit_ids(path):
    from wsops.audit import nginx as audit

    return [m for m in audit.check(str(path), ["/ws/"]) if m.id == "wsops.W103"]


def test_rejections_are_logged_below_the_error_log_level(tmp_path):
    site, _ = wsdeploy("nginx", "--domain", "a.example.com")
    assert site.count("limit_req_log_level info;") == 1 and "limit_req_status 429;" in site
    assert site.count("limit_conn_log_level info;") == 1 and "limit_conn_status 429;" in site
    path = tmp_path / "site.conf"
    path.write_text(site)
    assert audit_ids(path) == []
    # the audit notices when rejections (with their query strings) reach the error log
    path.write_text(site.replace("limit_req_log_level info;", ""))
    [finding] = audit_ids(path)
    assert "limit_req rejections" in finding.msg and "upstream errors" in finding.hint
    main = tmp_path / "nginx.conf"
    main.write_text(f"error_log /var/log/nginx/error.log info;\nevents {{}}\n"
                    f"http {{ include {tmp_path}/site.conf; }}\n")
    path.write_text(site)
    assert {"limit_req", "limit_conn"} == {m.msg.split()[1] for m in audit_ids(main)}
    main.write_text(main.read_text().replace(" info;", " notice;"))
    assert audit_ids(main) == []
