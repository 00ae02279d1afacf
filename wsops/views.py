"""HTTP side of wsops: the ticket endpoint browsers call before opening a socket, and the
Prometheus scrape endpoint."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST
from django_ratelimit.core import get_usage
from django_ratelimit.decorators import ratelimit

from . import clientip, metrics, signals, tickets
from .conf import get_settings, on_reload

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


@lru_cache(maxsize=1)
def _metrics_networks() -> tuple[clientip.Network, ...]:
    return tuple(clientip.canonical_network(ipaddress.ip_network(cidr, strict=False))
                 for cidr in get_settings().METRICS_ALLOWED)


on_reload(_metrics_networks.cache_clear)


def may_scrape(request: HttpRequest) -> bool:
    """Whether the client's address (canonical, behind ``TRUSTED_PROXIES`` as for sockets)
    is in ``WSOPS["METRICS_ALLOWED"]``."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    address = clientip.resolve(request.META.get("REMOTE_ADDR") or None,
                               forwarded.encode("latin-1", "replace") if forwarded else None)
    if address is None:
        return False
    parsed = ipaddress.ip_address(address)
    return any(parsed in network for network in _metrics_networks())


@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET metrics``: Prometheus text format, summed over the host's workers.

    Everyone outside ``METRICS_ALLOWED`` (default: loopback) gets the same 404 as an
    unknown URL, so the endpoint does not even show that it exists.
    """
    if not may_scrape(request):
        raise Http404
    if not metrics.enabled():
        why = ("prometheus_client is not installed: pip install 'wsops[prometheus]'"
               if metrics.prometheus_client is None else 'WSOPS["METRICS"] is False')
        return HttpResponse(f"wsops metrics are off: {why}\n", status=503,
                            content_type="text/plain; charset=utf-8")
    body, content_type = metrics.exposition(request.headers.get("Accept"))
    return HttpResponse(body, content_type=content_type)
