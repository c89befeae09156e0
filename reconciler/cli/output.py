"""Rendering policy errors for humans (`FILE:LINE:COL: error: MESSAGE` + hint) and for machines (JSON), and
the one way commands make a rich console."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

from reconciler.policy.errors import PolicyError

if TYPE_CHECKING:  # rich loads only for commands that render (`validate` prints plain lines)
    from rich.console import Console


def error_lines(error: PolicyError) -> str:
    text = str(error)
    if error.hint:
        text += f"\n    hint: {error.hint}"
    return text


def echo_errors(errors: Iterable[PolicyError]) -> None:
    for error in errors:
        click.echo(error_lines(error), err=True)


def error_json(error: PolicyError) -> dict[str, Any]:
    return {
        "file": error.location.file,
        "line": error.location.line,
        "col": error.location.col,
        "message": error.message,
        "hint": error.hint,
        "severity": error.severity,
    }


def echo_json(payload: dict[str, Any]) -> None:
    click.echo(json.dumps(payload, indent=2, sort_keys=False))


def internal_error(exc: BaseException) -> click.exceptions.Exit:
    """Exit 2 with a one-line message: a bug in reconciler, never the user's fault, never a traceback."""
    click.echo(f"internal error: {type(exc).__name__}: {exc} (please report this)", err=True)
    return click.exceptions.Exit(2)


# wide enough for any line we print: a pipe or file has no width, and rich's 80-column guess would cut
# URLs, GUIDs and table cells into pieces that `grep` then cannot find
UNWRAPPED_WIDTH = 10_000


def make_console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr): the terminal's width on a terminal, never wrapped elsewhere."""
    from rich.console import Console

    file = sys.stderr if stderr else sys.stdout
    return Console(file=file, highlight=False, soft_wrap=True, width=None if file.isatty() else UNWRAPPED_WIDTH)
