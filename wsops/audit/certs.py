"""Rules for a deployed certificate chain (e.g. certbot's fullchain.pem) and its key."""

from __future__ import annotations

import datetime
import ipaddress
import itertools
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from .nginx import ConfigError


def load_chain(path: str) -> list[x509.Certificate]:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"{path} holds no PEM certificate")


def load_key(path: str):
    try:
        return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}")
    except (ValueError, TypeError):
        raise ConfigError(f"{path} holds no unencrypted PEM private key")


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def _matches(host: str, name: str) -> bool:
    host, name = host.lower(), name.lower()
    if name.startswith("*."):
        return host.endswith(name[1:]) and host.count(".") == name.count(".")
    return host == name


def _hosts_to_cover() -> list[str]:
    hosts = []
    for host in settings.ALLOWED_HOSTS:
        if host in ("*", "localhost", "testserver") or host.startswith("."):
            continue
        try:
            if ipaddress.ip_address(host.strip("[]")).is_loopback:
                continue
        except ValueError:
            pass
        hosts.append(host)
    return hosts


def _key_problem(public_key) -> str | None:
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size < 2048:
        return f"RSA {public_key.key_size} bits"
    if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.key_size < 256:
        return f"EC {public_key.curve.name}"
    if isinstance(public_key, dsa.DSAPublicKey):
        return "DSA"
    return None


def check(cert_path: str, key_path: str | None = None, expiry_days: int = 21,
          now: datetime.datetime | None = None) -> list[CheckMessage]:
    chain = load_chain(cert_path)
    leaf = chain[0]
    now = now or datetime.datetime.now(datetime.timezone.utc)
    messages: list[CheckMessage] = []
    expires = leaf.not_valid_after_utc
    if expires <= now:
        messages.append(Error(f"{cert_path}: the certificate expired on {expires:%Y-%m-%d}.",
                              hint="Renew it: certbot renew (see wsdeploy certbot).",
                              id="wsops.E201"))
    elif expires - now < datetime.timedelta(days=expiry_days):
        days = (expires - now).days
        messages.append(Warning(f"{cert_path}: the certificate expires in {days} day(s) "
                                f"({expires:%Y-%m-%d}).",
                                hint="Check that renewals run: certbot renew --dry-run.",
                                id="wsops.W201"))
    if leaf.not_valid_before_utc > now:
        messages.append(Error(f"{cert_path}: the certificate is not valid before "
                              f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M}.",
                              hint="Check the clock of this machine and of the issuer.",
                              id="wsops.E205"))
    names = _names(leaf)
    uncovered = [h for h in _hosts_to_cover() if not any(_matches(h, n) for n in names)]
    if uncovered:
        messages.append(Error(f"{cert_path}: the certificate ({', '.join(names) or 'no names'}) "
                              f"does not cover ALLOWED_HOSTS {', '.join(uncovered)}.",
                              hint="Issue it for every host: wsdeploy certbot --domain ...",
                              id="wsops.E202"))
    if problem := _key_problem(leaf.public_key()):
        messages.append(Error(f"{cert_path}: weak key ({problem}).",
                              hint="Use ECDSA P-256 or RSA 2048+ (certbot's defaults).",
                              id="wsops.E203"))
    messages.extend(_check_chain(cert_path, chain))
    if key_path:
        key = load_key(key_path)
        if key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo) != \
                leaf.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo):
            messages.append(Error(f"{key_path} is not the private key of {cert_path}.",
                                  hint="Use the privkey.pem issued with this certificate.",
                                  id="wsops.E204"))
    return messages


def _check_chain(cert_path: str, chain: list[x509.Certificate]) -> list[CheckMessage]:
    for child, parent in itertools.pairwise(chain):
        try:
            child.verify_directly_issued_by(parent)
        except Exception:  # InvalidSignature, or keys of different types
            return [Warning(f"{cert_path}: {child.subject.rfc4514_string()} is not signed by "
                            f"the next certificate in the file.",
                            hint="Serve fullchain.pem (leaf first, then intermediates).",
                            id="wsops.W202")]
    leaf = chain[0]
    if len(chain) == 1 and leaf.issuer != leaf.subject:
        return [Warning(f"{cert_path} holds only the leaf certificate, issued by "
                        f"{leaf.issuer.rfc4514_string()}: clients that lack that intermediate "
                        "fail to connect.",
                        hint="Serve certbot's fullchain.pem, not cert.pem.", id="wsops.W202")]
    return []
