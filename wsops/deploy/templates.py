"""Render deploy templates with Django's engine; a project's templates dirs win.

The built-in templates live in ``deploy_templates/wsops/`` (shipped inside the
package as ``wsops/deploy_templates``). To change one, copy it to
``<your templates dir>/wsops/<name>`` or pass ``--template PATH``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.template import Context, Engine


def builtin_dir() -> Path:
    """``wsops/deploy_templates`` when installed; the repository's ``deploy_templates`` in a
    source checkout (setup.cfg maps one onto the other)."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "deploy_templates", package.parent / "deploy_templates"):
        if (candidate / "wsops").is_dir():
            return candidate
    raise FileNotFoundError("wsops' deploy_templates directory is missing from the installation")


def _project_dirs() -> list[str]:
    dirs: list[str] = []
    for backend in getattr(settings, "TEMPLATES", []):
        if backend.get("BACKEND") == "django.template.backends.django.DjangoTemplates":
            dirs.extend(str(d) for d in backend.get("DIRS", []))
    return dirs


def engine(extra_dirs: list[str] | None = None) -> Engine:
    return Engine(dirs=[*(extra_dirs or []), *_project_dirs(), str(builtin_dir())],
                  autoescape=False, debug=False, builtins=["wsops.deploy.filters"])


def render(name: str, context: dict[str, Any], template_path: str | None = None) -> str:
    """Render ``wsops/<name>``, or the file at ``template_path`` when given."""
    if template_path:
        text = Path(template_path).read_text()
        template = engine().from_string(text)
    else:
        template = engine().get_template(f"wsops/{name}")
    rendered = template.render(Context(context, autoescape=False))
    lines = [line.rstrip() for line in rendered.splitlines()]
    collapsed: list[str] = []
    for line in lines:  # template tags leave runs of blank lines: keep at most one
        if line or (collapsed and collapsed[-1]):
            collapsed.append(line)
    return "\n".join(collapsed).strip() + "\n"
