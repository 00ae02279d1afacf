"""The ticket endpoint's 429 tells clients when to come back."""

import pytest
from django.core.cache import cache
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("rate", "window"), [("2/m", 60), ("2/10s", 10)])
def test_rate_limited_ticket_answer_carries_retry_after(make_user, settings, rate, window):
    cache.clear()  # django-ratelimit counts in the default cache
    settings.WSOPS = {**settings.WSOPS, "TICKET_RATE": rate}
    make_user("web")
    client = Client()
    client.login(username="web", password="pw")
    answers = [client.post("/ws/ticket/") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert "Retry-After" not in answers[0]
    limited = answers[2]
    assert limited.json() == {"error": "rate_limited"}
    assert 1 <= int(limited["Retry-After"]) <= window
