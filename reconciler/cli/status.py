"""`reconciler status [PATH…]`: per protected VM, its last backup, age, chain length, next due time and
whether the last backup was verified — read from the ZFS repositories (the source of truth) and the journal
(last failure). No vSphere call.

`--check` is a monitoring plugin (Nagios, Icinga, Sensu, …): one summary line first, one line per VM after,
exit 0 OK / 1 WARNING / 2 CRITICAL / 3 UNKNOWN from each VM's freshness against its schedule
(`core.freshness`); a newest backup whose verification failed is CRITICAL too."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from reconciler.cli.output import echo_errors, internal_error, make_console
from reconciler.cli.plan import EXIT_ERROR, default_state_dir
from reconciler.core.freshness import format_span


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
    verified: str | None = None  # when the last backup was verified (ISO time), None: never
    verify_result: str | None = None  # "ok" or "failed: …"
    freshness: str | None = None  # OK, WARNING, CRITICAL, UNKNOWN (None: retired, not checked)
    freshness_detail: str | None = None
    check_message: str | None = None  # the short text a check prints for this VM


EXIT_UNKNOWN = 3


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="A JSON list, one object per VM.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), help="Where the journal lives.")
@click.option("--check", is_flag=True,
              help="Monitoring-plugin mode: a summary line, then one line per VM; exit 0 OK, 1 WARNING, "
                   "2 CRITICAL, 3 UNKNOWN.")
@click.option("--warning", type=click.FloatRange(1.0), default=1.5, show_default=True,
              help="WARNING when a backup is this many of its schedule's intervals old (counted from when it "
                   "became due).")
@click.option("--critical", type=click.FloatRange(1.0), default=3.0, show_default=True,
              help="CRITICAL at this many intervals.")
def status(paths: tuple[Path, ...], as_json: bool, state_dir: Path | None, check: bool, warning: float,
           critical: float) -> None:
    """What is protected and how fresh it is (PATH: the policy set, for repositories and schedules)."""
    from reconciler.core.freshness import Thresholds

    try:
        thresholds = Thresholds(warning, critical)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        rows = collect(paths, state_dir or default_state_dir(), dt.datetime.now(dt.UTC), thresholds)
    except click.exceptions.Exit:
        if check:  # the monitoring system must see UNKNOWN, not an ordinary failure
            click.echo("UNKNOWN - the policy files are not valid (see above)")
            raise click.exceptions.Exit(EXIT_UNKNOWN) from None
        raise
    except click.ClickException as exc:
        if check:
            click.echo(f"UNKNOWN - {exc.format_message()}")
            raise click.exceptions.Exit(EXIT_UNKNOWN) from None
        raise
    except Exception as exc:
        if check:
            click.echo(f"UNKNOWN - internal error: {type(exc).__name__}: {exc}")
            raise click.exceptions.Exit(EXIT_UNKNOWN) from None
        raise internal_error(exc) from None
    if as_json:
        click.echo(json.dumps([asdict(r) for r in rows], indent=2))
    elif check:
        click.echo("\n".join(check_lines(rows)))
    else:
        render(rows, make_console())
    if check:
        raise click.exceptions.Exit(int(check_state(rows)))


def collect(paths: tuple[Path, ...], state_dir: Path, now: dt.datetime,
            thresholds: Any = None) -> list[VmStatus]:
    from reconciler.adapters.journal.sqlite import SqliteJournal
    from reconciler.adapters.observe import chains_of, observe_journal
    from reconciler.adapters.zfs import ZfsError, select_driver
    from reconciler.adapters.zfs.backups import read_repository
    from reconciler.core import schedule as schedules
    from reconciler.core.freshness import Thresholds
    from reconciler.policy import load

    thresholds = thresholds or Thresholds()
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
        snapshots = {s.name: s for s in record.snapshots}
        for chain in chains_of(record):
            complete = [b for b in chain.backups if b.complete and b.ours]
            last = complete[-1] if complete else None
            last_record = snapshots.get(f"{chain.dataset}@{last.name}") if last else None
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
                verified=last_record.verified if last_record else None,
                verify_result=last_record.verify_result if last_record else None,
                **_check(chain, policy, sched, last.created if last else None, last_record, now, thresholds),
            ))
    return sorted(rows, key=lambda r: (r.repository, r.vm))


def _check(chain: Any, policy: Any, sched: Any, last: dt.datetime | None, last_record: Any, now: dt.datetime,
           thresholds: Any) -> dict[str, str | None]:
    """The VM's monitoring verdict: freshness against its schedule, then the newest backup's verification."""
    from reconciler.core.freshness import Freshness, freshness

    name = chain.vm_name or chain.instance_uuid
    if chain.retired:
        return {"freshness": None, "freshness_detail": "retired: no longer protected", "check_message": None}
    if policy is None or sched is None:
        detail = f"policy {chain.policy!r} is not in the policy set: its schedule is unknown"
        return {"freshness": Freshness.UNKNOWN.name, "freshness_detail": detail, "check_message": f"{name} {detail}"}
    verdict = freshness(sched, last, now, thresholds, paused=policy.paused)
    state, message = verdict.state, f"{name} {verdict.message}"
    if verdict.state is Freshness.WARNING and last is None:
        message = f"{name} has no complete backup yet"
    elif verdict.state in (Freshness.WARNING, Freshness.CRITICAL) and last is not None and verdict.interval:
        message = (f"{name} last backup {_age(int((now - last).total_seconds()))} ago "
                   f"(due every {_every(verdict.interval)})")
    result = last_record.verify_result if last_record is not None else None
    if result and result != "ok" and state is not Freshness.UNKNOWN:
        state = Freshness.CRITICAL
        message = f"{name} last backup failed verification ({result.removeprefix('failed: ')[:120]})"
    return {"freshness": state.name, "freshness_detail": verdict.message, "check_message": message}


def check_state(rows: list[VmStatus]) -> Any:
    """The check's state: the worst VM's; UNKNOWN when nothing is protected (a monitor must notice)."""
    from reconciler.core.freshness import Freshness, worst

    states = [Freshness[r.freshness] for r in rows if r.freshness]
    return worst(states) if states else Freshness.UNKNOWN


def check_lines(rows: list[VmStatus]) -> list[str]:
    """A plugin's output: the summary line first (what pages show), then one line per VM, worst first."""
    from reconciler.core.freshness import Freshness

    state = check_state(rows)
    checked = [r for r in rows if r.freshness]
    if not checked:
        return [f"{state.name} - no protected VMs in the repositories yet"]
    if state is Freshness.OK:
        summary = f"{len(checked)} VM{'s' if len(checked) != 1 else ''} backed up on time"
    else:
        bad = [r.check_message or r.vm for r in checked if r.freshness == state.name]
        summary = "; ".join(bad[:3]) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")
    order = sorted(checked, key=lambda r: (-_rank(Freshness[r.freshness or "OK"]), r.vm))
    return [f"{state.name} - {summary}",
            *(f"{r.freshness}: {r.vm} - {r.freshness_detail}" for r in order)]


def _rank(state: Any) -> int:
    """Severity order for sorting: UNKNOWN between OK and WARNING, as `worst` treats it."""
    return {0: 0, 3: 1, 1: 2, 2: 3}[int(state)]


def render(rows: list[VmStatus], console: Console) -> None:
    if not rows:
        console.print("No protected VMs yet: run `reconciler apply` first.")
        return
    table = Table(title_justify="left")
    for column in ("VM", "last backup", "age", "kind", "chain", "next due", "verified", "state"):
        table.add_column(column)
    styles = {"ok": "green", "dirty": "magenta", "failed": "red", "never": "yellow", "retired": "dim"}
    for r in rows:
        error = (r.last_error or "").splitlines()[0][:60] if r.last_error else ""
        state = f"[{styles[r.state]}]{r.state}[/]" + (f": {error}" if error else "")
        table.add_row(r.vm, _short(r.last_backup_at), _age(r.age_seconds), r.kind or "", str(r.chain_length),
                      _short(r.next_due), _verified(r), state)
    console.print(table)


def _verified(r: VmStatus) -> str:
    if not r.verify_result:
        return "—"
    if r.verify_result == "ok":
        return f"[green]ok[/] {_short(r.verified)}"
    return f"[red]failed[/] {_short(r.verified)}"


def _every(interval: dt.timedelta) -> str:
    """`1h`, `4h`, `1d`, `30min`: a schedule's interval as people write it."""
    seconds = int(interval.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _short(iso: str | None) -> str:
    """`2026-11-30 02:19Z`: minutes are enough in a table (JSON keeps the full time)."""
    return iso[:16].replace("T", " ") + "Z" if iso else "—"


def _age(seconds: int | None) -> str:
    return "—" if seconds is None else format_span(dt.timedelta(seconds=seconds))
