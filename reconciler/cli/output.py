"""Rendering policy errors for humans (`FILE:LINE:COL: error: MESSAGE` + hint) and for machines (JSON)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import click

from reconciler.policy.errors import PolicyError


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
