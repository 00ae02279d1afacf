"""Parsing a text frame: strict JSON, and the ``action``/``id`` envelope to echo back."""

from __future__ import annotations

import json
import math
from typing import Any

MAX_ECHO_LENGTH = 64  # longest action name or id echoed back (characters or digits)
_ID_BOUND = 10 ** MAX_ECHO_LENGTH  # integer ids have at most MAX_ECHO_LENGTH digits


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _finite(number: str) -> float:
    value = float(number)
    if value in (math.inf, -math.inf):
        raise ValueError(f"{number} overflows a float")
    return value


# Python's json accepts NaN and Infinity, and turns 1e400 into inf: none is a JSON
# number (RFC 8259), a reply would pass them on to clients that cannot parse them,
# and int(inf) raises in a handler. decode() costs what json.loads() does (that is
# the same call on a default decoder); only floats take the extra check.
_decoder = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)


def decode(text: str) -> Any:
    """Strict JSON; raises ValueError (or RecursionError for absurd nesting)."""
    return _decoder.decode(text)


def valid_id(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return len(value) <= MAX_ECHO_LENGTH
    return kind is int and -_ID_BOUND < value < _ID_BOUND


def echoable_action(value: Any) -> str | None:
    return value if type(value) is str and len(value) <= MAX_ECHO_LENGTH else None


def envelope(text: str) -> tuple[str | None, Any]:
    """``(action, id)`` to echo on a frame refused before it was parsed, when readable.

    Only refused frames pay this parse, and a flood closes after
    ``THROTTLE_CLOSE_AFTER`` of them in a row.
    """
    try:
        content = decode(text)
    except (ValueError, RecursionError):
        return None, None
    if type(content) is not dict:
        return None, None
    request_id = content.get("id")
    return echoable_action(content.get("action")), \
        request_id if valid_id(request_id) else None


_separators = (",", ":")


class JsonCodec:
    """Channels' ``decode_json``/``encode_json`` hooks, honoured when a consumer overrides
    them (a ``datetime``, ``Decimal`` or ``UUID`` through a project's own encoder).

    The defaults are wsops' strict decoder and a compact ``json.dumps``; while they are
    not overridden (``_own_decoder``, ``_own_encoder``), frames skip the extra coroutine
    per message.
    """

    _own_decoder = _own_encoder = True  # set per class by ``uses_default_codec``

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        return decode(text_data)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content, separators=_separators)

    async def send_json(self, content: Any, close: bool = False) -> None:
        text = (json.dumps(content, separators=_separators) if self._own_encoder
                else await self.encode_json(content))
        await self.send(text_data=text, close=close)

    @classmethod
    def uses_default_codec(cls) -> None:
        """Record, for a consumer class, whether it kept the default hooks."""
        cls._own_decoder = cls.decode_json.__func__ is JsonCodec.decode_json.__func__
        cls._own_encoder = cls.encode_json.__func__ is JsonCodec.encode_json.__func__
