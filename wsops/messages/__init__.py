"""A frame's path through ``SecureJsonWebsocketConsumer``, one module per step.

    size cap and per-connection rate (guard) -> parse (parsing) -> action lookup
    -> shared and per-action rates (rates) -> permission (wsops.permissions)
    -> form validation (validation) -> the handler (actions) -> reply or error frame

Messages. A frame is a JSON object ``{"action": name, "id": ..., ...payload}``.
The payload is the object without ``action`` and ``id``. An action declared with
``form=`` gets the form's ``cleaned_data``; one without gets the payload itself,
unvalidated (so validate it in the handler, or give the action a form).

``id`` is optional. It is echoed on the reply and on every error frame of that
message, so a client can match answers to requests. It must be a string of at
most 64 characters or an integer of at most 64 digits (``null`` counts as no
id). Anything else (objects, lists, floats, booleans, longer values) is refused
with an ``invalid`` error on the ``id`` field rather than dropped: a client
whose ids are silently lost would wait forever for an answer it cannot match.

Nested values (lists, objects) reach a form only through fields that take them:
``forms.JSONField`` receives the value as sent (a JSON string stays a string;
Django's JSONField still treats ``[]``, ``{}`` and ``""`` as empty), and
``MultipleChoiceField``/``TypedMultipleChoiceField``/``ModelMultipleChoiceField``
receive a list of scalars. A nested value under any other key is refused with
the field error code ``invalid_type``: Django's other fields would ``str()`` it
(``{"a": 1}`` would become the text ``"{'a': 1}"``). Fields are those declared
on the form class (``base_fields``).

Error frames have one shape, whatever refused the message::

    {"type": "error", "code": "invalid",
     "errors": {"text": [{"message": "This field is required.", "code": "required"}]},
     "action": "send_message", "id": 7}

``code`` is one of ``wsops.codes.ERROR_CODES``. ``errors`` maps a field name
(``"__all__"`` when no field is to blame, ``"action"``, ``"id"``) to a list of
``{"message", "code"}``: Django's validation codes for form fields, otherwise the
refusal's reason (``invalid_json``, ``not_an_object``, ``unknown_action``,
``invalid_id``, ``invalid_type``, ``permission_denied``, ``message_rate``,
``action_rate``, ``user_message_rate``). ``action`` and ``id`` are always present:
the message's values when they could be read (an action name of at most 64
characters, or any declared action; a valid id), else null. ``rate_limited``
frames add ``retry_after`` (seconds).

Every frame goes through, in this order (cheapest first): the size cap
(``MAX_MESSAGE_BYTES``, close 1009 before any parsing), the per-connection
throttle (``RATES["message"]``, in process), JSON parsing, action lookup, the
per-user throttle (``RATES["user_message"]``) together with the action's own
``rate=`` (one Redis round trip for both), the permission (cached per
connection), and form validation. A refusal answers an error frame; repeated
abuse closes the socket (4400 after ``INVALID_MESSAGE_LIMIT`` invalid messages in
a window, 4429 after ``THROTTLE_CLOSE_AFTER`` rate-limited messages in a row).
Each refusal is one security event.

Shared rates during a Redis outage. Under ``FAIL_MODE="closed"`` the per-user and
per-action rates fall back to an in-process limit per connection with the same
rate: limits that vanished whenever Redis is slow would be no limits. A user
with several sockets may then send the rate once per socket (at most
``MAX_CONNECTIONS_PER_USER`` times it). Under ``"open"`` such messages are
admitted, as ``"open"`` admits new sockets. An outage never closes an open socket.

First-frame authentication (``TOKEN_TRANSPORTS`` includes ``"message"``). An
anonymous socket is accepted and must send ``{"action": "authenticate", "token":
...}`` within ``AUTH_TIMEOUT``. Until then nothing else is handled: any other
frame, text or binary, closes 4401 with one security event. A login then goes
through the identity admission the handshake transports get
(``wsops.middleware.admit_identity``: user and token bans, 4403; the per-user
connect rate and connection caps, 4429; Redis down under fail-closed, 1013)
before ``{"type": "authenticated"}``, ``connect_permission`` and ``connect()``.

Close reasons. When ``get_settings().explain_refusals`` is true (``DEBUG``, or
``WSOPS["EXPLAIN_REFUSALS"] = True``) the consumer's closes carry the security
event's reason as the WebSocket close reason, so a developer sees why a socket
was closed; otherwise no reason is sent, which tells a prober nothing.
"""
