"""First-frame login (``TOKEN_TRANSPORTS`` with ``"message"``), as a consumer mixin.

An anonymous socket is accepted and must send ``{"action": "authenticate",
"token": ...}`` within ``AUTH_TIMEOUT``. Until then nothing else is handled: any
other frame, text or binary, closes 4401. ``wsops.auth.login_by_message`` verifies
it and runs the identity admission of the handshake transports; then the consumer
admits the socket as if it had authenticated at the handshake.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .. import auth, codes, signals
from ..conf import get_settings
from ..handshake.refusal import Refused
from ..scope import signed_in_user


class FirstFrameLogin:
    """Needs ``accept()``, ``send_json()``, ``_admit()`` and ``_close_refused()``."""

    _awaiting_login = False
    _login_deadline: asyncio.Task | None = None

    async def _await_login(self) -> bool:
        """Accept an anonymous socket to wait for its login frame, if that transport is on."""
        handshake = self.scope.get("wsops")
        if signed_in_user(self.scope) is not None or handshake is None or \
                handshake.auth_method is not None or \
                "message" not in get_settings().TOKEN_TRANSPORTS:
            return False
        self._awaiting_login = True
        await self.accept()
        self._login_deadline = asyncio.create_task(self._close_unless_logged_in())
        return True

    async def _login(self, text: str | None) -> None:
        """The frame arrived in time, so the deadline stops here; frames sent meanwhile
        wait (Channels handles one message at a time) and are handled once it is done."""
        self._awaiting_login = False
        self._cancel_login_deadline()
        try:
            if text is None:
                raise Refused(codes.UNAUTHENTICATED, signals.AUTH,
                              "expected_authenticate_message", transport="message")
            await auth.login_by_message(self.scope["wsops"], self.scope, text)
        except Refused as refused:
            return await self._close_refused(refused.kind, refused.reason, refused.code,
                                             **refused.extra)
        if not self._closing:  # the client left, or a remote close came, while we waited
            await self.send_json({"type": "authenticated"})
            await self._admit()

    def _cancel_login_deadline(self) -> None:
        if self._login_deadline is not None:
            self._login_deadline.cancel()

    async def _close_unless_logged_in(self) -> None:
        await asyncio.sleep(get_settings().AUTH_TIMEOUT)
        if self._awaiting_login:
            await self._close_refused(signals.AUTH, "auth_timeout", codes.UNAUTHENTICATED)

    # Provided by the consumer:
    scope: dict[str, Any]
    _closing: bool
