"""`reconciler status [PATH…]`: per protected VM, its last backup, age, chain length and next due time —
read from the ZFS repositories (the source of truth) and the journal (last failure). No vSphere call."""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from reconciler.cli.output import echo_errors, internal_error
from reconciler.cli.plan import EXIT_ERROR, default_state_dir


@dataclass(frozen=True)
class VmStatus:
    vm: str
    instance_uuid: str
    repository: str
    dataset: str
    policy: str
    last_backup: str | None
    last_backup_at: str | None
    age_seconds: int | None
    kind: str | None
    chain_length: int
    next_due: str | None
    state: str  # ok, dirty, retired, never, failed
    last_error: str | None = None


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="A JSON list, one object per VM.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), help="Where the journal lives.")
def status(paths: tuple[Path, ...], as_json: bool, state_dir: Path | None) -> None:
    """What is protected and how fresh it is (PATH: the policy set, for repositories and schedules)."""
    try:
        rows = collect(paths, state_dir or default_state_dir(), dt.datetime.now(dt.UTC))
    except click.exceptions.Exit:
        raise
    except click.ClickException:
        raise
    except Exception as exc:
        raise internal_error(exc) from None
    if as_json:
        click.echo(json.dumps([asdict(r) for r in rows], indent=2))
        return
    render(rows, Console(file=sys.stdout, highlight=False, soft_wrap=True))


def collect(paths: tuple[Path, ...], state_dir: Path, now: dt.datetime) -> list[VmStatus]:
    from reconciler.adapters.journal.sqlite import SqliteJournal
    from reconciler.adapters.observe import chains_of, observe_journal
    from reconciler.adapters.zfs import ZfsError, select_driver
    from reconciler.adapters.zfs.backups import read_repository
    from reconciler.core import schedule as schedules
    from reconciler.policy import load

    result = load([str(p) for p in paths])
    if result.errors:
        echo_errors(result.errors)
        raise click.exceptions.Exit(EXIT_ERROR)
    policies = result.policy_set
    journal_path = state_dir / "journal.db"
    failures = {}
    if journal_path.exists():
        with SqliteJournal(journal_path) as journal:
            failures = {h.instance_uuid: h.last_failure for h in observe_journal(journal).vms if h.last_failure}
    rows: list[VmStatus] = []
    for repo in sorted(policies.repositories.values(), key=lambda r: r.name):
        try:
            record = read_repository(select_driver(repo.driver.value), repo.dataset)
        except ZfsError as exc:
            raise click.ClickException(f"repository {repo.name!r}: {exc}") from None
        for chain in chains_of(record):
            complete = [b for b in chain.backups if b.complete and b.ours]
            last = complete[-1] if complete else None
            policy = policies.policies.get(chain.policy)
            sched = policies.schedules.get(policy.schedule) if policy else None
            due = (schedules.next_due(sched, last.created if last else None, now)
                   if sched and not chain.retired else None)
            state = ("retired" if chain.retired else "dirty" if chain.dirty_run_id
                     else "failed" if chain.instance_uuid in failures else "ok" if last else "never")
            rows.append(VmStatus(
                vm=chain.vm_name or chain.instance_uuid, instance_uuid=chain.instance_uuid, repository=repo.name,
                dataset=chain.dataset, policy=chain.policy, last_backup=last.name if last else None,
                last_backup_at=_iso(last.created) if last else None,
                age_seconds=int((now - last.created).total_seconds()) if last else None,
                kind=last.kind.value if last and last.kind else None, chain_length=len(complete),
                next_due=_iso(due) if due else None, state=state, last_error=failures.get(chain.instance_uuid),
            ))
    return sorted(rows, key=lambda r: (r.repository, r.vm))


def render(rows: list[VmStatus], console: Console) -> None:
    if not rows:
        console.print("No protected VMs yet: run `reconciler apply` first.")
        return
    table = Table(title_justify="left")
    for column in ("VM", "last backup", "age", "kind", "chain", "next due", "state"):
        table.add_column(column)
    styles = {"ok": "green", "dirty": "magenta", "failed": "red", "never": "yellow", "retired": "dim"}
    for r in rows:
        error = (r.last_error or "").splitlines()[0][:60] if r.last_error else ""
        state = f"[{styles[r.state]}]{r.state}[/]" + (f": {error}" if error else "")
        table.add_row(r.vm, _short(r.last_backup_at), _age(r.age_seconds), r.kind or "", str(r.chain_length),
                      _short(r.next_due), state)
    console.print(table)


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _short(iso: str | None) -> str:
    """`2026-11-30 02:19Z`: minutes are enough in a table (JSON keeps the full time)."""
    return iso[:16].replace("T", " ") + "Z" if iso else "—"


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
