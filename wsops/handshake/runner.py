"""Running handshake steps: one runner for the stack and for every middleware alone.

A step is ``async check(handshake, scope) -> None`` that raises ``Refused``.
``run()`` parses the ``Handshake`` once (or finds the one an outer wsops
middleware parsed), gives the application a scope without secrets and with
``scope["wsops"]`` set, answers the ``wsops`` subprotocol, runs the steps in
order, turns a ``Refused`` into the response (``refusal.answer``), releases
any cap slots a step took before the refusal, and keeps an admitted socket in
this worker's registry (``wsops.connections``) while the application runs.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from ..connections import serve_registered
from ..scope import Application, Receive, Scope, Send, require_websocket
from .admission import release
from .refusal import Refused, answer
from .state import Handshake, handshake_of
from .transports import SUBPROTOCOL, Credential, strip_secrets

# Credentials kept aside while non-wsops layers run, for a wsops step further in; gone
# with the handshake, and never reachable from the scope.
_held: weakref.WeakKeyDictionary[Handshake, Credential] = weakref.WeakKeyDictionary()


class Step:
    """One handshake check. Run alone (``Step(inner)``), it is ASGI middleware.

    Each kind of step runs once per handshake, however the middleware are nested: a
    second ``TokenAuthMiddleware`` must not authenticate the socket again (with its
    cookie, after the bans were decided for the token's owner).
    """

    runs_handshake_steps = True  # an outer step leaves the credential to this one
    bit = 0  # this step class's bit in ``Handshake.steps_run``
    _classes = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Step._classes += 1
        cls.bit = 1 << Step._classes

    def __init__(self, inner: Application | None = None) -> None:
        self.inner = inner

    async def check(self, handshake: Handshake, scope: Scope) -> None:
        """Return to admit; raise ``Refused`` to turn the handshake down."""
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        return await run((self,), self.inner, scope, receive, send)


def answering_marker(send: Send) -> Send:
    """Make the accept name the ``wsops`` subprotocol; browsers drop the socket otherwise."""

    async def send_with_subprotocol(message: Any) -> None:
        if message.get("type") == "websocket.accept" and not message.get("subprotocol"):
            message = {**message, "subprotocol": SUBPROTOCOL}
        await send(message)

    return send_with_subprotocol


async def run(steps: Sequence[Step], inner: Application | None, scope: Scope, receive: Receive,
              send: Send) -> Any:
    """Run ``steps``, then ``inner`` (registered, once a step gave it a connection id)."""
    require_websocket(scope, steps[0])
    handshake = handshake_of(scope)
    if handshake is None:
        handshake = Handshake.parse(scope)
        scope = strip_secrets(scope)  # a copy: the server's own scope keeps its headers
        scope["wsops"] = handshake
        if handshake.offers_marker:
            send = answering_marker(send)
    else:  # an outer wsops middleware parsed it, and kept the credential aside
        handshake.credential = handshake.credential or _held.pop(handshake, None)
    registering = handshake.connection_id is None
    try:
        for step in steps:
            if not handshake.steps_run & step.bit:
                handshake.steps_run |= step.bit
                await step.check(handshake, scope)
    except Refused as refused:
        handshake.forget_credential()
        await release(handshake.admission)  # slots a step took before the refusal
        handshake.admission = None
        return await answer(scope, receive, send, refused)
    if not getattr(inner, "runs_handshake_steps", False) and handshake.credential is not None:
        # The application never sees the secret; a wsops step further in (behind
        # Channels' own middleware, or per route) still gets it.
        _held[handshake] = handshake.credential
        handshake.forget_credential()
    if inner is None:
        raise ValueError(f"{type(steps[-1]).__name__} has no inner application to run")
    if registering and handshake.connection_id is not None:
        return await serve_registered(handshake, scope, receive, send, inner)
    return await inner(scope, receive, send)
