"""HTTP side of wsops: the ticket endpoint browsers call before opening a socket."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST
from django_ratelimit.core import get_usage
from django_ratelimit.decorators import ratelimit

from . import signals, tickets
from .conf import get_settings

# django-ratelimit's counter of the ticket endpoint: the decorator counts, and a 429
# reads the same counter back to say when its window ends.
TICKET_LIMIT = {"group": "wsops.ticket", "key": "user_or_ip"}


def _ticket_rate(group: str, request: HttpRequest) -> str:
    return get_settings().TICKET_RATE


def _retry_after(request: HttpRequest) -> int:
    """Whole seconds until the caller's ticket window resets (at least 1).

    django-ratelimit keeps fixed windows; it reports ``time_left`` -1 when its
    cache failed, and then the only honest answer is "soon".
    """
    usage = get_usage(request, rate=_ticket_rate, increment=False, **TICKET_LIMIT)
    return max(1, usage["time_left"]) if usage else 1


@never_cache
@require_POST
@csrf_protect
@ratelimit(rate=_ticket_rate, block=False, **TICKET_LIMIT)
def issue_ticket(request: HttpRequest) -> JsonResponse:
    """``POST ticket/``: a single-use ticket for the logged-in user.

    Rate-limited with django-ratelimit (``WSOPS["TICKET_RATE"]``, cache
    ``RATELIMIT_USE_CACHE``): past the rate it answers 429 with JSON and a
    ``Retry-After`` header, so clients back off instead of retrying at once.
    """
    if not request.user.is_authenticated:
        return JsonResponse({"error": "authentication_required"}, status=401)
    if getattr(request, "limited", False):
        signals.report(signals.THROTTLE, None, "ticket_rate", user_id=request.user.pk,
                       path=request.path)
        response = JsonResponse({"error": "rate_limited"}, status=429)
        response["Retry-After"] = str(_retry_after(request))
        return response
    origin = request.headers.get("Origin")
    ticket, ttl = tickets.issue(request.user, origin=origin)
    return JsonResponse({"ticket": ticket, "expires_in": ttl})
