"""Known-vulnerable versions of the WebSocket stack (rule ``wsops.E010``).

The table is data, shipped in the package (``advisories.json`` beside this
module) so that updating it is a one-file change reviewed like code: each entry
names the advisory, the PyPI package, the affected PEP 440 ranges, the first
fixed release of each range, a level and one line on the class of bug, plus
where the range was checked. ``wssecure check --advisories PATH`` reads a newer
table in the same format instead, without upgrading wsops.

Installed versions come from the distribution metadata of this environment (what
the workers import), not from requirement files. Pre-releases are compared as
versions (``22.4.0rc1`` is a fixed Twisted), which is why ``packaging`` does the
comparing rather than a tuple of ints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from django.core.checks import CheckMessage, Error, Warning
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

SHIPPED = Path(__file__).with_name("advisories.json")
LEVELS = {"error": Error, "warning": Warning}
FIELDS = ("id", "package", "affected", "fixed", "level", "summary", "source")


class TableError(ValueError):
    """The advisory table cannot be read or an entry is malformed (a usage error)."""


@dataclass(frozen=True)
class Advisory:
    id: str
    package: str
    affected: tuple[SpecifierSet, ...]
    fixed: tuple[str, ...]
    level: str
    summary: str
    source: str

    def affects(self, version: str) -> bool:
        try:
            parsed = Version(version)
        except InvalidVersion:
            return False  # a local build we cannot place: say nothing rather than guess
        return any(spec.contains(parsed, prereleases=True) for spec in self.affected)


def _advisory(entry: Any, where: str) -> Advisory:
    if not isinstance(entry, dict) or set(entry) != set(FIELDS):
        raise TableError(f"{where}: an entry needs exactly the fields {', '.join(FIELDS)}")
    name = f"{where}: {entry['id']}"
    if entry["level"] not in LEVELS:
        raise TableError(f"{name}: level must be one of {', '.join(LEVELS)}")
    try:
        affected = tuple(SpecifierSet(spec) for spec in entry["affected"])
        fixed = tuple(str(Version(v)) for v in entry["fixed"])
    except (InvalidSpecifier, InvalidVersion, TypeError) as error:
        raise TableError(f"{name}: {error}") from None
    advisory = Advisory(entry["id"], entry["package"], affected, fixed, entry["level"],
                        entry["summary"], entry["source"])
    if not affected or any(advisory.affects(v) for v in fixed):
        raise TableError(f"{name}: a fixed version lies in an affected range (or none given)")
    return advisory


def load(path: str | Path = SHIPPED) -> list[Advisory]:
    """The advisories in ``path``; ``TableError`` names what is wrong with it."""
    try:
        data = json.loads(Path(path).read_text())
        entries = data["advisories"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise TableError(f"cannot read the advisory table {path}: {error}") from None
    return [_advisory(entry, str(path)) for entry in entries]


def installed_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def check(advisories: list[Advisory] | None = None) -> list[CheckMessage]:
    """One finding per advisory that affects an installed package."""
    messages: list[CheckMessage] = []
    for advisory in load() if advisories is None else advisories:
        version = installed_version(advisory.package)
        if version is None or not advisory.affects(version):
            continue
        messages.append(LEVELS[advisory.level](
            f"{advisory.package} {version} is affected by {advisory.id}: {advisory.summary}.",
            hint=f"Upgrade {advisory.package} to {' / '.join(advisory.fixed)} or later "
                 f"(the fixed release of your line).",
            id="wsops.E010" if advisory.level == "error" else "wsops.W016"))
    return messages
