"""The README as pasted (issue #13).

"Install into a project": a fresh ``django-admin startproject`` gets exactly the
README's snippets and runs exactly its ``manage.py`` commands, then a real daphne
serves it and a token from ``wstokens issue`` opens a socket.

"Testing your project": its settings, pytest.ini, conftest and tests, written
into the example project and into that fresh project, pass with pytest, in
process and on Redis under a per-run key prefix.

Snippets are the README's code blocks whose first line names their file:
``# mysite/asgi.py: whole file`` or ``# mysite/settings.py: add at the end``.
When the README drifts (a snippet stops working, or a marker goes), these fail.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT, RedisServer
from wsops.testing import LiveSocket

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
MARKER = re.compile(r"# (?P<path>[\w./-]+): (?P<how>whole file|add at the end)\n")


@dataclass
class Snippet:
    path: str
    how: str
    text: str


def section(title: str) -> str:
    """The README's section ``## title``, up to the next one."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def snippets(title: str) -> list[Snippet]:
    found = []
    for _, body in BLOCK.findall(section(title)):
        marker = MARKER.match(body)
        if marker:
            found.append(Snippet(marker["path"], marker["how"], body))
    return found


def shell_lines(title: str) -> list[str]:
    """The commands of the section's ``sh`` blocks, without their comments."""
    lines = []
    for language, body in BLOCK.findall(section(title)):
        if language == "sh":
            lines += [line.split("  #")[0].strip() for line in body.splitlines()
                      if line.strip() and not line.startswith("#")]
    return lines


def apply(project: Path, found: list[Snippet], replace: dict[str, str]) -> None:
    for snippet in found:
        text, path = snippet.text, snippet.path
        for old, new in replace.items():
            text, path = text.replace(old, new), path.replace(old, new)
        target = project / path
        if snippet.how == "whole file":
            target.write_text(text)
        else:
            with target.open("a") as file:
                file.write("\n\n" + text)


def user_environment() -> dict[str, str]:
    """A shell as a user has it: the virtualenv first, none of the suite's variables."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")
                   and not key.startswith("WSOPS_TEST_")}
    environment["PATH"] = os.pathsep.join([str(BIN), environment.get("PATH", "")])
    return environment


def run(command: str | list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(command, shell=isinstance(command, str), cwd=cwd,
                            env=user_environment(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def test_the_install_snippets_are_complete():
    """Every file the section talks about has its snippet, with a marker."""
    paths = [snippet.path for snippet in snippets("Install into a project")]
    assert paths == ["mysite/settings.py", "mysite/asgi.py", "mysite/urls.py",
                     "chat/models.py", "chat/routing.py", "chat/consumers.py"]
    commands = shell_lines("Install into a project")
    assert any("wstokens issue" in line for line in commands)
    assert any(line.startswith("daphne ") for line in commands)


@dataclass
class Project:
    path: Path
    secret: str  # what the README's `wstokens issue` printed
    application: str  # what the README's `daphne` line serves
    check: str  # what the README's `wssecure check` printed


@pytest.fixture(scope="module")
def redis_for_readme(tmp_path_factory):
    """The README names a Redis on 127.0.0.1:6379 without a key prefix: use a private one."""
    server = RedisServer(None, tmp=tmp_path_factory.mktemp("redis"))
    yield server
    server.kill()


@pytest.fixture(scope="module")
def readme_project(tmp_path_factory, redis_for_readme) -> Project:
    """``startproject mysite`` + ``startapp chat`` + the install section, as pasted."""
    home = tmp_path_factory.mktemp("readme")
    project = home / "mysite"
    project.mkdir()
    run([str(BIN / "django-admin"), "startproject", "mysite", str(project)], home)
    run([sys.executable, "manage.py", "startapp", "chat"], project)
    # The one change: the README's Redis (127.0.0.1:6379) is this test's private one.
    apply(project, snippets("Install into a project"),
          {"redis://127.0.0.1:6379/": redis_for_readme.url.rsplit("/", 1)[0] + "/"})

    secret = application = check = ""
    for line in shell_lines("Install into a project"):
        if line.startswith("pip "):
            continue  # wsops is installed in this virtualenv already
        if line.startswith("daphne "):
            application = shlex.split(line)[-1]
            continue
        if "wstokens issue" in line:  # the README created the user it names just before
            secret = run(line, project).stdout.strip()
            continue
        result = run(line, project)
        if "wssecure check" in line:
            check = result.stdout + result.stderr
    return Project(project, secret, application, check)


async def test_install_section_as_pasted_serves_a_token_socket(readme_project, daphne_server):
    assert "E008" not in readme_project.check, readme_project.check  # ASGI_APPLICATION works
    assert readme_project.secret.startswith("wst_"), readme_project.secret
    assert readme_project.application == "mysite.asgi:application"
    server = daphne_server(project=readme_project.path, settings_module="mysite.settings",
                           application=readme_project.application)
    socket = await LiveSocket.open(server.url("/ws/chat/lobby/"), token=readme_project.secret)
    assert socket.accepted, (socket.status, server.output())
    assert socket.subprotocol == "wsops"
    await socket.send_json({"action": "send_message", "text": "hi", "id": 7})
    assert await socket.receive_json() == {"type": "sent", "id": 7}
    await socket.close()
    anonymous = await LiveSocket.open(server.url("/ws/chat/lobby/"))
    assert anonymous.refused_before_accept and anonymous.status == 403


# --- Testing your project ---------------------------------------------------------------


def test_the_testing_recipe_is_complete():
    paths = [snippet.path for snippet in snippets("Testing your project")]
    assert paths == ["mysite/settings_test.py", "pytest.ini", "conftest.py",
                     "chat/test_sockets.py"]


@pytest.mark.parametrize(("project", "redis"), [("example", False), ("example", True),
                                                ("readme", False)])
def test_testing_recipe_passes(request, tmp_path, project, redis, private_redis):
    """The recipe, written into a copy of the project, passes with pytest."""
    if project == "example":
        target = tmp_path / "example"
        shutil.copytree(ROOT / "example", target,
                        ignore=shutil.ignore_patterns("db.sqlite3", "__pycache__"))
        names = {"mysite": "chatproject"}  # the example's project package
    else:
        source = request.getfixturevalue("readme_project").path
        target = tmp_path / "mysite"
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        names = {}
    apply(target, snippets("Testing your project"), names)
    environment = user_environment()
    prefix = f"recipe-{os.getpid()}:"
    if redis:
        environment.update(TEST_REDIS_URL=private_redis.url, TEST_KEY_PREFIX=prefix)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                            cwd=target, env=environment, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "4 passed" in result.stdout, result.stdout[-3000:]
    if redis:  # wsops used this Redis, and only under the run's prefix
        keys = list(private_redis.client().scan_iter(count=1000))
        assert any(key.startswith(prefix + "wsops:") for key in keys), keys
        assert all(key.startswith(prefix) for key in keys), keys
