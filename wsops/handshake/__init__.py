"""The handshake: what a connection presents, the steps that judge it, and one runner.

- ``state``: ``Handshake``, parsed once per connection and published as
  ``scope["wsops"]``; ``TokenInfo``.
- ``transports``: where a credential may come from (subprotocol, header, query).
- ``admission``: the bans, rates and caps a connection must pass, written once.
- ``refusal``: ``Refused``, the one exception a step raises, and ``answer()``,
  the one place that turns it into the response.
- ``runner``: ``Step`` and ``run()``, used by ``SecureWebsocketStack`` and by each
  middleware of ``wsops.middleware`` run alone.
"""

from .refusal import Refused
from .state import Handshake, TokenInfo, handshake_of

__all__ = ["Handshake", "Refused", "TokenInfo", "handshake_of"]
