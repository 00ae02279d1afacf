"""One check per kind of value that ``wsdeploy`` writes into a generated file.

Every value ends up in a file some other program parses: nginx (``;``, ``{}``,
quotes, ``$variables``, ``#`` comments), systemd (one setting per line, ``%``
specifiers, ``$VAR`` expansion in ``ExecStart=``) or ``sh`` (every metacharacter).
A value is treated as hostile: ``--acme-webroot '/x; id'`` must not run ``id``
from the certbot script, ``--name`` with a newline must not add a line to a
unit, ``--upstream 'unix:/s; } server {'`` must not open an nginx block.

So each check is an allow-list for its target syntax and returns the value in
the form the templates write (ports as ints, domains in IDNA form). Shell
templates quote on top of that (the ``shquote`` filter), so a value that is
fine for nginx or systemd but special to ``sh`` stays data.

Each function takes ``(value, option)`` and raises :class:`DeployError` with one
line naming ``option`` (an option such as ``--venv``, or the setting the value
came from, such as ``MEDIA_ROOT``); the command turns it into exit status 2.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

try:  # installed with daphne (twisted -> hyperlink): IDNA 2008 with UTS 46 mapping
    import idna
except ImportError:  # pragma: no cover - then the standard library's IDNA 2003 codec
    idna = None


class DeployError(ValueError):
    """A bad option or setting; the message names it and says what is allowed."""


# Labels of letters, digits and hyphens; an optional "*." in front (checked by the caller).
HOSTNAME_RE = re.compile(
    r"(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*"
    r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Absolute paths of word characters (any script) and . _ - + , = @ ~ only: nothing nginx,
# systemd or sh treat specially (no whitespace, quotes, ;{}$#%\ or control characters).
PATH_RE = re.compile(r"/|(/[\w.+,=@~-]+)+/?")
# URL path prefixes for nginx `location` (RFC 3986 unreserved characters and slashes).
URL_PATH_RE = re.compile(r"/[A-Za-z0-9._~/-]*")
# Portable user and group names (POSIX/shadow-utils), or a numeric id.
ACCOUNT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}|[0-9]{1,10}")
# Also an nginx variable and PCRE group name once "-" becomes "_": a letter first.
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
MODULE_RE = re.compile(rf"{IDENTIFIER}(\.{IDENTIFIER})*")
ASGI_RE = re.compile(rf"{IDENTIFIER}(\.{IDENTIFIER})*:{IDENTIFIER}(\.{IDENTIFIER})*")
EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]{1,64}@(.+)")
URL_RE = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!&()*+,;=%-]+")  # RFC 3986, without quotes or $
VERSION_RE = re.compile(r"(\d{1,4})\.(\d{1,4})(?:\.(\d{1,4}))?")
UNIX_SOCKET_MAX = 107  # sun_path is 108 bytes with the terminating NUL


def _fail(option: str, value: Any, expected: str) -> DeployError:
    # repr() escapes newlines, NUL and unicode line separators: the message stays one line.
    return DeployError(f"invalid {option} {value!r}: expected {expected}")


def _text(value: Any, option: str, expected: str) -> str:
    if not isinstance(value, str):
        raise _fail(option, value, expected)
    return value


def integer(value: Any, option: str, low: int, high: int) -> int:
    """A whole number in [low, high]; from the command line it arrives as text."""
    expected = f"a whole number from {low} to {high}"
    number = value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,10}", value):
        number = int(value)
    if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
        raise _fail(option, value, expected)
    return number


def port(value: Any, option: str) -> int:
    return integer(value, option, 1, 65535)


def choice(value: Any, option: str, choices: list[str]) -> str:
    if value not in choices:
        raise _fail(option, value, "one of " + ", ".join(choices))
    return value


def version(value: Any, option: str) -> tuple[int, int, int]:
    """An nginx version, ``1.22`` or ``1.22.1``."""
    if isinstance(value, tuple) and len(value) == 3 and all(isinstance(v, int) for v in value):
        return value
    match = VERSION_RE.fullmatch(_text(value, option, "a version like 1.22.1"))
    if not match:
        raise _fail(option, value, "a version like 1.22.1")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def hostname(value: Any, option: str, *, wildcard: bool = False) -> str:
    """A DNS name (IDNA names become their xn-- form), lower case, no trailing dot."""
    expected = "a host name like app.example.com" + (" or *.example.com" if wildcard else "")
    name = _text(value, option, expected).rstrip(".")
    star = wildcard and name.startswith("*.")
    if star:
        name = name[2:]
    if not name.isascii():
        name = _idna(name, option, value, expected)
    name = name.lower()
    if not HOSTNAME_RE.fullmatch(name):
        raise _fail(option, value, expected)
    return ("*." if star else "") + name


def _idna(name: str, option: str, original: Any, expected: str) -> str:
    """Unicode host names in their ASCII (xn--) form, as nginx and certificates need them."""
    try:
        if idna is not None:
            return idna.encode(name, uts46=True).decode("ascii")
        return name.encode("idna").decode("ascii")
    except (UnicodeError, ValueError):  # idna.IDNAError is a UnicodeError
        raise _fail(option, original, expected)


def domain(value: Any, option: str, *, webroot: bool) -> str:
    """A certificate/server name; HTTP-01 (the webroot method) cannot validate wildcards."""
    name = hostname(value, option, wildcard=True)
    if webroot and name.startswith("*."):
        raise DeployError(f"{option} {name!r} is a wildcard: certbot's webroot (HTTP-01) "
                          "method and Caddy's automatic HTTPS cannot validate wildcards; use a "
                          "DNS-01 plugin, or list the host names")
    return name


def absolute_path(value: Any, option: str) -> str:
    """A path nginx, systemd and sh read literally without quoting."""
    expected = ("a normalized absolute path of letters, digits and ._-+,=@~ (no whitespace, "
                "quotes, control characters or ;{}$#%\\)")
    text = _text(os.fspath(value) if isinstance(value, os.PathLike) else value, option,
                 expected)
    # normalized too: systemd refuses "." and ".." in paths such as RuntimeDirectory=
    if not PATH_RE.fullmatch(text) or len(text) > 4095 or {".", ".."} & set(text.split("/")):
        raise _fail(option, value, expected)
    return text


def local_path(value: Any, option: str) -> str:
    """A file this command reads or writes (relative allowed): one printable line."""
    expected = "a file path without control characters"
    text = _text(value, option, expected)
    if not text or "\x00" in text or not text.isprintable():
        raise _fail(option, value, expected)
    return text


def url_path(value: Any, option: str) -> str:
    """A URL path prefix for an nginx ``location``, like ``/ws/``."""
    text = _text(value, option, "a URL path like /ws/")
    if not URL_PATH_RE.fullmatch(text):
        raise _fail(option, value, "a URL path like /ws/")
    return text


def upstream(value: Any, option: str) -> str:
    """``unix:/absolute/path.sock`` or ``host:port`` (``[v6]:port`` for IPv6 addresses)."""
    expected = "host:port, [ipv6]:port or unix:/absolute/path.sock"
    text = _text(value, option, expected)
    if text.startswith("unix:"):
        path = text[5:]
        if not PATH_RE.fullmatch(path) or path.endswith("/"):
            raise _fail(option, value, "unix:/absolute/path.sock (letters, digits and "
                                       "._-+,=@~; no whitespace, quotes or ;{}$#%\\)")
        if len(path.encode()) > UNIX_SOCKET_MAX:
            raise _fail(option, value, f"a socket path of at most {UNIX_SOCKET_MAX} bytes")
        return text
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise _fail(option, value, expected)
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _fail(option, value, expected)
    else:
        try:
            hostname(host, option)
        except DeployError:
            raise _fail(option, value, expected)
    port(port_text, option)
    return text


def socket_dir(value: Any, option: str) -> str:
    """A directory for ``daphne-N.sock``: short enough for unix socket addresses."""
    path = absolute_path(value, option).rstrip("/") or "/"
    if len(f"{path}/daphne-64.sock".encode()) > UNIX_SOCKET_MAX:
        raise _fail(option, value, f"a directory path short enough for socket paths of at "
                                   f"most {UNIX_SOCKET_MAX} bytes")
    return path


def runtime_dir(value: Any, option: str) -> str:
    """A directory under ``/run/`` (systemd's ``RuntimeDirectory=`` creates and removes it)."""
    path = absolute_path(value, option).rstrip("/")
    if not path.startswith("/run/"):
        raise _fail(option, value, "a directory under /run/, such as /run/daphne-metrics")
    return path


def _matching(pattern: re.Pattern[str], expected: str, doc: str) -> Callable[[Any, str], str]:
    """A check that the whole value matches ``pattern``, else exit 2 saying ``expected``."""

    def check(value: Any, option: str) -> str:
        text = _text(value, option, "")
        if not pattern.fullmatch(text):
            raise _fail(option, value, expected)
        return text

    check.__doc__ = doc
    return check


name = _matching(NAME_RE, "1-64 letters, digits, _ or -, starting with a letter",
                 "A short name used in nginx zone names, log file names and unit descriptions.")
account = _matching(ACCOUNT_RE, "a user or group name like www-data (letters, digits, _.-) "
                    "or a numeric id",
                    "A Unix user or group name (systemd ``User=``/``Group=``) or a numeric id.")
python_module = _matching(MODULE_RE, "a dotted module path like project.settings",
                          "A dotted Python module path such as ``chatproject.settings``.")
asgi_target = _matching(ASGI_RE, "module:attribute like project.asgi:application",
                        "daphne's application argument, ``module.path:attribute``.")


def email(value: Any, option: str) -> str:
    """An ACME account address: a plain local part and a host name."""
    text = _text(value, option, "")
    match = EMAIL_RE.fullmatch(text)
    if not match:
        raise _fail(option, value, "an email address like ops@example.com")
    try:
        hostname(match.group(1), option)
    except DeployError:
        raise _fail(option, value, "an email address like ops@example.com")
    return text


def url(value: Any, option: str) -> str:
    """An http(s) URL such as an ACME directory."""
    expected = "an http(s) URL like https://acme.example/directory"
    text = _text(value, option, expected)
    if not URL_RE.fullmatch(text):
        raise _fail(option, value, expected)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _fail(option, value, expected)
    return text


def caddy_admin(value: Any, option: str) -> str:
    """Caddy's admin endpoint: ``off``, a loopback ``host:port`` or ``unix//path``."""
    expected = "off, localhost:PORT, 127.0.0.1:PORT, [::1]:PORT or unix//absolute/path"
    text = _text(value, option, expected)
    if text == "off":
        return text
    if text.startswith("unix//"):
        absolute_path(text[5:], option)
        return text
    host, sep, port_text = text.rpartition(":")
    if not sep or host not in ("localhost", "127.0.0.1", "[::1]"):
        raise _fail(option, value, expected)
    port(port_text, option)
    return text


def command_line(value: Any, option: str) -> str:
    """A shell command, on one line; the templates pass it to ``sh -c`` in quotes."""
    text = _text(value, option, "")
    if not text.strip() or not text.isprintable():
        raise _fail(option, value, "a command on one line, without control characters")
    return text
