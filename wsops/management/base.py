"""What every wsops command shares: subcommands, one-line errors (exit 2), JSON, tables.

Django's own options (``--settings``, ``--pythonpath``, ``--traceback``,
``--no-color``, ``--force-color``, ``-v``, ``--skip-checks``) belong to the
command's top-level parser, and argparse only accepts a parser's options before
its subcommand: ``wstokens list --settings X`` failed with "unrecognized
arguments". ``WsopsCommand.add_subcommands`` gives every subcommand those
options too, so they work on either side of it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, NoReturn

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from wsops.units import duration_help, parse_duration


class UsageError(CommandError):
    """A user mistake: printed as one line, exit status 2, no traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(message, returncode=2)


class OneLineErrorParser(CommandParser):
    """A parser whose mistakes are one line and exit status 2.

    argparse prints the whole usage block before the error, which buries the one
    line that matters; ``--help`` is there for the rest. Called from code
    (``call_command``), mistakes raise ``UsageError`` like the commands' own.
    """

    def error(self, message: str) -> NoReturn:
        if self.called_from_command_line:
            self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise UsageError(message)


# (flags, argparse keywords) of Django's options, as BaseCommand.create_parser defines them.
DJANGO_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("-v", "--verbosity"), {"type": int, "choices": [0, 1, 2, 3],
                             "help": "Verbosity level: 0 minimal, 1 normal, 2 verbose, "
                                     "3 very verbose."}),
    (("--settings",), {"help": "Settings module, e.g. myproject.settings.prod (default: "
                               "DJANGO_SETTINGS_MODULE)."}),
    (("--pythonpath",), {"help": "A directory to add to the Python path."}),
    (("--traceback",), {"action": "store_true",
                        "help": "Show the full stack trace of an error."}),
    (("--no-color",), {"action": "store_true", "help": "Do not colorize the output."}),
    (("--force-color",), {"action": "store_true", "help": "Colorize the output anyway."}),
)
SKIP_CHECKS_OPTION = (("--skip-checks",), {"action": "store_true",
                                           "help": "Skip Django's system checks."})


class Subcommands(argparse._SubParsersAction):
    """Subcommand parsers that also accept Django's options after the subcommand.

    Their defaults are SUPPRESS: a subcommand parser only sets what was typed
    after it, so a value given before the subcommand is not overwritten.
    """

    def __init__(self, *args: Any, skip_checks: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.django_options = DJANGO_OPTIONS + ((SKIP_CHECKS_OPTION,) if skip_checks else ())

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser = super().add_parser(name, **kwargs)
        group = parser.add_argument_group("Django options (before or after the subcommand)")
        for flags, options in self.django_options:
            group.add_argument(*flags, default=argparse.SUPPRESS, **options)
        return parser


class WsopsCommand(BaseCommand):
    """Base class: subcommands, ``--json``, plain tables and one-line errors."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # Django builds a plain CommandParser; ours differs only in how it reports errors.
        parser.__class__ = OneLineErrorParser
        return parser

    def add_subcommands(self, parser: CommandParser) -> Subcommands:
        """``parser.add_subparsers`` for wsops commands: the chosen name lands in
        ``options["subcommand"]``, one is required, and each takes Django's options."""
        return parser.add_subparsers(
            dest="subcommand", required=True, metavar="SUBCOMMAND", action=Subcommands,
            parser_class=OneLineErrorParser, skip_checks=bool(self.requires_system_checks),
        )

    def execute(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute(*args, **options)
        except DatabaseError as error:
            # An unmigrated or unreachable database is not a bug in the command.
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UsageError(f"database error: {first_line} (did you run "
                             "'manage.py migrate'?)") from error

    def fail(self, message: str) -> NoReturn:
        raise UsageError(message)

    def duration_option(self, value: str, option: str, *, allow_never: bool = False,
                        allow_zero: bool = False) -> int | None:
        """Seconds from a duration option, or a usage error naming what it accepts."""
        try:
            return parse_duration(value, allow_never=allow_never, allow_zero=allow_zero)
        except ValueError:
            expected = duration_help(allow_never=allow_never, allow_zero=allow_zero)
            self.fail(f"invalid {option} {value!r}: expected {expected}")

    def write_json(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str))

    def write_table(self, headers: list[str], rows: list[list[Any]]) -> None:
        cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r]
                                               for r in rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        for index, row in enumerate(cells):
            line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            self.stdout.write(self.style.MIGRATE_HEADING(line) if index == 0 else line)
