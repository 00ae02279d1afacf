"""Close codes and error-frame codes: the stable vocabulary clients rely on.

Close codes 4000-4999 are reserved by RFC 6455 for applications; wsops mirrors
HTTP status numbers so they read at a glance.
"""

# Close codes
UNAUTHENTICATED = 4401  # no/invalid/expired/revoked credential
FORBIDDEN = 4403  # origin refused, permission missing, banned
RATE_LIMITED = 4429  # connect throttle (with REJECT_WITH="close_code") or message flood
INVALID_MESSAGES = 4400  # too many invalid messages in a window
MESSAGE_TOO_BIG = 1009  # RFC 6455: frame larger than MAX_MESSAGE_BYTES
UNSUPPORTED_DATA = 1003  # RFC 6455: binary frame on a text-only consumer
TRY_AGAIN_LATER = 1013  # Redis unreachable under FAIL_MODE="closed"

# Error-frame codes ({"type": "error", "code": ...})
INVALID_JSON = "invalid_json"
UNKNOWN_ACTION = "unknown_action"
INVALID = "invalid"
FORBIDDEN_ACTION = "forbidden"
THROTTLED = "rate_limited"
SERVER_ERROR = "server_error"  # a handler raised: the server's fault, never counted

ERROR_CODES = (INVALID_JSON, UNKNOWN_ACTION, INVALID, FORBIDDEN_ACTION, THROTTLED, SERVER_ERROR)
