"""Writing generated files: atomically, never over an existing file without --force."""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path


class OutputError(Exception):
    """A path that cannot be written (the command turns it into exit status 2)."""


def diff(path: Path, new_text: str) -> str:
    """A unified diff from the file on disk (or nothing) to ``new_text``."""
    old = path.read_text().splitlines(keepends=True) if path.exists() else []
    return "".join(difflib.unified_diff(old, new_text.splitlines(keepends=True),
                                        fromfile=str(path), tofile=f"{path} (new)"))


def check_writable(path: Path, force: bool) -> None:
    if path.exists() and path.is_dir():
        raise OutputError(f"{path} is a directory")
    if path.exists() and not force:
        raise OutputError(f"{path} exists; use --force to replace it or --diff to compare")
    parent = path.parent
    if parent.exists() and not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write to {parent}: permission denied")
    if not parent.exists():
        ancestor = next((p for p in parent.parents if p.exists()), None)
        if ancestor is None or not os.access(ancestor, os.W_OK) or not ancestor.is_dir():
            raise OutputError(f"cannot create {parent}")


def write_all(files: dict[Path, str], *, force: bool, mode_for: dict[Path, int] | None = None
              ) -> None:
    """Write every file or none: all are checked first, each lands by an atomic rename."""
    for path in files:
        check_writable(path, force)
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "w") as out:
                out.write(text)
            os.chmod(temporary, (mode_for or {}).get(path, 0o644))
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
