"""The values a deploy template sees: command options, then settings, then defaults.

TLS profiles follow Mozilla's Server Side TLS guidelines 6.0: "intermediate"
(TLS 1.2 + 1.3, ECDHE AEAD ciphers only: DHE was dropped, so no dhparam) and
"modern" (TLS 1.3 only). Version-dependent directives are chosen from the
nginx version: ``http2 on`` from 1.25.1 (``listen ... ssl http2`` before),
``ssl_session_tickets off`` only before 1.23.2 (later versions rotate ticket
keys themselves).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings

from ..conf import get_settings

INTERMEDIATE_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
])
PROFILES = {
    "intermediate": {"protocols": "TLSv1.2 TLSv1.3", "ciphers": INTERMEDIATE_CIPHERS,
                     "curves": "X25519:prime256v1:secp384r1"},
    "modern": {"protocols": "TLSv1.3", "ciphers": "", "curves": "X25519:prime256v1:secp384r1"},
}
HOSTNAME_RE = re.compile(
    r"(\*\.)?(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*"
    r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE)
DAPHNE_PING_INTERVAL = 20
DAPHNE_PING_TIMEOUT = 30


class DeployError(ValueError):
    """A bad option; the message says which and what is allowed."""


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
    name: str = "wsops"
    # daphne / systemd
    project_dir: str = "/srv/app"
    venv: str = "/srv/app/.venv"
    user: str = "www-data"
    group: str = "www-data"
    asgi_application: str = ""
    settings_module: str = ""
    writable_paths: list[str] = field(default_factory=list)
    # certbot
    email: str = ""
    deploy_hook: str = "/etc/letsencrypt/renewal-hooks/deploy/wsops-reload-nginx.sh"

    def template_values(self) -> dict[str, Any]:
        values = asdict(self)
        profile = PROFILES[self.profile]
        version = self.nginx_version
        values.update(
            tls=profile,
            http2_directive=version >= (1, 25, 1),
            session_tickets_off=version < (1, 23, 2),
            primary_domain=self.domains[0],
            server_names=" ".join(self.domains),
            redirect_port="" if self.https_port == 443 else f":{self.https_port}",
            hsts=f"max-age={self.hsts_seconds}; includeSubDomains"
                 + ("; preload" if self.hsts_preload else ""),
            proxy_read_timeout=DAPHNE_PING_INTERVAL + DAPHNE_PING_TIMEOUT + 10,
            ping_interval=DAPHNE_PING_INTERVAL,
            ping_timeout=DAPHNE_PING_TIMEOUT,
            upstream_name=re.sub(r"\W", "_", self.name) + "_daphne",
            zone_prefix=re.sub(r"\W", "_", self.name),
            limit_req_rate=(f"{self.connect_rate[0]}r/{self.connect_rate[1]}"
                            if self.connect_rate else ""),
            limit_req_burst=self.connect_burst,
            worker_numbers=list(range(1, self.workers + 1)),
            daphne_bin=f"{self.venv}/bin/daphne",
            unit_prefix="daphne",
            nginx_version_text=".".join(map(str, version)),
        )
        return values


def _nginx_rate(count: int, period: float) -> tuple[int, str]:
    """nginx rates are per second or per minute only: convert, rounding up."""
    per_minute = count * 60 / period
    if per_minute >= 60 and per_minute % 60 == 0:
        return int(per_minute // 60), "s"
    return max(1, int(-(-per_minute // 1))), "m"


def default_domains() -> list[str]:
    return [h for h in settings.ALLOWED_HOSTS if h and "*" not in h and not h.startswith(".")
            and h not in ("localhost", "127.0.0.1", "[::1]")]


def validate_domain(domain: str, *, webroot: bool) -> str:
    domain = domain.strip().lower().rstrip(".")
    if not HOSTNAME_RE.fullmatch(domain):
        raise DeployError(f"invalid domain {domain!r}: expected a host name like app.example.com")
    if webroot and domain.startswith("*."):
        raise DeployError(f"{domain!r} is a wildcard: certbot's webroot (HTTP-01) method cannot "
                          "validate wildcards; use a DNS-01 plugin, or list the host names")
    return domain


def unix_upstreams(workers: int, socket_dir: str) -> list[str]:
    return [f"unix:{socket_dir}/daphne-{n}.sock" for n in range(1, workers + 1)]


def validate_upstream(value: str) -> str:
    if value.startswith("unix:/"):
        return value
    match = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})", value)
    if not match or not 0 < int(match.group(2)) < 65536:
        raise DeployError(f"invalid upstream {value!r}: expected host:port or unix:/path.sock")
    return value


def build(options: dict[str, Any], *, webroot: bool = True) -> DeployContext:
    """Resolve every value: an option when given, else settings, else the default."""
    conf = get_settings()
    workers = 2 if options.get("workers") is None else options["workers"]
    if workers < 1 or workers > 64:
        raise DeployError(f"--workers {workers}: expected a number of daphne workers from 1 to 64")
    profile = options.get("tls_profile") or "intermediate"
    if profile not in PROFILES:
        raise DeployError(f"unknown --tls-profile {profile!r}: expected intermediate or modern")
    domains = [validate_domain(d, webroot=webroot)
               for d in (options.get("domain") or default_domains())]
    if not domains:
        raise DeployError("no domain: pass --domain app.example.com (ALLOWED_HOSTS has no "
                          "host name without wildcards)")
    socket_dir = options.get("socket_dir") or "/run/daphne"
    upstreams = [validate_upstream(u) for u in (options.get("upstream") or [])]
    ws_paths = options.get("ws_path") or ["/ws/"]
    for path in ws_paths:
        if not re.fullmatch(r"/[A-Za-z0-9._~/-]*", path):
            raise DeployError(f"invalid --ws-path {path!r}: expected a URL path like /ws/")
    hsts = options.get("hsts_seconds")
    hsts = 63072000 if hsts is None else hsts
    if hsts < 0:
        raise DeployError("--hsts-seconds must not be negative")
    for port_option in ("http_port", "https_port"):
        port = options.get(port_option)
        if port is not None and not 0 < port < 65536:
            raise DeployError(f"--{port_option.replace('_', '-')} {port}: expected 1-65535")
    connect = conf.rate("connect")
    static_root = options.get("static_root") or str(getattr(settings, "STATIC_ROOT", "") or "")
    context = DeployContext(
        domains=domains,
        upstreams=upstreams or unix_upstreams(workers, socket_dir),
        ws_paths=ws_paths,
        profile=profile,
        cert=options.get("cert") or f"/etc/letsencrypt/live/{domains[0]}/fullchain.pem",
        key=options.get("key") or f"/etc/letsencrypt/live/{domains[0]}/privkey.pem",
        hsts_seconds=hsts,
        hsts_preload=bool(options.get("hsts_preload")),
        static_root=static_root,
        static_url="/" + str(getattr(settings, "STATIC_URL", "static/")).strip("/") + "/",
        acme_webroot=options.get("acme_webroot") or "/var/www/letsencrypt",
        http_port=options.get("http_port") or 80,
        https_port=options.get("https_port") or 443,
        log_dir=options.get("log_dir") or "/var/log/nginx",
        ocsp_stapling=bool(options.get("ocsp")),
        workers=len(upstreams) if upstreams else workers,
        socket_dir=socket_dir,
        max_message_bytes=conf.MAX_MESSAGE_BYTES,
        # nginx refuses limit_conn values of 65536 and more
        max_connections_per_ip=min(conf.MAX_CONNECTIONS_PER_IP, 65535)
        if conf.MAX_CONNECTIONS_PER_IP else None,
        connect_rate=_nginx_rate(connect.count, connect.period) if connect else None,
        connect_burst=connect.count if connect else 0,
        name=options.get("name") or "wsops",
        project_dir=options.get("project_dir") or str(getattr(settings, "BASE_DIR", "/srv/app")),
        venv=options.get("venv") or "/srv/app/.venv",
        user=options.get("user") or "www-data",
        group=options.get("group") or "www-data",
        asgi_application=options.get("asgi") or _asgi_target(),
        settings_module=options.get("settings_module") or _settings_module(),
        writable_paths=[str(p) for p in options.get("writable_path") or []],
        email=options.get("email") or "",
    )
    if options.get("nginx_version"):
        context.nginx_version = options["nginx_version"]
    return context


def _asgi_target() -> str:
    """``chatproject.asgi.application`` -> ``chatproject.asgi:application`` (daphne's form)."""
    dotted = getattr(settings, "ASGI_APPLICATION", "") or "project.asgi.application"
    module, _, attribute = dotted.rpartition(".")
    return f"{module}:{attribute}"


def _settings_module() -> str:
    import os

    return os.environ.get("DJANGO_SETTINGS_MODULE", "")
