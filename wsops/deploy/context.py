"""The values a deploy template sees: command options, then settings, then defaults.

TLS profiles follow Mozilla's Server Side TLS guidelines 6.0: "intermediate"
(TLS 1.2 + 1.3, ECDHE AEAD ciphers only: DHE was dropped, so no dhparam) and
"modern" (TLS 1.3 only). Version-dependent directives are chosen from the
nginx version: ``http2 on`` from 1.25.1 (``listen ... ssl http2`` before),
``ssl_session_tickets off`` only before 1.23.2 (later versions rotate ticket
keys themselves).

Every value, whether from an option, a setting or a default, passes a check
from ``validate`` before a template sees it (a template writes it into an
nginx, systemd or shell file).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from ..conf import get_settings
from . import validate
from .validate import DeployError

__all__ = ["PROFILES", "DeployContext", "DeployError", "build"]

INTERMEDIATE_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
])
# The same suites under Go's names (Caddy); TLS 1.3 suites are not configurable there.
INTERMEDIATE_CIPHERS_GO = " ".join([
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
])
# Each profile in the syntax of each front end: nginx (protocols, ciphers, curves),
# Apache's mod_ssl (apache_protocols) and Caddy (caddy_protocols: min and max,
# caddy_ciphers, caddy_curves).
PROFILES = {
    "intermediate": {"protocols": "TLSv1.2 TLSv1.3", "ciphers": INTERMEDIATE_CIPHERS,
                     "curves": "X25519:prime256v1:secp384r1",
                     "apache_protocols": "-all +TLSv1.2 +TLSv1.3",
                     "caddy_protocols": "tls1.2 tls1.3", "caddy_ciphers": INTERMEDIATE_CIPHERS_GO,
                     "caddy_curves": "x25519 secp256r1 secp384r1"},
    "modern": {"protocols": "TLSv1.3", "ciphers": "", "curves": "X25519:prime256v1:secp384r1",
               "apache_protocols": "-all +TLSv1.3", "caddy_protocols": "tls1.3 tls1.3",
               "caddy_ciphers": "", "caddy_curves": "x25519 secp256r1 secp384r1"},
}
# The front ends wsdeploy renders for: their default log folder and service name.
WEB_SERVERS = {"nginx": "/var/log/nginx", "apache": "/var/log/apache2", "caddy": "/var/log/caddy"}
DAPHNE_PING_INTERVAL = 20
DAPHNE_PING_TIMEOUT = 30


# Flags whose dest differs from the flag's name.
FLAGS = {"settings_module": "--django-settings", "acme_server": "--server",
         "web_server": "--web-server"}
MAX_WORKERS = 64
MAX_HSTS_SECONDS = 1_000_000_000
# The open-sockets alert's default capacity: 10,000 idle sockets per worker were measured
# at ~40 KiB each (bench/README.md); past that, memory and the event loop decide.
SOCKETS_PER_WORKER = 10_000
MAX_SOCKETS = 100_000_000


@dataclass
class DeployContext:
    domains: list[str]
    upstreams: list[str]
    ws_paths: list[str] = field(default_factory=lambda: ["/ws/"])
    profile: str = "intermediate"
    cert: str = ""
    key: str = ""
    hsts_seconds: int = 63072000
    hsts_preload: bool = False
    static_root: str = ""
    static_url: str = "/static/"
    acme_webroot: str = "/var/www/letsencrypt"
    http_port: int = 80
    https_port: int = 443
    log_dir: str = "/var/log/nginx"
    nginx_version: tuple[int, int, int] = (1, 22, 1)
    ocsp_stapling: bool = False
    workers: int = 2
    socket_dir: str = "/run/daphne"
    max_message_bytes: int = 65536
    max_connections_per_ip: int | None = 100
    connect_rate: tuple[int, str] | None = (1, "s")
    connect_burst: int = 60
    ipv6_prefix: int = 64
    name: str = "wsops"
    web_server: str = "nginx"
    # Caddy: the ACME directory it gets certificates from, its admin endpoint
    acme_ca: str = ""
    caddy_admin: str = "localhost:2019"
    # daphne / systemd
    project_dir: str = "/srv/app"
    venv: str = "/srv/app/.venv"
    user: str = "www-data"
    group: str = "www-data"
    asgi_application: str = ""
    settings_module: str = ""
    writable_paths: list[str] = field(default_factory=list)
    # metrics: Prometheus multiprocess directory, scrape path, sockets the host can hold
    metrics_dir: str = "/run/daphne-metrics"
    metrics_path: str = "/ws/metrics"
    max_sockets: int = 20000
    # certbot
    email: str = ""
    deploy_hook: str = "/etc/letsencrypt/renewal-hooks/deploy/wsops-reload-nginx.sh"
    nginx_conf: str = ""
    apache_conf: str = ""
    reload_command: str = ""
    acme_server: str = ""
    config_dir: str = ""
    work_dir: str = ""
    logs_dir: str = ""

    @property
    def lineage(self) -> str:
        """certbot's name for the certificate: the first domain without a wildcard's "*."."""
        return self.domains[0].removeprefix("*.")

    def protect_home(self) -> str:
        """``yes`` hides /home, /root and /run/user from the workers; ``read-only`` when the
        project, its virtualenv or a writable path lives there (else the unit cannot run)."""
        paths = [self.project_dir, self.venv, self.socket_dir, *self.writable_paths]
        homes = ("/home", "/root", "/run/user")
        inside = any(p == home or p.startswith(home + "/") for p in paths for home in homes)
        return "read-only" if inside else "yes"

    def template_values(self) -> dict[str, Any]:
        values = asdict(self)
        profile = PROFILES[self.profile]
        version = self.nginx_version
        # nginx keys the limits on $binary_remote_addr bytes: an IPv6 prefix that is not a
        # whole number of bytes is rounded down (a shorter prefix: limits at least as wide).
        prefix_bytes = self.ipv6_prefix // 8
        runtime = self.socket_dir.removeprefix("/run/") if self.socket_dir.startswith("/run/") \
            else ""
        zone = re.sub(r"\W", "_", self.name)
        values.update(
            tls=profile,
            http2_directive=version >= (1, 25, 1),
            session_tickets_off=version < (1, 23, 2),
            primary_domain=self.lineage,
            server_names=" ".join(self.domains),
            server_names_comma=", ".join(self.domains),
            redirect_port="" if self.https_port == 443 else f":{self.https_port}",
            hsts=f"max-age={self.hsts_seconds}; includeSubDomains"
                 + ("; preload" if self.hsts_preload else ""),
            proxy_read_timeout=DAPHNE_PING_INTERVAL + DAPHNE_PING_TIMEOUT + 10,
            ping_interval=DAPHNE_PING_INTERVAL,
            ping_timeout=DAPHNE_PING_TIMEOUT,
            upstream_name=zone + "_daphne",
            zone_prefix=zone,
            limit_req_rate=(f"{self.connect_rate[0]}r/{self.connect_rate[1]}"
                            if self.connect_rate else ""),
            limit_req_burst=self.connect_burst,
            ipv6_prefix_bytes=prefix_bytes,
            ipv6_prefix_used=prefix_bytes * 8,
            # 16 bytes (IPv6): capture the prefix; (?s) because address bytes may be "\n".
            ipv6_key_pattern=(f"^(?s)(?<{zone}_v6>.{{{prefix_bytes}}})"
                              f".{{{16 - prefix_bytes}}}$"),
            worker_numbers=list(range(1, self.workers + 1)),
            daphne_bin=f"{self.venv.rstrip('/')}/bin/daphne",
            unit_prefix="daphne",
            # systemd creates (and ProtectSystem=strict leaves writable) /run/<this>.
            runtime_directory=runtime,
            metrics_runtime_directory=self.metrics_dir.removeprefix("/run/"),
            open_sockets_alert=int(self.max_sockets * 0.9),
            protect_home=self.protect_home(),
            nginx_version_text=".".join(map(str, version)),
            apache_members=[apache_member(u) for u in self.upstreams],
            caddy_upstreams=" ".join(caddy_upstream(u) for u in self.upstreams),
            ws_path_patterns=["^" + re.escape(p) for p in self.ws_paths],
            default_ports=(self.http_port, self.https_port) == (80, 443),
            certbot=self.uses_certbot,
        )
        return values

    @property
    def uses_certbot(self) -> bool:
        """Caddy gets its own certificates unless given one; nginx and Apache use certbot."""
        return self.web_server != "caddy" or bool(self.cert)


def apache_member(upstream: str) -> str:
    """mod_proxy's form of an upstream: ``unix:/path|http://localhost`` or ``http://h:p``."""
    return f"{upstream}|http://localhost" if upstream.startswith("unix:") \
        else f"http://{upstream}"


def caddy_upstream(upstream: str) -> str:
    """Caddy's form of an upstream: ``unix//path`` or ``host:port``."""
    return "unix/" + upstream[5:] if upstream.startswith("unix:") else upstream


def _nginx_rate(count: int, period: float) -> tuple[int, str]:
    """nginx rates are per second or per minute only: convert, rounding up."""
    per_minute = count * 60 / period
    if per_minute >= 60 and per_minute % 60 == 0:
        return int(per_minute // 60), "s"
    return max(1, int(-(-per_minute // 1))), "m"


def default_domains() -> list[str]:
    return [h for h in settings.ALLOWED_HOSTS if h and "*" not in h and not h.startswith(".")
            and h not in ("localhost", "127.0.0.1", "[::1]")]


def default_venv() -> str:
    """The running virtualenv (wsdeploy usually runs from the one the workers use); outside
    one, the prefix whose bin/ holds daphne, else the documented /srv/app/.venv."""
    if sys.prefix != sys.base_prefix:
        return sys.prefix
    daphne = shutil.which("daphne")
    return str(Path(daphne).parent.parent) if daphne else "/srv/app/.venv"


def unix_upstreams(workers: int, socket_dir: str) -> list[str]:
    return [f"unix:{socket_dir.rstrip('/')}/daphne-{n}.sock" for n in range(1, workers + 1)]


def _flag(key: str) -> str:
    return FLAGS.get(key, "--" + key.replace("_", "-"))


def _option(options: dict[str, Any], key: str, check: Callable[..., Any],
            default: Any = None, source: str = "", **kwargs: Any) -> Any:
    """The option ``key`` (or ``default``, from ``source``), passed through ``check``.

    Errors name the flag, or ``source`` (a setting) when the value came from there.
    """
    value = options.get(key)
    if value is None:
        if default is None or default == "":
            return default
        return check(default, source or f"{_flag(key)} (default)", **kwargs)
    return check(value, _flag(key), **kwargs)


def _options(options: dict[str, Any], key: str, check: Callable[..., Any],
             **kwargs: Any) -> list[Any]:
    """A repeatable option: every value checked."""
    return [check(value, _flag(key), **kwargs) for value in options.get(key) or []]


def _static(options: dict[str, Any]) -> tuple[str, str]:
    """(root, URL prefix) for nginx to serve, or ("", "") when STATIC_URL is not local."""
    root = _option(options, "static_root", validate.absolute_path,
                   getattr(settings, "STATIC_ROOT", None) or "", "STATIC_ROOT")
    static_url = str(getattr(settings, "STATIC_URL", None) or "static/")
    parts = urlsplit(static_url)
    if not root or parts.scheme or parts.netloc:  # served from elsewhere (a CDN)
        return "", ""
    return root.rstrip("/") or "/", validate.url_path("/" + static_url.strip("/") + "/",
                                                      "STATIC_URL")


def settings_writable_paths(project_dir: str) -> list[str]:
    """Folders the workers write under ProtectSystem=strict: each SQLite database's folder
    (SQLite writes its journal next to the file) and MEDIA_ROOT (uploads)."""
    found: list[str] = []
    for alias, database in getattr(settings, "DATABASES", {}).items():
        name = str(database.get("NAME") or "")
        if "sqlite3" not in database.get("ENGINE", "") or not name or name == ":memory:" \
                or name.startswith("file:"):
            continue
        path = Path(project_dir, name)  # a relative NAME is relative to WorkingDirectory
        found.append(validate.absolute_path(str(path.parent),
                                            f"DATABASES[{alias!r}]['NAME'] (its folder)"))
    media = getattr(settings, "MEDIA_ROOT", None)
    if media:
        found.append(validate.absolute_path(str(Path(project_dir, media)), "MEDIA_ROOT"))
    return found


def build(options: dict[str, Any], *, webroot: bool = True, units: bool = True
          ) -> DeployContext:
    """Resolve and check every value: an option when given, else settings, else the default.

    ``webroot``: certificates come from certbot's webroot method (no wildcards).
    ``units``: systemd units are rendered, so settings only they use are read and checked.
    ``options["web_server"]``: the front end (nginx by default) picks default paths.
    """
    conf = get_settings()
    web_server = _option(options, "web_server", validate.choice, "nginx",
                         choices=sorted(WEB_SERVERS))
    workers = _option(options, "workers", validate.integer, 2, low=1, high=MAX_WORKERS)
    profile = _option(options, "tls_profile", validate.choice, "intermediate",
                      choices=sorted(PROFILES))
    domains = _options(options, "domain", validate.domain, webroot=webroot) or [
        validate.domain(d, "ALLOWED_HOSTS", webroot=webroot) for d in default_domains()]
    if not domains:
        raise DeployError("no domain: pass --domain app.example.com (ALLOWED_HOSTS has no "
                          "host name without wildcards)")
    lineage = domains[0].removeprefix("*.")
    socket_dir = _option(options, "socket_dir", validate.socket_dir, "/run/daphne")
    upstreams = _options(options, "upstream", validate.upstream)
    static_root, static_url = _static(options)
    project_dir = _option(options, "project_dir", validate.absolute_path,
                          str(getattr(settings, "BASE_DIR", "") or "/srv/app"), "BASE_DIR")
    writable = _options(options, "writable_path", validate.absolute_path)
    if units:
        writable += [p for p in settings_writable_paths(project_dir) if p not in writable]
    connect = conf.rate("connect")
    # Caddy gets its own certificates (automatic HTTPS) unless given a pair.
    certbot_live = "" if web_server == "caddy" else f"/etc/letsencrypt/live/{lineage}"
    paths = {key: _option(options, key, validate.absolute_path, default) for key, default in [
        ("cert", certbot_live and f"{certbot_live}/fullchain.pem"),
        ("key", certbot_live and f"{certbot_live}/privkey.pem"),
        ("acme_webroot", "/var/www/letsencrypt"),
        ("log_dir", WEB_SERVERS[web_server]),
        ("venv", default_venv()),
        ("deploy_hook", DeployContext.deploy_hook.replace("nginx", web_server)),
        ("nginx_conf", ""), ("apache_conf", ""), ("config_dir", ""), ("work_dir", ""),
        ("logs_dir", ""),
    ]}
    if bool(paths["cert"]) != bool(paths["key"]):
        raise DeployError("--cert and --key go together: give both (or neither, and Caddy "
                          "gets its own certificate)")
    return DeployContext(
        domains=domains,
        upstreams=upstreams or unix_upstreams(workers, socket_dir),
        ws_paths=_options(options, "ws_path", validate.url_path) or ["/ws/"],
        profile=profile,
        hsts_seconds=_option(options, "hsts_seconds", validate.integer, 63072000, low=0,
                             high=MAX_HSTS_SECONDS),
        hsts_preload=bool(options.get("hsts_preload")),
        static_root=static_root,
        static_url=static_url,
        http_port=_option(options, "http_port", validate.port, 80),
        https_port=_option(options, "https_port", validate.port, 443),
        nginx_version=_option(options, "nginx_version", validate.version, (1, 22, 1)),
        ocsp_stapling=bool(options.get("ocsp")),
        workers=len(upstreams) if upstreams else workers,
        socket_dir=socket_dir,
        max_message_bytes=conf.MAX_MESSAGE_BYTES,
        # nginx refuses limit_conn values of 65536 and more
        max_connections_per_ip=min(conf.MAX_CONNECTIONS_PER_IP, 65535)
        if conf.MAX_CONNECTIONS_PER_IP else None,
        connect_rate=_nginx_rate(connect.count, connect.period) if connect else None,
        connect_burst=connect.count if connect else 0,
        ipv6_prefix=_option(options, "ipv6_prefix", validate.integer, conf.IPV6_PREFIX,
                            "WSOPS['IPV6_PREFIX']", low=1, high=128),
        name=_option(options, "name", validate.name, "wsops"),
        web_server=web_server,
        acme_ca=_option(options, "acme_ca", validate.url, ""),
        caddy_admin=_option(options, "caddy_admin", validate.caddy_admin, "localhost:2019"),
        project_dir=project_dir,
        user=_option(options, "user", validate.account, "www-data"),
        group=_option(options, "group", validate.account, "www-data"),
        asgi_application=_option(options, "asgi", validate.asgi_target, _asgi_target(),
                                 "ASGI_APPLICATION"),
        settings_module=_option(options, "settings_module", validate.python_module,
                                os.environ.get("DJANGO_SETTINGS_MODULE", ""),
                                "DJANGO_SETTINGS_MODULE"),
        writable_paths=writable,
        metrics_dir=_option(options, "metrics_dir", validate.runtime_dir,
                            DeployContext.metrics_dir),
        metrics_path=_option(options, "metrics_path", validate.url_path,
                             DeployContext.metrics_path),
        max_sockets=_option(options, "max_sockets", validate.integer,
                            SOCKETS_PER_WORKER * (len(upstreams) if upstreams else workers),
                            low=1, high=MAX_SOCKETS),
        email=_option(options, "email", validate.email, ""),
        reload_command=_option(options, "reload_command", validate.command_line, ""),
        acme_server=_option(options, "acme_server", validate.url, ""),
        **paths,
    )


def _asgi_target() -> str:
    """``chatproject.asgi.application`` -> ``chatproject.asgi:application`` (daphne's form)."""
    dotted = getattr(settings, "ASGI_APPLICATION", "") or "project.asgi.application"
    module, _, attribute = dotted.rpartition(".")
    return f"{module}:{attribute}"
