"""Include under any prefix: ``path("ws/", include("wsops.urls"))`` -> ``POST /ws/ticket/``
and ``GET /ws/metrics`` (Prometheus, ``WSOPS["METRICS_ALLOWED"]`` only)."""

from django.urls import path

from .views import issue_ticket, metrics_view

app_name = "wsops"
urlpatterns = [
    path("ticket/", issue_ticket, name="ticket"),
    path("metrics", metrics_view, name="metrics"),
]
