"""wsops: secure WebSocket endpoints of Django Channels projects.

Runtime pieces live in ``wsops.middleware`` and ``wsops.consumers``; the
operator commands are ``wssecure``, ``wstokens``, ``wsdeploy`` and
``wsratelimit``. Settings are one dict, ``WSOPS``, described in ``wsops.conf``.
"""

__version__ = "0.1.0"
