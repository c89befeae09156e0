"""`reconciler apply PATH… | PLANFILE`: lock the repositories → observe → plan (or check a saved plan still
fits the world) → show it and ask → execute → summary. Exit 1 when any change failed, naming the VMs, or
when the plan was incomplete (a connection or repository it needed could not be observed)."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from reconciler.cli.output import echo_errors, internal_error, make_console
from reconciler.cli.plan import EXIT_ERROR, default_state_dir, parse_at
from reconciler.cli.render import render_human

EXIT_OK = 0
WORK_PREFIX = "rcn-apply-"  # + run id: the per-run work directory in the temp dir


def new_run_id(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--auto-approve", is_flag=True, help="Do not ask for approval (scripts, CI, `watch`).")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line on stdout, no questions asked.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), help="Where the journal lives.")
@click.option("--parallel", type=click.IntRange(1, 64), default=4, show_default=True,
              help="VMs worked on at once (per-host limits from the connections apply too).")
@click.option("--target", "targets", multiple=True, metavar="VM", help="Only this VM; repeatable.")
@click.option("--allow-mass-prune", is_flag=True, help="Allow pruning more than half of a VM's backups.")
@click.option("--at", "at", metavar="TIME", help="Plan as if now were TIME (ISO-8601; default: now).")
@click.option("--task-timeout", type=click.FloatRange(1), default=1800.0, show_default=True,
              help="Seconds to wait for one vSphere task (snapshot create/remove, reconfigure).")
@click.option("--metrics-textfile", type=click.Path(dir_okay=False, path_type=Path),
              envvar="RECONCILER_METRICS_TEXTFILE", show_envvar=True,
              help="Write Prometheus metrics here at the end (a *.prom file in node_exporter's textfile directory).")
def apply(paths: tuple[Path, ...], auto_approve: bool, as_json: bool, state_dir: Path | None, parallel: int,
          targets: tuple[str, ...], allow_mass_prune: bool, at: str | None, task_timeout: float,
          metrics_textfile: Path | None) -> None:
    """Make the world match the policies: PATH… (plan now) or a PLANFILE saved by `plan --out`."""
    from reconciler.apply.context import ApplyOptions

    # test hooks, not options: where to simulate a crash, how long to back off between retries
    options = ApplyOptions(parallel=parallel, task_timeout=task_timeout,
                           crash_at=os.environ.get("RECONCILER_CRASH_AT") or None,
                           backoff=float(os.environ.get("RECONCILER_RETRY_BACKOFF", "2")))
    try:
        code = _apply(paths, auto_approve, as_json, state_dir or default_state_dir(), targets, allow_mass_prune,
                      parse_at(at), options, metrics_textfile)
    except click.exceptions.Exit:
        raise
    except click.ClickException:
        raise
    except Exception as exc:
        raise internal_error(exc) from None
    raise click.exceptions.Exit(code)


def _apply(paths: tuple[Path, ...], auto_approve: bool, as_json: bool, state_dir: Path,
           targets: tuple[str, ...], allow_mass_prune: bool, now: dt.datetime, options: Any,
           metrics_textfile: Path | None = None) -> int:
    from dataclasses import replace

    from reconciler.adapters.journal.base import JournalError, RunResult
    from reconciler.adapters.journal.sqlite import SqliteJournal
    from reconciler.adapters.observe import Sessions, observe
    from reconciler.apply.events import JsonLinesReporter, RichReporter
    from reconciler.apply.executor import Executor, Result, ThreadJournals
    from reconciler.apply.locks import ApplyLocked, repository_locks
    from reconciler.core.plan import Plan, PlanFormatError
    from reconciler.core.planner import plan as compute_plan
    from reconciler.policy import load

    console = make_console(stderr=as_json)
    saved, policy_paths = _saved_plan(paths, Plan, PlanFormatError)
    result = load([str(p) for p in policy_paths])
    if result.errors:
        echo_errors(result.errors)
        return EXIT_ERROR
    policies = result.policy_set
    if saved is not None:
        _check_policy_digest(paths[0], policies)  # before any lock, session or journal: nothing is done
    run_id = new_run_id(dt.datetime.now(dt.UTC))
    try:
        journal = SqliteJournal(state_dir / "journal.db")
    except JournalError as exc:
        raise click.ClickException(str(exc)) from None
    repositories = {p.repository for p in policies.policies.values()} & set(policies.repositories)
    sessions = Sessions()
    try:
        with repository_locks(state_dir, journal, repositories, run_id):
            observed = observe(policies, sessions, journal)
            if saved is not None:
                if saved.fingerprint != observed.fingerprint():
                    raise click.ClickException(
                        "the world has changed since this plan was made (its observed-state fingerprint no "
                        "longer matches); make a new one with `reconciler plan … --out PLANFILE` and apply that")
                the_plan = saved
            else:
                the_plan = compute_plan(policies, observed, now, allow_mass_prune=allow_mass_prune, targets=targets)
            if not as_json:
                render_human(the_plan, console)
            if not the_plan.changes:
                if metrics_textfile is not None:  # fresh "last success" gauges even when nothing was due
                    _write_metrics(metrics_textfile, policies, observed, [], [])
                if as_json and not the_plan.complete:  # no plan was rendered: say it where a script looks
                    click.echo(f"apply is incomplete: {the_plan.unobserved.describe()}; nothing else to do",
                               err=True)
                return EXIT_ERROR if the_plan.has_errors or not the_plan.complete else EXIT_OK
            if not auto_approve and not _approved(console, as_json):
                return EXIT_ERROR
            journal.start_run(run_id, "apply")
            reporter = JsonLinesReporter(sys.stdout) if as_json else RichReporter(console)
            _sweep_work_dirs(journal)
            # short and per run: nbdkit's Unix sockets live here (at most 107 bytes of path)
            work_dir = Path(tempfile.gettempdir()) / f"{WORK_PREFIX}{run_id}"
            work_dir.mkdir(mode=0o700)
            journals = ThreadJournals(lambda: SqliteJournal(state_dir / "journal.db"))
            executor = Executor(the_plan, policies, observed, sessions, journals, run_id,
                                replace(options, work_dir=work_dir), reporter.emit)
            from reconciler.apply.events import Event, Kind

            reporter.emit(Event(Kind.RUN_STARTED, data={"run": run_id, "changes": len(the_plan.changes)}))
            try:
                outcomes = executor.run()
            finally:
                reporter.close()
                _remove_empty(work_dir)
            failed = [o for o in outcomes if o.result is Result.FAILED]
            journal.finish_run(run_id, RunResult.PARTIAL if failed and len(failed) < len(outcomes)
                               else RunResult.FAILED if failed else RunResult.SUCCEEDED)
            names = sorted({o.change.vm.name for o in failed})
            reporter.emit(Event(Kind.RUN_DONE, data={"run": run_id, "failed": names,
                                                     "result": "failed" if failed else "succeeded"}))
            if not as_json:
                _summary(console, outcomes, run_id)
            if metrics_textfile is not None:
                done = {o.change for o in outcomes if o.result is Result.SUCCEEDED}
                _write_metrics(metrics_textfile, policies, observed, outcomes,
                               [c for c in the_plan.changes if c not in done])
            if failed:
                click.echo(f"apply failed for: {', '.join(names)}", err=True)
                return EXIT_ERROR
            if not the_plan.complete:  # what was seen is done; exit 0 would claim the world matches
                click.echo(f"apply is incomplete: {the_plan.unobserved.describe()}; their VMs were not reconciled",
                           err=True)
                return EXIT_ERROR
            return EXIT_OK
    except ApplyLocked as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        sessions.close()
        journal.close()


def _write_metrics(path: Path, policies: Any, observed: Any, outcomes: list[Any], pending: list[Any]) -> None:
    """The node_exporter textfile, built as `watch` builds its metrics: the pool (read again: the backups
    just made are there) plus this run's outcomes. A failure to write is reported, never fails the run."""
    from dataclasses import replace

    from reconciler.adapters import metrics as m
    from reconciler.adapters.observe import observe_repository

    fresh = tuple(observe_repository(policies.repositories[r.name]) if r.name in policies.repositories else r
                  for r in observed.repositories)
    data = m.with_plan(m.with_outcomes(m.from_observed(replace(observed, repositories=fresh)), outcomes,
                                       dt.datetime.now(dt.UTC)), pending)
    try:
        m.write_textfile(path, data)
    except OSError as exc:
        click.echo(f"warning: could not write the metrics textfile {path}: {exc.strerror or exc}", err=True)


def _saved_plan(paths: tuple[Path, ...], plan_type: Any, format_error: Any) -> tuple[Any, tuple[Path, ...]]:
    """(saved plan or None, policy paths). A saved plan names the policy paths it was made from; PATHs
    given after it take precedence."""
    first = paths[0]
    if not first.is_file() or first.suffix not in (".json", ".plan"):
        return None, paths
    text = first.read_text(encoding="utf-8")
    try:
        saved = plan_type.from_json(text)
    except format_error as exc:
        raise click.ClickException(f"{first}: {exc}") from None
    rest = paths[1:]
    if not rest:
        recorded = json.loads(text).get("policy_paths") or []
        rest = tuple(Path(p) for p in recorded)
    if not rest:
        raise click.ClickException(f"{first} does not record the policy paths it was made from; give them: "
                                   f"`reconciler apply {first} POLICY_PATH…`")
    return saved, rest


def _check_policy_digest(plan_file: Path, policies: Any) -> None:
    """Refuse a saved plan whose policies changed since: the executor reads repository, connection,
    quiesce and exclusions from the policies loaded now, so applying would run something not reviewed."""
    from reconciler.policy.digest import policy_digest

    recorded = json.loads(plan_file.read_text(encoding="utf-8")).get("policy_digest")
    if recorded is None:
        raise click.ClickException(f"{plan_file} does not record a digest of its policies (an older plan?): "
                                   "run `reconciler plan … --out PLANFILE` again and apply that")
    if recorded != policy_digest(policies):
        raise click.ClickException(
            f"the policies changed since this plan was made: {plan_file} was planned from other policies than "
            "those loaded now (repository, connection, quiesce or exclusions may differ); "
            "run `reconciler plan … --out PLANFILE` again and apply that")


def _approved(console: Console, as_json: bool) -> bool:
    if as_json or not sys.stdin.isatty():
        click.echo("apply needs approval and there is no terminal to ask: review the plan, then run again "
                   "with --auto-approve (or apply a saved plan with `reconciler apply PLANFILE --auto-approve`)",
                   err=True)
        return False
    console.print("\nDo you want to perform these actions? Only 'yes' will be accepted.")
    answer = click.prompt("  Enter a value", default="", show_default=False)
    if answer.strip() != "yes":
        console.print("Apply cancelled.")
        return False
    return True


def _summary(console: Console, outcomes: list[Any], run_id: str) -> None:
    from reconciler.apply.executor import Result

    table = Table(title=f"Run {run_id}", title_justify="left")
    for column in ("VM", "action", "kind", "read", "written", "duration", "result"):
        table.add_column(column, justify="right" if column in ("read", "written", "duration") else "left")
    for o in outcomes:
        backup = o.backup
        style = {Result.SUCCEEDED: "green", Result.FAILED: "red", Result.SKIPPED: "yellow"}[o.result]
        detail = o.result.value if o.result is Result.SUCCEEDED else f"{o.result.value}: {o.error}"
        table.add_row(o.change.vm.name, o.change.action.value,
                      backup.kind.value if backup else (o.change.kind.value if o.change.kind else ""),
                      _size(backup.bytes_read) if backup else "", _size(backup.bytes_written) if backup else "",
                      f"{o.seconds:.1f} s", f"[{style}]{detail}[/]")
    console.print(table)


def _size(n: int) -> str:
    from reconciler.apply.executor import _size as size

    return size(n)


def _sweep_work_dirs(journal: Any) -> None:
    """Remove what crashed runs of this journal left in their work directories (cookies, sockets)."""
    for directory in Path(tempfile.gettempdir()).glob(f"{WORK_PREFIX}*"):
        run = journal.run(directory.name.removeprefix(WORK_PREFIX))
        if run is not None and (not run.in_progress or run.interrupted):
            shutil.rmtree(directory, ignore_errors=True)


def _remove_empty(directory: Path) -> None:
    try:
        for child in directory.iterdir():
            if child.is_dir():
                _remove_empty(child)
        directory.rmdir()
    except OSError:
        pass  # something was left for a post-mortem (an nbdkit log): keep it
