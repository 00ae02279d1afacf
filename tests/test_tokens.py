"""Access tokens and tickets: storage, verification, the wstokens command, the ticket view."""

import io
import json
import re
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from wsops import tokens
from wsops.handshake.transports import TOKEN_RE
from wsops.models import WebSocketToken

pytestmark = pytest.mark.django_db


def run(*args, stdin=None):
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        import sys

        old, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        call_command("wstokens", *args, stdout=out, stderr=err)
    finally:
        if stdin is not None:
            sys.stdin = old
    return out.getvalue(), err.getvalue()


def test_secret_is_strong_recognisable_and_never_stored(make_user):
    token, secret = tokens.issue(make_user(), name="ci")
    assert TOKEN_RE.fullmatch(secret) and secret.startswith("wst_")
    assert len(secret) - 4 >= 43  # 32 random bytes = 256 bits, base64url
    stored = WebSocketToken.objects.filter(pk=token.pk).values().get()
    assert secret not in json.dumps(stored, default=str)
    assert token.prefix == secret[:12]
    assert token.hash == tokens.hash_secret(secret)


def test_verify_sync_outcomes(make_user):
    user = make_user()
    token, secret = tokens.issue(user)
    assert tokens.verify_sync(secret).user == user
    for bad, reason in [("wst_short", "malformed_token"), ("nonsense", "malformed_token"),
                        (tokens.generate_secret(), "unknown_token")]:
        with pytest.raises(tokens.TokenInvalid, match=reason):
            tokens.verify_sync(bad)
    tokens.revoke([token])
    with pytest.raises(tokens.TokenInvalid, match="revoked"):
        tokens.verify_sync(secret)


def test_expired_and_inactive_user_are_refused(make_user):
    user = make_user()
    _, secret = tokens.issue(user, ttl=60)
    token2, secret2 = tokens.issue(user)
    token2.expires_at = tokens.now() - timedelta(seconds=1)
    token2.save()
    with pytest.raises(tokens.TokenInvalid, match="expired"):
        tokens.verify_sync(secret2)
    user.is_active = False
    user.save()
    with pytest.raises(tokens.TokenInvalid, match="inactive_user"):
        tokens.verify_sync(secret)


def test_rotation_grace_with_a_controllable_clock(make_user, monkeypatch):
    start = tokens.now()
    clock = {"now": start}
    monkeypatch.setattr(tokens, "now", lambda: clock["now"])
    old, old_secret = tokens.issue(make_user(), name="svc", scopes=["chat:write"])
    new, new_secret = tokens.rotate(old, grace=3600)
    assert new.rotated_from == old and new.scopes == ["chat:write"] and new.name == "svc"
    assert old.status(start) == "expiring-in-grace"
    clock["now"] = start + timedelta(minutes=59)
    assert tokens.verify_sync(old_secret).id == old.pk
    clock["now"] = start + timedelta(minutes=61)
    with pytest.raises(tokens.TokenInvalid, match="expired"):
        tokens.verify_sync(old_secret)
    assert tokens.verify_sync(new_secret).id == new.pk


# --- wstokens ------------------------------------------------------------------------


def test_issue_prints_secret_once_and_json(make_user):
    make_user("svc")
    out, err = run("issue", "--user", "svc", "--name", "bot", "--scope", "chat:write",
                   "--ttl", "12h")
    secret = out.strip()
    assert TOKEN_RE.fullmatch(secret)
    assert "not shown again" in err and secret not in err
    data = json.loads(run("issue", "--user", "svc", "--json")[0])
    assert TOKEN_RE.fullmatch(data["secret"]) and data["owner"] == "svc"
    token = WebSocketToken.objects.get(prefix=secret[:12])
    assert (token.expires_at - token.created_at) == timedelta(hours=12)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--user", "ghost"], "unknown user 'ghost'"),
     (["--user", "svc", "--ttl", "soon"], "invalid --ttl 'soon'"),
     (["--user", "svc", "--scope", "bad scope!"], "invalid scope 'bad scope!'")],
)
def test_issue_mistakes_exit_2(make_user, args, message):
    make_user("svc")
    with pytest.raises(CommandError) as error:
        run("issue", *args)
    assert error.value.returncode == 2 and message in str(error.value)


def test_list_show_never_print_the_secret(make_user):
    make_user("svc")
    secret = run("issue", "--user", "svc", "--name", "bot")[0].strip()
    listing = run("list")[0]
    assert secret[:12] in listing and secret not in listing and "active" in listing
    rows = json.loads(run("list", "--json")[0])
    assert rows[0]["prefix"] == secret[:12] and "secret" not in rows[0] and "hash" not in rows[0]
    shown = run("show", secret[:12])[0]
    assert "bot" in shown and secret not in shown


def test_list_filters_and_statuses(make_user):
    make_user("a"), make_user("b")
    a = run("issue", "--user", "a")[0].strip()
    run("issue", "--user", "b")
    run("revoke", a[:12])
    assert "No active tokens" in run("list", "--user", "a")[0]
    rows = json.loads(run("list", "--all", "--user", "a", "--json")[0])
    assert [r["status"] for r in rows] == ["revoked"]


def test_ambiguous_prefix_lists_candidates_and_changes_nothing(make_user):
    owner = make_user("svc")
    first, _ = tokens.issue(owner)
    second, _ = tokens.issue(owner)
    WebSocketToken.objects.filter(pk=second.pk).update(prefix=first.prefix[:8] + "zzzz")
    WebSocketToken.objects.filter(pk=first.pk).update(prefix=first.prefix[:8] + "yyyy")
    with pytest.raises(CommandError) as error:
        run("revoke", first.prefix[:8])
    assert "ambiguous" in str(error.value) and error.value.returncode == 2
    assert WebSocketToken.objects.filter(revoked_at__isnull=False).count() == 0


def test_revoke_by_user_all(make_user):
    make_user("svc")
    for _ in range(3):
        run("issue", "--user", "svc")
    out = run("revoke", "--user", "svc", "--all")[0]
    assert "Revoked 3 token(s)" in out
    assert WebSocketToken.objects.usable().count() == 0


def test_rotate_command(make_user):
    make_user("svc")
    old = run("issue", "--user", "svc", "--scope", "x:y")[0].strip()
    out, err = run("rotate", old[:12], "--grace", "10m")
    new = out.strip()
    assert TOKEN_RE.fullmatch(new) and new != old and "keeps working for 10m" in err
    assert tokens.verify_sync(old) and tokens.verify_sync(new).scopes == ["x:y"]


def test_purge_and_dry_run(make_user, monkeypatch):
    owner = make_user("svc")
    gone, _ = tokens.issue(owner)
    tokens.revoke([gone])
    WebSocketToken.objects.filter(pk=gone.pk).update(
        revoked_at=tokens.now() - timedelta(days=40))
    kept, _ = tokens.issue(owner)
    assert "Would delete 1" in run("purge", "--dry-run")[0]
    assert WebSocketToken.objects.count() == 2
    assert "Deleted 1" in run("purge", "--older-than", "30d")[0]
    assert list(WebSocketToken.objects.all()) == [kept]


def test_verify_reads_stdin_without_marking_used(make_user):
    make_user("svc")
    secret = run("issue", "--user", "svc")[0].strip()
    out, _ = run("verify", stdin=secret + "\n")
    assert out.startswith("VALID " + secret[:12]) and "svc" in out
    assert WebSocketToken.objects.get().last_used_at is None
    with pytest.raises(SystemExit) as exit_info:
        run("verify", stdin="wst_" + "A" * 43 + "\n")
    assert exit_info.value.code == 1


# --- ticket endpoint ----------------------------------------------------------------


def test_ticket_endpoint_requires_login_csrf_and_post(make_user, settings):
    settings.WSOPS = {**settings.WSOPS, "TICKET_TTL": 20}
    make_user("web")
    client = Client(enforce_csrf_checks=True)
    assert client.post("/ws/ticket/").status_code in (401, 403)
    client.login(username="web", password="pw")
    assert client.post("/ws/ticket/").status_code == 403  # no CSRF token
    assert client.get("/ws/ticket/").status_code == 405
    client.get("/")  # sets the csrftoken cookie
    csrf = client.cookies["csrftoken"].value
    response = client.post("/ws/ticket/", HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 200
    body = response.json()
    assert re.fullmatch(r"wstkt_[A-Za-z0-9_-]{43}", body["ticket"]) and body["expires_in"] == 20


def test_ticket_endpoint_is_rate_limited_with_json_429(make_user, settings):
    settings.WSOPS = {**settings.WSOPS, "TICKET_RATE": "2/m"}
    make_user("web")
    client = Client()
    client.login(username="web", password="pw")
    codes = [client.post("/ws/ticket/").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert client.post("/ws/ticket/").json() == {"error": "rate_limited"}


def test_admin_lists_searches_and_revokes(make_user, admin_client):
    owner = make_user("svc")
    token, _ = tokens.issue(owner, name="ci-bot")
    page = admin_client.get("/admin/wsops/websockettoken/", {"q": token.prefix})
    assert page.status_code == 200 and token.prefix in page.content.decode()
    assert admin_client.get("/admin/wsops/websockettoken/", {"status": "active"}).status_code \
        == 200
    response = admin_client.post("/admin/wsops/websockettoken/", {
        "action": "revoke_and_disconnect", "_selected_action": [token.pk]}, follow=True)
    assert "Revoked 1 token(s)." in response.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert admin_client.get("/admin/wsops/websockettoken/add/").status_code == 403
