"""Include under any prefix: ``path("ws/", include("wsops.urls"))`` -> ``POST /ws/ticket/``."""

from django.urls import path

from .views import issue_ticket

app_name = "wsops"
urlpatterns = [path("ticket/", issue_ticket, name="ticket")]
