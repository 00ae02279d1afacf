"""``manage.py wsdeploy``: nginx, Apache or Caddy, daphne (systemd), certbot, Prometheus and
Grafana configs.

Every value is text here and checked in ``wsops.deploy.validate`` (through
``context.build``), not by argparse types: a bad value is one line naming the
option and exit status 2, whether it is a hostile path or a mistyped number.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from wsops.deploy import apache, caddy, nginx, output, templates, validate
from wsops.deploy import context as deploy_context
from wsops.deploy.context import DeployContext, DeployError
from wsops.management.base import WsopsCommand

FILES = {
    "nginx": "nginx-site.conf",
    "apache": "apache-site.conf",
    "caddy": "Caddyfile",
    "daphne": "daphne@.service",
    "target": "daphne.target",
    "metrics_unit": "daphne-metrics.service",
    "prometheus": "prometheus.yml",
    "alerts": "prometheus-alerts.yml",
    "grafana": "grafana-dashboard.json",
    "hook": "certbot-deploy-hook.sh",
    "certbot": "certbot-commands.sh",
    "deploy": "DEPLOY.md",
}


# Each front end's --check: its checker, and the command it runs (for messages).
CHECKS = {"nginx": (nginx.check, "nginx -t"), "apache": (apache.check, "apachectl -t"),
          "caddy": (caddy.check, "caddy validate")}
# Where `all` writes each front end's file (under --output), and its name.
SITE_FILES = {"nginx": "nginx/{lineage}.conf", "apache": "apache/{lineage}.conf",
              "caddy": "caddy/Caddyfile"}


def _caddy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--acme-ca", help="Caddy: ACME directory URL to get certificates "
                                          "from (default Let's Encrypt, then ZeroSSL).")
    parser.add_argument("--caddy-admin", help="Caddy's admin endpoint, used by `caddy "
                                              "reload` (default localhost:2019; 'off').")


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    site = common.add_argument_group("site")
    site.add_argument("--domain", action="append",
                      help="Host name (repeat for several). Default: ALLOWED_HOSTS without "
                           "wildcards.")
    site.add_argument("--workers", help="Number of daphne workers (default 2).")
    site.add_argument("--upstream", action="append",
                      help="host:port or unix:/path.sock of a daphne worker (repeat); default: "
                           "unix sockets of --workers local workers.")
    site.add_argument("--socket-dir", help="Directory of the workers' unix sockets "
                                           "(default /run/daphne).")
    site.add_argument("--ws-path", action="append",
                      help="URL prefix of the WebSocket routes (repeat; default /ws/).")
    site.add_argument("--tls-profile", metavar="{" + ",".join(sorted(deploy_context.PROFILES))
                      + "}", help="Mozilla TLS profile (default intermediate).")
    site.add_argument("--cert", help="Certificate chain (default: certbot's fullchain.pem "
                                     "for the first domain).")
    site.add_argument("--key", help="Private key (default: certbot's privkey.pem).")
    site.add_argument("--hsts-seconds", help="HSTS max-age (default two years).")
    site.add_argument("--hsts-preload", action="store_true", help="Add HSTS preload.")
    site.add_argument("--static-root", help="Serve STATIC_URL from here (default STATIC_ROOT).")
    site.add_argument("--acme-webroot", help="ACME challenge webroot "
                                             "(default /var/www/letsencrypt).")
    site.add_argument("--http-port", help="Plain HTTP port (default 80).")
    site.add_argument("--https-port", help="TLS port (default 443).")
    site.add_argument("--log-dir", help="Log directory (default /var/log/nginx, "
                                        "/var/log/apache2 or /var/log/caddy).")
    site.add_argument("--ocsp", action="store_true",
                      help="OCSP stapling (off by default: Let's Encrypt ended OCSP).")
    site.add_argument("--nginx-version",
                      help="Target nginx version (default: the installed one, else 1.22.1).")
    site.add_argument("--name", help="Name used for nginx zones and logs (default wsops).")
    site.add_argument("--ipv6-prefix",
                      help="Key IPv6 clients of limit_conn/limit_req by this prefix length, "
                           "rounded down to whole bytes (default WSOPS['IPV6_PREFIX'], 64).")
    units = common.add_argument_group("daphne / systemd")
    units.add_argument("--project-dir", help="WorkingDirectory (default BASE_DIR).")
    units.add_argument("--venv", help="Virtualenv holding daphne (default: the running "
                                      "virtualenv).")
    units.add_argument("--user", help="Unix user of the workers (default www-data).")
    units.add_argument("--group", help="Unix group, shared with nginx (default www-data).")
    units.add_argument("--asgi", help="module:attribute (default from ASGI_APPLICATION).")
    units.add_argument("--django-settings", dest="settings_module",
                       help="DJANGO_SETTINGS_MODULE of the workers (default: the current one).")
    units.add_argument("--writable-path", action="append",
                       help="A path the workers may write (ReadWritePaths; repeat). SQLite "
                            "databases' folders and MEDIA_ROOT are added from settings.")
    watch = common.add_argument_group("metrics")
    watch.add_argument("--metrics-dir",
                       help="PROMETHEUS_MULTIPROC_DIR of the workers, under /run/ (default "
                            "/run/daphne-metrics; emptied whenever they start as a group).")
    watch.add_argument("--metrics-path",
                       help="URL path Prometheus scrapes, where wsops.urls' metrics is mounted "
                            "(default /ws/metrics).")
    watch.add_argument("--max-sockets",
                       help="Open sockets the host is sized for: the alert fires at 90%% "
                            "(default 10000 per worker).")
    acme = common.add_argument_group("certbot")
    acme.add_argument("--email", help="ACME account email.")
    acme.add_argument("--deploy-hook", help="Where the deploy hook is installed.")
    acme.add_argument("--nginx-conf", help="nginx.conf the hook tests and reloads "
                                           "(default: nginx's own).")
    acme.add_argument("--apache-conf", help="Apache config the hook tests and reloads with "
                                            "-f (default: apachectl's own).")
    acme.add_argument("--reload-command", help="Replace the hook's reload command.")
    out = common.add_argument_group("output")
    out.add_argument("--output", help="Write here (a directory for 'all') instead of stdout.")
    out.add_argument("--force", action="store_true", help="Replace existing files.")
    out.add_argument("--diff", action="store_true",
                     help="Show a unified diff against --output and write nothing.")
    out.add_argument("--template", help="Render this template file instead of the built-in.")
    return common


class Command(WsopsCommand):
    help = (
        "Render production configs from deploy_templates/ (override them in your templates "
        "dir as wsops/<name>): an nginx or Apache site or a Caddyfile with Mozilla TLS, "
        "systemd units for daphne workers, certbot commands and deploy hook."
    )

    def add_arguments(self, parser):
        common = _common_options()
        sub = self.add_subcommands(parser)
        for server, text in (("nginx", "The nginx site."),
                             ("apache", "An Apache 2.4 site (mod_ssl, mod_proxy_http)."),
                             ("caddy", "A Caddyfile (automatic HTTPS unless --cert).")):
            site = sub.add_parser(server, parents=[common], help=text)
            site.add_argument("--check", action="store_true",
                              help=f"Run `{CHECKS[server][1]}` on the result in a throwaway "
                                   "directory (no root needed).")
            if server == "caddy":
                _caddy_options(site)
        sub.add_parser("daphne", parents=[common],
                       help="systemd units: daphne@.service, daphne.target and "
                            "daphne-metrics.service.")
        scrape = sub.add_parser("prometheus", parents=[common],
                                help="Prometheus scrape config and alert rules.")
        scrape.add_argument("--check", action="store_true",
                            help="Run `promtool check config` (and so the rules) on the result.")
        sub.add_parser("grafana", parents=[common], help="A Grafana dashboard (JSON).")
        certbot = sub.add_parser("certbot", parents=[common],
                                 help="certbot commands and deploy hook.")
        certbot.add_argument("--run", action="store_true",
                             help="Run certbot now (needs the wsops[certbot] extra).")
        certbot.add_argument("--server", dest="acme_server",
                             help="ACME directory URL (default Let's Encrypt).")
        certbot.add_argument("--web-server", metavar="{apache,caddy,nginx}",
                             help="The front end the deploy hook reloads (default nginx).")
        certbot.add_argument("--config-dir", help="certbot --config-dir (default its own).")
        certbot.add_argument("--work-dir", help="certbot --work-dir.")
        certbot.add_argument("--logs-dir", help="certbot --logs-dir.")
        every = sub.add_parser("all", parents=[common],
                               help="Everything, into --output DIR, with a DEPLOY.md.")
        every.add_argument("--server", "--web-server", dest="web_server",
                           metavar="{apache,caddy,nginx}",
                           help="The front end (default nginx). certbot files are rendered "
                                "unless Caddy gets its own certificates.")
        _caddy_options(every)

    def handle(self, *args, subcommand: str, **options: Any):
        if subcommand in CHECKS:
            options["web_server"] = subcommand
        if options.get("nginx_version") is None:
            options["nginx_version"] = nginx.installed_version() or (1, 22, 1)
        try:
            for key in ("output", "template"):
                if options.get(key) is not None:
                    validate.local_path(options[key], f"--{key}")
            # certbot's webroot and Caddy's automatic HTTPS validate names over HTTP (or
            # TLS-ALPN), which cannot prove a wildcard.
            http_validated = subcommand in ("certbot", "all") or (
                subcommand == "caddy" and not options.get("cert"))
            context = deploy_context.build(options, webroot=http_validated,
                                           units=subcommand in ("daphne", "all"))
        except DeployError as error:
            self.fail(str(error))
        getattr(self, "handle_" + subcommand)(context, options)

    # --- rendering ---------------------------------------------------------------------

    def _values(self, context: DeployContext) -> dict[str, Any]:
        values = context.template_values()
        values.update(
            nginx_bin=nginx.find_nginx() or "/usr/sbin/nginx",
            apachectl_bin=apache.find_apachectl() or "apachectl",
            apache_modules_enable=" ".join(apache.ENABLE),
            certbot_command=" ".join(shlex.quote(a) for a in self._certbot_args(context)),
        )
        return values

    def _render(self, key: str, context: DeployContext, options: dict[str, Any]) -> str:
        try:
            return templates.render(FILES[key], self._values(context), options.get("template"))
        except OSError as error:
            self.fail(f"cannot read template: {error}")

    def _emit(self, files: dict[Path, str], options: dict[str, Any],
              executable: set[Path] = frozenset()) -> None:
        if options.get("diff"):
            for path, text in files.items():
                self.stdout.write(output.diff(path, text) or f"{path}: no changes", ending="")
            return
        try:
            output.write_all(files, force=options["force"],
                             mode_for={p: 0o755 for p in executable})
        except output.OutputError as error:
            self.fail(str(error))
        except OSError as error:
            self.fail(f"cannot write {error.filename or 'the output'}: {error.strerror}")
        for path in files:
            self.stderr.write(f"wrote {path}")

    def _single(self, key: str, context: DeployContext, options: dict[str, Any],
                default_name: str) -> str:
        text = self._render(key, context, options)
        if options.get("output"):
            path = Path(options["output"])
            if path.is_dir():
                path = path / default_name
            self._emit({path: text}, options, executable={path} if key == "hook" else set())
        elif options.get("diff"):
            self.fail("--diff compares with --output PATH: give the path of the installed file")
        else:
            self.stdout.write(text, ending="")
        return text

    # --- subcommands -------------------------------------------------------------------

    def _site(self, server: str, context: DeployContext, options: dict[str, Any]) -> None:
        """One front end's file, then (``--check``) its own checker on a trial copy."""
        default_name = "Caddyfile" if server == "caddy" else f"{context.lineage}.conf"
        self._single(server, context, options, default_name)
        if options.get("check"):
            checker, label = CHECKS[server]
            result = checker(context, lambda trial: self._render(server, trial, options))
            for note in result.notes:
                self.stderr.write(f"note: {note}")
            if not result.ok:
                self.stderr.write(f"{label} failed: {result.error_line or result.output}")
                sys.exit(1)
            self.stderr.write(f"{label}: configuration OK")

    def handle_nginx(self, context: DeployContext, options: dict[str, Any]) -> None:
        self._site("nginx", context, options)

    def handle_apache(self, context: DeployContext, options: dict[str, Any]) -> None:
        self._site("apache", context, options)

    def handle_caddy(self, context: DeployContext, options: dict[str, Any]) -> None:
        self._site("caddy", context, options)

    def handle_daphne(self, context: DeployContext, options: dict[str, Any]) -> None:
        self._several({"daphne@.service": self._render("daphne", context, options),
                       "daphne.target": self._render("target", context, options),
                       "daphne-metrics.service": self._render("metrics_unit", context, options)},
                      options)

    def _several(self, files: dict[str, str], options: dict[str, Any]) -> None:
        """Write ``files`` into the directory --output, or print them one after the other."""
        if options.get("output"):
            directory = Path(options["output"])
            self._emit({directory / name: text for name, text in files.items()}, options)
        else:
            self.stdout.write("\n".join(f"# ==> {name} <==\n{text}"
                                        for name, text in files.items()), ending="")

    def _monitoring(self, context: DeployContext, options: dict[str, Any]) -> dict[str, str]:
        """The Prometheus config and rules, and the Grafana dashboard (checked as JSON)."""
        dashboard = self._render("grafana", context, options)
        try:
            json.loads(dashboard)
        except ValueError as error:
            self.fail(f"the Grafana dashboard template does not render as JSON: {error}")
        return {"wsops-prometheus.yml": self._render("prometheus", context, options),
                "wsops-alerts.yml": self._render("alerts", context, options),
                "wsops-dashboard.json": dashboard}

    def handle_prometheus(self, context: DeployContext, options: dict[str, Any]) -> None:
        files = self._monitoring(context, options)
        del files["wsops-dashboard.json"]
        if options.get("check"):
            self._promtool(files)
        self._several(files, options)

    def _promtool(self, files: dict[str, str]) -> None:
        binary = shutil.which("promtool")
        if binary is None:
            self.fail("promtool is not installed (Debian: apt-get install prometheus)")
        with tempfile.TemporaryDirectory(prefix="wsops-promtool-") as scratch:
            for name, text in files.items():
                (Path(scratch) / name).write_text(text)
            result = subprocess.run([binary, "check", "config", "wsops-prometheus.yml"],
                                    cwd=scratch, capture_output=True, text=True)
        if result.returncode != 0:
            self.stderr.write((result.stdout + result.stderr).strip())
            self.stderr.write("promtool check config: FAILED")
            sys.exit(1)
        self.stderr.write("promtool check config: SUCCESS (scrape config and alert rules)")

    def handle_grafana(self, context: DeployContext, options: dict[str, Any]) -> None:
        dashboard = self._monitoring(context, options)["wsops-dashboard.json"]
        if options.get("output"):
            path = Path(options["output"])
            if path.is_dir():
                path = path / "wsops-dashboard.json"
            self._emit({path: dashboard}, options)
        else:
            self.stdout.write(dashboard, ending="")

    @staticmethod
    def _certbot_args(context: DeployContext) -> list[str]:
        args = ["certbot", "certonly", "--webroot", "-w", context.acme_webroot]
        for domain in context.domains:
            args += ["-d", domain]
        args += ["--deploy-hook", context.deploy_hook, "--non-interactive", "--agree-tos"]
        args += ["--email", context.email] if context.email else \
            ["--register-unsafely-without-email"]
        for flag, value in (("--server", context.acme_server), ("--config-dir",
                            context.config_dir), ("--work-dir", context.work_dir),
                            ("--logs-dir", context.logs_dir)):
            if value:
                args += [flag, value]
        return args

    def handle_certbot(self, context: DeployContext, options: dict[str, Any]) -> None:
        hook_text = self._render("hook", context, options)
        if options.get("run"):
            return self._run_certbot(context, options, hook_text)
        commands = self._render("certbot", context, options)
        if options.get("output"):
            directory = Path(options["output"])
            self._emit({directory / "commands.sh": commands, directory / "deploy-hook.sh":
                        hook_text}, options,
                       executable={directory / "commands.sh", directory / "deploy-hook.sh"})
        else:
            self.stdout.write(f"# ==> commands.sh <==\n{commands}\n"
                              f"# ==> deploy-hook.sh (install at {context.deploy_hook}) "
                              f"<==\n{hook_text}", ending="")

    def _run_certbot(self, context: DeployContext, options: dict[str, Any],
                     hook_text: str) -> None:
        binary = shutil.which("certbot") or (
            str(Path(sys.executable).parent / "certbot")
            if (Path(sys.executable).parent / "certbot").exists() else None)
        if binary is None:
            self.fail("certbot is not installed: pip install 'wsops[certbot]' "
                      "(or your distribution's certbot package)")
        hook = Path(context.deploy_hook)
        if not (hook.exists() and hook.read_text() == hook_text):
            self._emit({hook: hook_text}, {**options, "diff": False}, executable={hook})
        Path(context.acme_webroot).mkdir(parents=True, exist_ok=True)
        command = [binary, *self._certbot_args(context)[1:]]
        self.stderr.write("running: " + " ".join(shlex.quote(a) for a in command))
        result = subprocess.run(command, capture_output=True, text=True)
        self.stdout.write(result.stdout, ending="")
        if result.returncode != 0:
            self.stderr.write(result.stderr)
            self.stderr.write(f"certbot failed with exit status {result.returncode}")
            sys.exit(1)

    def handle_all(self, context: DeployContext, options: dict[str, Any]) -> None:
        if not options.get("output"):
            self.fail("'all' writes several files: give --output DIRECTORY")
        if options.get("template"):
            self.fail("--template applies to one file: use it with nginx, apache, caddy, daphne "
                      "or certbot")
        directory = Path(options["output"])
        if directory.exists() and not directory.is_dir():
            self.fail(f"{directory} is not a directory")
        server = context.web_server
        site = directory / SITE_FILES[server].format(lineage=context.lineage)
        files = {
            site: self._render(server, context, options),
            directory / "systemd" / "daphne@.service": self._render("daphne", context, options),
            directory / "systemd" / "daphne.target": self._render("target", context, options),
            directory / "systemd" / "daphne-metrics.service": self._render("metrics_unit",
                                                                           context, options),
            **{directory / "monitoring" / name: text
               for name, text in self._monitoring(context, options).items()},
        }
        executable: set[Path] = set()
        if context.uses_certbot:
            executable = {directory / "certbot" / "deploy-hook.sh",
                          directory / "certbot" / "commands.sh"}
            files[directory / "certbot" / "deploy-hook.sh"] = self._render("hook", context,
                                                                           options)
            files[directory / "certbot" / "commands.sh"] = self._render("certbot", context,
                                                                        options)
        files[directory / "DEPLOY.md"] = self._render("deploy", context, options)
        self._emit(files, options, executable=executable)
