"""HTTP side of wsops: the ticket endpoint browsers call before opening a socket."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST
from django_ratelimit.decorators import ratelimit

from . import signals, tickets
from .conf import get_settings


def _ticket_rate(group: str, request: HttpRequest) -> str:
    return get_settings().TICKET_RATE


@never_cache
@require_POST
@csrf_protect
@ratelimit(key="user_or_ip", rate=_ticket_rate, block=False)
def issue_ticket(request: HttpRequest) -> JsonResponse:
    """``POST ticket/``: a single-use ticket for the logged-in user.

    Rate-limited with django-ratelimit (``WSOPS["TICKET_RATE"]``, cache
    ``RATELIMIT_USE_CACHE``): past the rate it answers 429 with JSON.
    """
    if not request.user.is_authenticated:
        return JsonResponse({"error": "authentication_required"}, status=401)
    if getattr(request, "limited", False):
        signals.report(signals.THROTTLE, None, "ticket_rate", user_id=request.user.pk,
                       path=request.path)
        return JsonResponse({"error": "rate_limited"}, status=429)
    origin = request.headers.get("Origin")
    ticket, ttl = tickets.issue(request.user, origin=origin)
    return JsonResponse({"ticket": ticket, "expires_in": ttl})
