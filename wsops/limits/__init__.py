"""Rate limits, connection caps and bans, split by audience.

- ``engine``: what sockets use on their hot path (``Limit``, ``Cap``, ``Decision``,
  GCRA, the ``Limiter`` protocol with its Redis and in-process implementations,
  ``LocalRate`` for per-connection rates).
- ``keys``: every Redis key name, built in Python and passed to the scripts.
- ``operators``: what ``wsratelimit`` and the admin use (bans, SCAN-based views).
- ``admit.lua`` / ``refresh.lua``: the server-side scripts.
"""
