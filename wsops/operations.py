"""What operators read and do on the live Redis state: ``wsratelimit`` and the admin pages.

Both name identities the same way (``ip:1.2.3.4``, ``ip:2001:db8::/48``, ``user:42`` or
``user:USERNAME``, ``token:wst_ab12cd34`` or a shorter unique prefix) and rank the
heaviest identities the same way, so the admin shows what ``wsratelimit top`` prints.
Reads use ``wsops.limits.operators.snapshot`` (SCAN, never KEYS).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from . import tokens
from .limits import operators
from .limits.operators import Identity


def resolve_identity(text: str) -> Identity:
    """Parse an identity and resolve user names and short token prefixes; ValueError if not."""
    identity = operators.parse_identity(text)
    if identity.kind == "user" and not identity.id.isdigit():
        model = get_user_model()
        try:
            user = model._default_manager.get_by_natural_key(identity.id)
        except model.DoesNotExist:
            raise ValueError(f"unknown user {identity.id!r}")
        return Identity("user", str(user.pk))
    if identity.kind == "token" and len(identity.id) != 12:
        matches = [token.prefix for token in tokens.find(identity.id)]
        if len(matches) != 1:
            raise ValueError(f"token prefix {identity.id!r} matches {len(matches)} tokens; "
                             "give the 12-character prefix shown by 'wstokens list'")
        return Identity("token", matches[0])
    return identity


def heaviest(client: Any, scope: str | None, limit: int, progress: Any = None,
             max_keys: int | None = None) -> list[dict[str, Any]]:
    """The identities nearest their limits: the largest share of any rate or cap used.

    Each row: ``identity``, ``load`` (0..1), ``scopes`` (``{scope: "used/limit"}``) and
    ``connections`` (live sockets). ``max_keys`` bounds the keys read per kind.
    """
    return rank(operators.snapshot(client, bucket=scope, progress=progress, limit=max_keys),
                limit)


def rank(data: dict[str, list[dict[str, Any]]], limit: int) -> list[dict[str, Any]]:
    """The ``limit`` heaviest identities of an ``operators.snapshot``."""
    load: dict[str, dict[str, Any]] = {}

    def entry(kind: str, ident: str) -> dict[str, Any]:
        key = f"{kind}:{ident}"
        return load.setdefault(key, {"identity": key, "load": 0.0, "scopes": {},
                                     "connections": 0})

    for counter in data["counters"]:
        row = entry(counter["kind"], counter["id"])
        row["scopes"][counter["scope"]] = f"{counter['used']}/{counter['limit']}"
        row["load"] = max(row["load"], counter["used"] / counter["limit"])
    for live in data["connections"]:
        row = entry(live["kind"], live["id"])
        row["connections"] = live["live"]
        if live["cap"]:
            row["load"] = max(row["load"], live["live"] / live["cap"])
    ranked = sorted(load.values(), key=lambda e: (-e["load"], -e["connections"]))
    return ranked[:limit]
