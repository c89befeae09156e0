"""`reconciler backups VM`: a VM's backup chain (time, kind, bytes, verified, held, complete), and holding
or releasing one backup (ZFS holds, which prune honours). Also the options `restore` and `verify` share
to find a VM's repository: `--repository DATASET`, or the repositories of a policy set."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from reconciler.cli.output import echo_errors, internal_error, make_console

DEFAULT_POLICIES = Path("policies")
DEFAULT_HOLD_TAG = "reconciler-keep"
F = TypeVar("F", bound=Callable[..., Any])


def repository_options(command: F) -> F:
    """--repository / --policies / --driver, as `restore`, `verify` and `backups` take them."""
    command = click.option("--driver", default="auto", type=click.Choice(["auto", "pyzfs", "cli"]),
                           help="ZFS driver for --repository (default: auto).")(command)
    command = click.option("--policies", "policies", multiple=True, type=click.Path(path_type=Path),
                           help="Policy files or directories whose repositories are searched "
                                "(default: ./policies if present); repeatable.")(command)
    return click.option("--repository", metavar="DATASET",
                        help="The repository's parent dataset (e.g. tank/agentless), instead of policies.")(command)


@functools.cache
def load_policy_set(paths: tuple[Path, ...]) -> Any:
    """The policy set of `paths` (default ./policies); None when no paths and no ./policies."""
    from reconciler.policy import load

    if not paths:
        if not DEFAULT_POLICIES.exists():
            return None
        paths = (DEFAULT_POLICIES,)
    result = load([str(p) for p in paths])
    if result.errors:
        echo_errors(result.errors)
        raise click.exceptions.Exit(1)
    return result.policy_set


def repositories(repository: str | None, policies: tuple[Path, ...], driver: str) -> list[Any]:
    from reconciler.restore.locate import RepositoryRef

    if repository:
        return [RepositoryRef(repository, driver)]
    policy_set = load_policy_set(policies)
    if policy_set is None:
        raise click.UsageError("give --repository DATASET or --policies PATH (no ./policies here)")
    refs = [RepositoryRef(r.dataset, r.driver.value, r.name)
            for r in sorted(policy_set.repositories.values(), key=lambda r: r.name)]
    if not refs:
        raise click.UsageError("the policy set declares no Repository")
    return refs


def policy_exclusions(policies: tuple[Path, ...], policy_name: str | None) -> Any:
    """The volume exclusions of the policy that made a chain (none known: no exclusions)."""
    from reconciler.core.volumes import NO_EXCLUSIONS

    policy_set = load_policy_set(policies) if policy_name else None
    policy = policy_set.policies.get(policy_name) if policy_set is not None else None
    return policy.exclusions if policy is not None else NO_EXCLUSIONS


def restore_clones(zfs: Any, dataset: str) -> list[str]:
    """Clones left below a VM's dataset by `--keep-clone` or by a restore that was killed."""
    from reconciler.restore.clone import CLONE_PREFIX

    return [d.name for d in zfs.list_datasets(dataset)
            if d.name.rpartition("/")[0] == dataset and d.name.rpartition("/")[2].startswith(CLONE_PREFIX)]


def user_errors(command: F) -> F:
    """RestoreError and friends → a one-line error and exit 1; anything unexpected → exit 2, no traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from reconciler.adapters.checksum import ChecksumError
        from reconciler.adapters.zfs import ZfsError
        from reconciler.restore.locate import RestoreError

        try:
            return command(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except (RestoreError, ZfsError, ChecksumError) as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise click.exceptions.Exit(130) from None
        except Exception as exc:
            raise internal_error(exc) from None

    return wrapper  # type: ignore[return-value]


def stdout_console() -> Console:
    """Tables at full width when piped (a pipe has no width; rich would assume 80 and cut columns)."""
    return make_console()


def _iso(epoch_or_time: int | dt.datetime) -> str:
    at = epoch_or_time if isinstance(epoch_or_time, dt.datetime) else dt.datetime.fromtimestamp(epoch_or_time, dt.UTC)
    return at.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def backup_rows(chain: Any) -> list[dict[str, Any]]:
    return [
        {
            "runId": b.run_id,
            "snapshot": b.record.name,
            "time": _iso(b.time),
            "kind": b.record.kind,
            "complete": b.record.complete,
            "bytesRead": b.record.bytes_read,
            "bytesWritten": b.record.bytes_written,
            "verified": b.verified,
            "verifyResult": b.verify_result,
            "held": b.record.held,
            "holds": b.record.userrefs,
            "disks": [{"key": d.key, "capacity": d.capacity, "sha256": d.sha256} for d in b.record.disks],
        }
        for b in chain.backups
    ]


def _bytes(value: int | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def render(chain: Any, rows: list[dict[str, Any]], console: Console) -> None:
    console.print(f"{chain.label}: {chain.dataset.dataset}")
    if not rows:
        console.print("no backups yet")
        return
    table = Table(title_justify="left")
    for column in ("run id", "time", "kind", "read", "written", "verified", "held", "complete"):
        table.add_column(column, justify="right" if column in ("read", "written") else "left")
    for row in rows:
        result = row["verifyResult"]
        verified = "—" if not row["verified"] else (
            f"[green]ok[/] {row['verified']}" if result == "ok" else f"[red]{result}[/] {row['verified']}")
        table.add_row(row["runId"], row["time"], row["kind"] or "?", _bytes(row["bytesRead"]),
                      _bytes(row["bytesWritten"]), verified, "held" if row["held"] else "",
                      "yes" if row["complete"] else "[red]no[/]")
    console.print(table)


@click.command()
@click.argument("vm")
@repository_options
@click.option("--json", "as_json", is_flag=True, help="The chain as a JSON object.")
@click.option("--hold", "hold", metavar="RUN_ID", help="Put a ZFS hold on this backup (prune keeps it).")
@click.option("--release", "release", metavar="RUN_ID", help="Release the hold on this backup.")
@click.option("--tag", default=DEFAULT_HOLD_TAG, show_default=True, help="The hold's tag.")
@user_errors
def backups(vm: str, repository: str | None, policies: tuple[Path, ...], driver: str, as_json: bool,
            hold: str | None, release: str | None, tag: str) -> None:
    """List the backups of VM (instanceUuid, name or id), or hold / release one."""
    from reconciler.restore.locate import find_chain, select_backup

    if hold and release:
        raise click.UsageError("--hold and --release are exclusive")
    chain, zfs = find_chain(repositories(repository, policies, driver), vm)
    if hold or release:
        backup = select_backup(chain, hold or release)
        if hold:
            zfs.hold(backup.record.name, tag)
            click.echo(f"held {backup.record.name} (tag {tag})")
        else:
            zfs.release(backup.record.name, tag)
            click.echo(f"released {backup.record.name} (tag {tag})")
        return
    rows = backup_rows(chain)
    clones = restore_clones(zfs, chain.dataset.dataset)
    if as_json:
        click.echo(json.dumps({"vm": chain.dataset.vm_name, "instanceUuid": chain.dataset.instance_uuid,
                               "dataset": chain.dataset.dataset, "backups": rows, "restoreClones": clones}, indent=2))
        return
    render(chain, rows, stdout_console())
    for clone in clones:
        click.echo(f"restore clone still present: {clone} (zfs destroy it when done; it pins its backup)")
