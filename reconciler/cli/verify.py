"""`reconciler verify VM`: prove a backup restorable and record the result on its snapshot. Exit 1 when
any check fails."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click
from rich.table import Table

from reconciler.cli.backups import (
    policy_exclusions,
    repositories,
    repository_options,
    stdout_console,
    user_errors,
)

STYLES = {"ok": "green", "failed": "red", "skipped": "yellow"}


@click.command()
@click.argument("vm")
@click.option("--backup", "backup_spec", metavar="RUN_ID|latest|TIME", default="latest", show_default=True,
              help="Which backup to verify.")
@click.option("--deep", is_flag=True, help="Also mount each backed-up file system read-only (libguestfs).")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
@repository_options
@user_errors
def verify(vm: str, backup_spec: str, deep: bool, as_json: bool, repository: str | None,
           policies: tuple[Path, ...], driver: str) -> None:
    """Check that a backup of VM is restorable: digests, partition tables, (--deep) file systems."""
    from reconciler.core.volumes import NO_EXCLUSIONS
    from reconciler.restore.locate import find_chain, select_backup
    from reconciler.restore.verify import verify_backup

    chain, zfs = find_chain(repositories(repository, policies, driver), vm)
    backup = select_backup(chain, backup_spec)
    # volumes the policy excluded are holes in the backup: never mount them
    exclusions = policy_exclusions(policies, chain.dataset.policy) if deep else NO_EXCLUSIONS
    report = verify_backup(zfs, backup, deep=deep, exclusions=exclusions)
    if as_json:
        click.echo(json.dumps({"snapshot": report.snapshot, "verifiedAt": report.verified_at, "ok": report.ok,
                               "result": report.result, "checks": [asdict(c) for c in report.checks]}, indent=2))
    else:
        console = stdout_console()
        console.print(f"{chain.label}: backup {backup.run_id} ({report.snapshot})")
        table = Table(title_justify="left")
        for column in ("disk", "check", "result", "detail"):
            table.add_column(column)
        for check in report.checks:
            style = STYLES[check.outcome.value]
            table.add_row(str(check.disk), check.what, f"[{style}]{check.outcome}[/]", check.detail)
        console.print(table)
        console.print(f"verify-result: {report.result}")
    if not report.ok:
        raise click.exceptions.Exit(1)
