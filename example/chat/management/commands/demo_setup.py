"""Create the demo user (demo/demo) with chat permission and print how to connect."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand

from wsops import tokens

from ...models import Room


class Command(BaseCommand):
    help = "Create the demo user and a demo access token, and print how to connect."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, port, **options):
        user, _ = get_user_model().objects.get_or_create(username="demo")
        user.set_password("demo")
        user.is_staff = user.is_superuser = True
        user.save()
        user.user_permissions.add(Permission.objects.get(codename="send_message"))
        Room.objects.get_or_create(name="lobby")[0].members.add(user)  # ws/room/lobby/
        _, secret = tokens.issue(user, name="demo", scopes=["chat:write"], ttl=86400)
        url = f"http://127.0.0.1:{port}/"
        self.stdout.write(f"""
wsops demo
  Browser:  {url}  (log in as demo / demo; the page connects with a ticket)
  Admin:    {url}admin/  (tokens, with a "revoke" action)
  Socket:   ws://127.0.0.1:{port}/ws/chat/lobby/
  A demo access token (valid 24h, shown once):
    {secret}
  Connect from a terminal:
    .venv/bin/python example/ws_client.py --port {port} {secret}
""")
