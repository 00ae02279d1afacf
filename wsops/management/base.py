"""What every wsops command shares: one-line errors (exit 2), JSON output, tables."""

from __future__ import annotations

import json
from typing import Any, NoReturn

from django.core.management.base import BaseCommand, CommandError


class UsageError(CommandError):
    """A user mistake: printed as one line, exit status 2, no traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(message, returncode=2)


class WsopsCommand(BaseCommand):
    """Base class: subcommands, ``--json`` and plain tables."""

    def fail(self, message: str) -> NoReturn:
        raise UsageError(message)

    def write_json(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str))

    def write_table(self, headers: list[str], rows: list[list[Any]]) -> None:
        cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r]
                                               for r in rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        for index, row in enumerate(cells):
            line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            self.stdout.write(self.style.MIGRATE_HEADING(line) if index == 0 else line)
