"""`reconciler fmt PATH… [--check] [--diff]`: rewrite policy files in canonical layout, comments kept.

Templates (`*.j2`) are not reformatted: their text is not YAML until rendered.
"""

from __future__ import annotations

import difflib
import os

import click

from reconciler.cli.output import echo_errors, internal_error
from reconciler.policy.errors import PolicyError
from reconciler.policy.formatting import format_text
from reconciler.policy.safe_yaml import YamlProblem
from reconciler.policy.sources import DEFAULT_MAX_FILE_BYTES, Role, SourceError, discover, read_text


def _write(path: str, text: str) -> None:
    """Replace the file atomically, keeping its permissions (through a symlink: the link stays)."""
    path = os.path.realpath(path)
    temporary = f"{path}.fmt-{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(temporary, os.stat(path).st_mode & 0o7777)
    os.replace(temporary, path)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--check", is_flag=True, help="Change nothing; exit 1 and list the files that would change.")
@click.option("--diff", "show_diff", is_flag=True, help="Print what would change as a unified diff.")
def fmt(paths: tuple[str, ...], check: bool, show_diff: bool) -> None:
    """Format policy files (*.yaml, *.yml, *.vars.yaml) in canonical form."""
    try:
        files, errors = discover(list(paths))
        changed: list[str] = []
        problems: list[PolicyError] = list(errors)
        for source in files:
            if source.role is Role.TEMPLATE:
                click.echo(f"{source.path}: template, not reformatted", err=True)
                continue
            try:
                before = read_text(source.path, DEFAULT_MAX_FILE_BYTES)
                after = format_text(before, source.path)
            except SourceError as exc:
                problems.append(exc.error)
                continue
            except YamlProblem as exc:
                problems.extend(exc.errors)
                continue
            if after == before:
                continue
            changed.append(source.path)
            if show_diff:
                diff = difflib.unified_diff(
                    before.splitlines(keepends=True), after.splitlines(keepends=True), source.path, source.path
                )
                click.echo("".join(diff), nl=False)
            if check:
                click.echo(f"would reformat {source.path}")
            elif not show_diff:
                _write(source.path, after)
                click.echo(f"reformatted {source.path}")
    except Exception as exc:  # a bug must not show the user a traceback
        raise internal_error(exc) from None
    echo_errors(sorted(problems))
    raise click.exceptions.Exit(1 if problems or (check and changed) else 0)
