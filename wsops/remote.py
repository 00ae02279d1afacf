"""Closing live sockets on every worker, through the channel layer.

``SecureJsonWebsocketConsumer`` joins ``wsops.user.<id>``, ``wsops.token.<prefix>``
and ``wsops.ip.<address>``; a ``wsops.disconnect`` event sent to such a group
closes every matching socket, whichever worker holds it.
"""

from __future__ import annotations

from channels.layers import get_channel_layer

from . import codes, signals


def ip_group(address: str) -> str:
    return "wsops.ip." + address.replace(":", "-").replace("%", "-")


def ident_group(kind: str, ident: str) -> str:
    """The group of an ``ip``/``user``/``token`` identity."""
    return ip_group(ident) if kind == "ip" else f"wsops.{kind}.{ident}"


async def disconnect_groups(groups: list[str], *, reason: str,
                            code: int = codes.UNAUTHENTICATED,
                            kind: str = signals.AUTH) -> str | None:
    """Send the disconnect event to each group; return an error text, or None on success."""
    layer = get_channel_layer()
    if layer is None:
        return "no channel layer is configured (CHANNEL_LAYERS)"
    event = {"type": "wsops.disconnect", "code": code, "reason": reason, "kind": kind}
    try:
        for group in groups:
            await layer.group_send(group, event)
    except Exception as error:  # any layer failure is reported to the operator
        return f"{type(error).__name__}: {error}"
    return None
