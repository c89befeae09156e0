"""`reconciler plan PATH…`: load → observe → plan (pure) → render. Changes nothing anywhere."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from reconciler.cli.output import echo_errors, internal_error, make_console
from reconciler.cli.render import render_human, render_json

if TYPE_CHECKING:  # the plan and the model load only when a command runs (`validate` stays light)
    from reconciler.core.plan import Plan
    from reconciler.policy.model import PolicySet

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def default_state_dir() -> Path:
    """Where the journal lives: `$RECONCILER_STATE_DIR`, else `/var/lib/reconciler` for root, else `~/.local/state`."""
    if env := os.environ.get("RECONCILER_STATE_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/reconciler")
    return Path.home() / ".local" / "state" / "reconciler"


def parse_at(value: str | None) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.UTC)
    try:
        at = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO-8601 time such as 2026-12-01T08:30:00Z") from None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (format_version 1).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Save the plan for `apply PLANFILE`.")
@click.option(
    "--detailed-exitcode", is_flag=True,
    help="Exit 0 when nothing to do, 1 on error (also: nothing to do but the plan is incomplete), 2 when there "
         "are changes."
)
@click.option("--at", "at", metavar="TIME", help="Plan as if now were TIME (ISO-8601; default: now).")
@click.option(
    "--target", "targets", multiple=True, metavar="VM", help="Only this VM (name, id or instanceUuid); repeatable."
)
@click.option("--explain-retention", is_flag=True, help="Show which retention rule keeps each backup it keeps.")
@click.option("--allow-mass-prune", is_flag=True, help="Allow pruning more than half of a VM's backups.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), help="Where the journal lives.")
def plan(
    paths: tuple[Path, ...],
    as_json: bool,
    out: Path | None,
    detailed_exitcode: bool,
    at: str | None,
    targets: tuple[str, ...],
    explain_retention: bool,
    allow_mass_prune: bool,
    state_dir: Path | None,
) -> None:
    """Show what `apply` would change, Terraform style."""
    now = parse_at(at)
    try:
        the_plan, policies = plan_with_policies(
            paths, now, state_dir or default_state_dir(),
            targets=targets, explain_retention=explain_retention, allow_mass_prune=allow_mass_prune,
        )
    except click.exceptions.Exit:
        raise
    except Exception as exc:
        raise internal_error(exc) from None
    if out is not None:
        # the policy paths travel with the plan so `apply PLANFILE` can load the same policies
        # and their digest, of the very policy set this plan was computed from: `apply PLANFILE` refuses
        # when the policies it loads then differ, so an edit in between cannot silently change what runs
        from reconciler.policy.digest import policy_digest

        saved = the_plan.to_dict() | {"policy_paths": [str(p.absolute()) for p in paths],
                                      "policy_digest": policy_digest(policies)}
        out.write_text(json.dumps(saved, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if as_json:
        click.echo(render_json(the_plan, explain_retention=explain_retention))
    else:
        console = make_console()
        render_human(the_plan, console, explain_retention=explain_retention)
        if out is not None:
            console.print(f"\nSaved the plan to {out}; run `reconciler apply {out}` to carry out exactly this.")
    if not the_plan.has_changes and (the_plan.has_errors or not the_plan.complete):
        # nothing to do is only success when everything was seen: an incomplete plan is never "in sync"
        raise click.exceptions.Exit(EXIT_ERROR)
    if detailed_exitcode and the_plan.has_changes:
        raise click.exceptions.Exit(EXIT_CHANGES)


def make_plan(
    paths: tuple[Path, ...],
    now: dt.datetime,
    state_dir: Path,
    *,
    targets: tuple[str, ...] = (),
    explain_retention: bool = False,
    allow_mass_prune: bool = False,
) -> Plan:
    """The whole read-only pipeline, shared by `plan`, `apply` and `watch`."""
    return plan_with_policies(paths, now, state_dir, targets=targets, explain_retention=explain_retention,
                              allow_mass_prune=allow_mass_prune)[0]


def plan_with_policies(
    paths: tuple[Path, ...],
    now: dt.datetime,
    state_dir: Path,
    *,
    targets: tuple[str, ...] = (),
    explain_retention: bool = False,
    allow_mass_prune: bool = False,
) -> tuple[Plan, PolicySet]:
    """`make_plan`, and the policy set it was made from (a saved plan records its digest)."""
    from reconciler.adapters.journal.sqlite import SqliteJournal
    from reconciler.adapters.observe import Sessions, observe
    from reconciler.core.planner import plan as compute_plan
    from reconciler.policy import load

    result = load([str(p) for p in paths])
    if result.errors:
        echo_errors(result.errors)
        raise click.exceptions.Exit(EXIT_ERROR)
    journal_path = state_dir / "journal.db"
    journal = SqliteJournal(journal_path) if journal_path.exists() else None
    sessions = Sessions()
    try:
        observed = observe(result.policy_set, sessions, journal)
    finally:
        sessions.close()
        if journal is not None:
            journal.close()
    return compute_plan(
        result.policy_set, observed, now,
        allow_mass_prune=allow_mass_prune, targets=targets, explain_retention=explain_retention,
    ), result.policy_set
