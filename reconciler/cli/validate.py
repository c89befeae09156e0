"""`reconciler validate PATH…`: load, render, schema-check and cross-check policy files."""

from __future__ import annotations

from collections.abc import Mapping

import click

from reconciler.cli.output import echo_errors, echo_json, error_json, internal_error
from reconciler.policy import LoadResult, load
from reconciler.policy.model import Kind
from reconciler.policy.sources import DEFAULT_MAX_FILE_BYTES, Role

_NOUNS = {  # singular, plural
    Kind.CONNECTION: ("connection", "connections"),
    Kind.REPOSITORY: ("repository", "repositories"),
    Kind.SCHEDULE: ("schedule", "schedules"),
    Kind.RETENTION: ("retention", "retentions"),
    Kind.PROTECTION_POLICY: ("protection policy", "protection policies"),
    Kind.REPLICATION: ("replication", "replications"),
}


def summary(result: LoadResult) -> dict[str, int]:
    counts = {"files": len(result.files), "documents": result.documents}
    counts["templates"] = sum(1 for f in result.files if f.role is Role.TEMPLATE)
    counts["varsFiles"] = sum(1 for f in result.files if f.role is Role.VARS)
    counts.update({str(kind): result.kinds.get(kind, 0) for kind in Kind})
    return counts


def summary_line(result: LoadResult) -> str:
    kinds: Mapping[Kind, int] = result.kinds
    parts = [f"{kinds[k]} {_NOUNS[k][kinds[k] != 1]}" for k in Kind if kinds.get(k)]
    files = len(result.files)
    text = f"{files} file{'s' if files != 1 else ''}, {result.documents} documents"
    return text + (": " + ", ".join(parts) if parts else "")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option(
    "--max-file-size",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_FILE_BYTES,
    show_default=True,
    help="Largest policy file accepted, in bytes.",
)
def validate(paths: tuple[str, ...], as_json: bool, max_file_size: int) -> None:
    """Check policy files and directories; exit 0 when valid, 1 with every error otherwise."""
    try:
        result = load(paths, max_file_bytes=max_file_size)
    except Exception as exc:  # a bug must not show the user a traceback
        raise internal_error(exc) from None
    valid = not any(e.severity == "error" for e in result.errors)
    if as_json:
        echo_json(
            {
                "valid": valid,
                "errors": [error_json(e) for e in result.errors],
                "summary": summary(result),
            }
        )
    else:
        echo_errors(result.errors)
        if valid:
            click.echo(f"valid: {summary_line(result)}")
        else:
            count = len(result.errors)
            click.echo(f"invalid: {count} error{'s' if count != 1 else ''} in {summary_line(result)}", err=True)
    raise click.exceptions.Exit(0 if valid else 1)
