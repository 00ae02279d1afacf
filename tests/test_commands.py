"""The four commands from a shell: Django's options after the subcommand, one-line errors
(exit 2), duration errors that say what is accepted, case-sensitive token prefixes,
and ``wstokens rotate`` renewing a token."""

import io
import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.helpers import ROOT, database_name
from wsops import tokens
from wsops.management.commands.wsratelimit import Command as RateLimitCommand
from wsops.models import WebSocketToken
from wsops.units import duration_help, parse_duration


def manage(*args, settings_module="tests.settings", env=None, via="manage.py"):
    """Run a command in a fresh process, with --settings AFTER the subcommand and no
    DJANGO_SETTINGS_MODULE, so only the option can choose the settings."""
    environment = {key: value for key, value in os.environ.items()
                   if key != "DJANGO_SETTINGS_MODULE"}
    environment.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "example")]),
                       **(env or {}))
    program = ["manage.py"] if via == "manage.py" else ["-m", "django"]
    return subprocess.run(
        [sys.executable, *program, *args, "--settings", settings_module],
        cwd=ROOT / "example", capture_output=True, text=True, timeout=120, env=environment)


def run(command, *args):
    out, err = io.StringIO(), io.StringIO()
    call_command(command, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def one_line_usage_error(result):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr.strip()


# --- Django's options after the subcommand -------------------------------------------------


def test_wssecure_takes_settings_after_the_subcommand():
    result = manage("wssecure", "check", "--deploy", "--json",
                    settings_module="tests.settings_insecure")
    assert result.returncode == 1, result.stderr
    assert "wsops.E001" in {f["id"] for f in json.loads(result.stdout)["findings"]}


@pytest.mark.django_db(transaction=True)
def test_wstokens_takes_settings_and_verbosity_after_the_subcommand(make_user):
    token, _ = tokens.issue(make_user("svc"), name="ci")
    result = manage("wstokens", "list", "--json", "-v", "0", "--skip-checks",
                    env={"WSOPS_TEST_DB_NAME": database_name()}, via="-m django")
    assert result.returncode == 0, result.stderr
    assert [row["prefix"] for row in json.loads(result.stdout)] == [token.prefix]


def test_wsratelimit_takes_settings_after_the_subcommand(redis_server):
    result = manage("wsratelimit", "show", "--json", "--no-color",
                    env={"WSOPS_TEST_REDIS_URL": redis_server.url,
                         "WSOPS_TEST_KEY_PREFIX": redis_server.prefix})
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == {"counters", "connections", "bans"}


def test_wsdeploy_takes_settings_after_the_subcommand():
    result = manage("wsdeploy", "nginx", "--domain", "app.example.com", "--no-color")
    assert result.returncode == 0, result.stderr
    assert "server_name app.example.com" in result.stdout


def test_pythonpath_and_force_color_after_the_subcommand(tmp_path):
    (tmp_path / "wsops_never_settings.py").write_text(
        "from tests.settings import *  # noqa: F403\n"
        "WSOPS = {**WSOPS, 'TOKEN_TTL': 'never'}  # noqa: F405\n")
    result = manage("wssecure", "check", "--fail-level", "WARNING", "--force-color",
                    "--pythonpath", str(tmp_path), settings_module="wsops_never_settings")
    assert result.returncode == 1 and "wsops.W011" in result.stdout, result.stderr
    assert "\x1b[" in result.stdout


@pytest.mark.django_db(transaction=True)
def test_traceback_after_the_subcommand_shows_the_stack():
    env = {"WSOPS_TEST_DB_NAME": database_name()}
    message = one_line_usage_error(manage("wstokens", "show", "wst_nope", env=env))
    assert "no token matches 'wst_nope'" in message
    result = manage("wstokens", "show", "wst_nope", "--traceback", env=env)
    assert result.returncode == 1 and "Traceback" in result.stderr


# --- errors: one line, exit 2 ------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["wstokens", "list", "--bogus"],
    ["wstokens", "bogus"],
    ["wstokens", "rotate"],
    ["wssecure", "check", "--fail-level", "LOUD"],
    ["wsratelimit", "top", "-n", "many"],
])
def test_argument_mistakes_are_one_line_exit_2(args):
    message = one_line_usage_error(manage(*args))
    assert "error:" in message and "--help" in message


@pytest.mark.parametrize(("command", "args"), [
    ("wssecure", ["check", "--fail-level", "LOUD"]),
    ("wstokens", ["rotate"]),
])
def test_argument_mistakes_from_code_are_usage_errors(command, args):
    with pytest.raises(CommandError) as error:
        run(command, *args)
    assert error.value.returncode == 2


def test_an_unmigrated_database_is_one_line(tmp_path):
    message = one_line_usage_error(manage(
        "wstokens", "list", env={"DATABASE_URL": "",  # SQLite, also when the suite is on PG
                                 "WSOPS_TEST_DB_NAME": str(tmp_path / "empty.sqlite3")}))
    assert "no such table" in message and "migrate" in message


def test_help_lists_the_django_options_after_the_subcommand():
    result = manage("wstokens", "rotate", "--help")
    assert result.returncode == 0
    for option in ("--settings", "--pythonpath", "--traceback", "--no-color", "--verbosity",
                   "--ttl", "--grace"):
        assert option in result.stdout
    assert "0: it stops now" in result.stdout


# --- durations say what they accept --------------------------------------------------------


def test_duration_help_names_exactly_what_is_accepted():
    assert '"never"' not in duration_help() and "more than 0" in duration_help()
    assert '"never"' in duration_help(allow_never=True)
    assert "0 included" in duration_help(allow_zero=True)
    assert parse_duration("0", allow_zero=True) == 0
    assert parse_duration("0m", allow_never=False, allow_zero=True) == 0
    for value, options in (("0", {}), (0.5, {}), (float("inf"), {}), ("-1s", {}),
                           ("never", {"allow_never": False}), (None, {"allow_never": False})):
        with pytest.raises(ValueError) as error:
            parse_duration(value, **options)
        expected = duration_help(allow_never=options.get("allow_never", True))
        assert str(error.value) == f"expected {expected}, got {value!r}"


@pytest.mark.django_db
@pytest.mark.parametrize(("args", "accepted", "refused"), [
    (["issue", "--user", "svc", "--ttl", "0"], ['"never"', "more than 0"], ["0 included"]),
    (["rotate", "PREFIX", "--grace", "never"], ["0 included"], ['"never"']),
    (["rotate", "PREFIX", "--ttl", "soon"], ['"never"'], ["0 included"]),
    (["purge", "--older-than", "never"], ["0 included"], ['"never"']),
])
def test_duration_errors_list_what_that_option_accepts(make_user, args, accepted, refused):
    token, _ = tokens.issue(make_user("svc"))
    args = [token.prefix if arg == "PREFIX" else arg for arg in args]
    with pytest.raises(CommandError) as error:
        run("wstokens", *args)
    message = str(error.value)
    assert error.value.returncode == 2 and message.startswith("invalid --")
    assert all(text in message for text in accepted), message
    assert not any(text in message for text in refused), message


@pytest.mark.parametrize(("args", "message"), [
    (["--interval", "-1"], "--interval must be a positive number of seconds, got -1"),
    (["--interval", "0"], "--interval must be a positive number of seconds, got 0"),
    (["--count", "-3"], "--count must be 0 (until Ctrl-C) or more, got -3"),
])
def test_top_watch_refuses_impossible_timing(use_redis, args, message):
    with pytest.raises(CommandError) as error:
        run("wsratelimit", "top", "--watch", *args)
    assert error.value.returncode == 2 and str(error.value) == message


@pytest.mark.django_db
def test_block_for_accepts_neither_never_nor_zero(use_redis):
    for value in ("never", "0"):
        with pytest.raises(CommandError) as error:
            run("wsratelimit", "block", "ip:10.1.2.3", "--for", value)
        message = str(error.value)
        assert error.value.returncode == 2 and f"invalid --for {value!r}" in message
        assert "more than 0" in message and '"never"' not in message


# --- prefixes are case-sensitive -----------------------------------------------------------


@pytest.fixture
def twin_prefixes(make_user):
    """Two tokens whose prefixes differ only in case (base64url tells them apart)."""
    owner = make_user("svc")
    lower, _ = tokens.issue(owner, name="lower")
    upper, _ = tokens.issue(owner, name="upper")
    WebSocketToken.objects.filter(pk=lower.pk).update(prefix="wst_abcdEFGH")
    WebSocketToken.objects.filter(pk=upper.pk).update(prefix="wst_ABCDefgh")
    return lower, upper


@pytest.mark.django_db
def test_wstokens_prefixes_are_case_sensitive(twin_prefixes):
    lower, _ = twin_prefixes
    assert "lower" in run("wstokens", "show", "wst_abcd")[0]
    assert "upper" in run("wstokens", "show", "wst_ABCD")[0]
    with pytest.raises(CommandError, match="no token matches 'wst_Abcd'"):
        run("wstokens", "show", "wst_Abcd")
    run("wstokens", "revoke", "wst_abcd")
    assert set(WebSocketToken.objects.filter(revoked_at__isnull=False)) == {
        WebSocketToken.objects.get(pk=lower.pk)}


@pytest.mark.django_db
def test_wsratelimit_token_prefixes_are_case_sensitive(twin_prefixes):
    command = RateLimitCommand()
    assert command._identity("token:wst_ABCD").id == "wst_ABCDefgh"
    assert command._identity("token:wst_abcd").id == "wst_abcdEFGH"
    with pytest.raises(CommandError, match="matches 0 tokens"):
        command._identity("token:wst_aBcD")


# --- rotate renews -------------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch):
    """``tokens.now`` under the test's control: ``clock.advance(days=20)``."""

    class Clock:
        at = tokens.now()

        def advance(self, **delta):
            self.at += timedelta(**delta)

    controlled = Clock()
    monkeypatch.setattr(tokens, "now", lambda: controlled.at)
    return controlled


def rotate(token, *args):
    out, _ = run("wstokens", "rotate", token.prefix, *args, "--json")
    data = json.loads(out)
    return WebSocketToken.objects.get(prefix=data["prefix"]), data["secret"]


@pytest.mark.django_db
def test_rotate_gives_the_successor_a_fresh_lifetime(make_user, clock):
    old, old_secret = tokens.issue(make_user("svc"), ttl=30 * 86400)
    clock.advance(days=20)
    rotated_at = clock.at
    new, new_secret = rotate(old, "--grace", "1h")
    assert new.expires_at == rotated_at + timedelta(days=30)  # not the 10 days left
    old.refresh_from_db()
    assert old.expires_at == rotated_at + timedelta(hours=1)
    clock.advance(minutes=61)
    with pytest.raises(tokens.TokenInvalid, match="expired"):
        tokens.verify_sync(old_secret)
    clock.advance(days=29)
    assert tokens.verify_sync(new_secret).id == new.pk


@pytest.mark.django_db
def test_rotating_again_during_grace_does_not_die_with_the_grace(make_user, clock):
    old, _ = tokens.issue(make_user("svc"), ttl=7 * 86400)
    clock.advance(days=6)
    rotate(old, "--grace", "1h")
    clock.advance(minutes=10)  # old is in its grace period: rotate it again
    old.refresh_from_db()
    grace_end = old.expires_at
    again, secret = rotate(old, "--grace", "1h")
    assert again.expires_at == clock.at + timedelta(days=7)
    old.refresh_from_db()
    assert old.expires_at == grace_end  # a second rotation never extends the old token
    clock.advance(hours=2)
    assert tokens.verify_sync(secret).id == again.pk


@pytest.mark.django_db
def test_rotate_ttl_option_and_never_expiring_tokens(make_user, clock):
    owner = make_user("svc")
    forever, _ = tokens.issue(owner, ttl=None)
    assert rotate(forever)[0].expires_at is None  # not WSOPS['TOKEN_TTL']
    short, _ = tokens.issue(owner, ttl=3600)
    assert rotate(short, "--ttl", "2d")[0].expires_at == clock.at + timedelta(days=2)
    other, _ = tokens.issue(owner, ttl=3600)
    assert rotate(other, "--ttl", "never")[0].expires_at is None


@pytest.mark.django_db
def test_rotate_with_zero_grace_stops_the_old_token_now(make_user, clock):
    old, old_secret = tokens.issue(make_user("svc"))
    _, err = run("wstokens", "rotate", old.prefix, "--grace", "0")
    assert f"{old.prefix} stops working now." in err
    with pytest.raises(tokens.TokenInvalid, match="expired"):
        tokens.verify_sync(old_secret)


@pytest.mark.django_db
def test_rotate_says_when_the_old_token_really_stops(make_user, clock):
    old, _ = tokens.issue(make_user("svc"), ttl=600)
    _, err = run("wstokens", "rotate", old.prefix, "--grace", "1h")
    assert f"{old.prefix} keeps working for 10m " in err  # its own expiry comes first


@pytest.mark.django_db
def test_token_references_that_cannot_match_say_why(make_user):
    from wsops.management.base import UsageError

    make_user("svc")
    prefix = run("wstokens", "issue", "--user", "svc")[0].strip()[:12]
    for reference, expected in (("wst_", "too short"), (prefix[4:], "neither an id nor a prefix")):
        with pytest.raises(UsageError, match=expected):
            run("wstokens", "show", reference)
    assert "Revoked 1 token(s)" in run("wstokens", "revoke", prefix)[0]
    again = run("wstokens", "revoke", prefix)[0]
    assert "Revoked 0 token(s): none. Already revoked: " + prefix in again
