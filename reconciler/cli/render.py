"""Plan renderers (Terraform style). They see only a `Plan`, never the world.

`render_human` writes to a rich Console: changes grouped per policy and VM with their symbols and
reasons, diagnostics below (with why a connection or repository was not observed), then the summary line,
which names what was not observed. `render_json` is the documented, versioned format.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import groupby
from typing import Protocol

from rich.console import Console
from rich.markup import escape

from reconciler.core.diagnostics import Diagnostic, Severity
from reconciler.core.observed import BackupKind
from reconciler.core.plan import Action, Change, Plan

_STYLE = {"+": "green", "~": "yellow", "-": "red", "±": "magenta"}
_SEVERITY_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
_LIST_LIMIT = 20  # snapshot names listed per change before "… and N more"


class Renderer(Protocol):
    def __call__(self, plan: Plan, console: Console, *, explain_retention: bool = False) -> None: ...


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else (plural or word + 's')}"


MATCHES = "No changes. The world matches the policies."


def summary(plan: Plan) -> str:
    """`Plan: 2 to pair, 5 backups (2 full, 3 incremental), 12 to prune, 1 snapshot to remove.`

    An incomplete plan says so in the same line: "no changes" must never read as "in sync" when part
    of the world could not be seen."""
    if not plan.complete:
        head = _changes(plan) if plan.changes else "No changes in what could be observed."
        return f"{head} The plan is incomplete: {plan.unobserved.describe()}."
    return _changes(plan) if plan.changes else MATCHES


def _changes(plan: Plan) -> str:
    count = {a: 0 for a in Action}
    full = incremental = pruned = removed = 0
    for change in plan.changes:
        count[change.action] += 1
        if change.action is Action.BACKUP:
            full += change.kind is BackupKind.FULL
            incremental += change.kind is BackupKind.INCREMENTAL
        elif change.action is Action.PRUNE:
            pruned += len(change.snapshots)
        elif change.action is Action.REMOVE_VM_SNAPSHOT:
            removed += len(change.snapshots)
    parts = []
    if count[Action.PAIR]:
        parts.append(f"{count[Action.PAIR]} to pair")
    if count[Action.UNPAIR]:
        parts.append(f"{count[Action.UNPAIR]} to unpair")
    if count[Action.REBIND]:
        parts.append(f"{count[Action.REBIND]} to rebind")
    if count[Action.REPAIR]:
        parts.append(f"{count[Action.REPAIR]} to repair")
    if count[Action.ENABLE_CBT]:
        parts.append(f"{count[Action.ENABLE_CBT]} to enable CBT")
    if count[Action.CONSOLIDATE]:
        parts.append(f"{count[Action.CONSOLIDATE]} to consolidate")
    if count[Action.BACKUP]:
        parts.append(f"{_plural(count[Action.BACKUP], 'backup')} ({full} full, {incremental} incremental)")
    if pruned:
        parts.append(f"{pruned} to prune")
    if removed:
        parts.append(f"{_plural(removed, 'snapshot')} to remove")
    return "Plan: " + ", ".join(parts) + "." if parts else MATCHES


def _headline(change: Change) -> str:
    symbol = change.action.symbol
    style = _STYLE[symbol]
    label = change.action.value
    if change.kind is not None:
        label += f" {change.kind.value}"
    if change.action is Action.PRUNE and change.snapshots:
        label += f" {_plural(len(change.snapshots), 'snapshot')}"
    extra = ""
    if change.wave is not None:
        extra = f" [dim](wave {change.wave}{', host ' + escape(change.host) if change.host else ''})[/dim]"
    return f"[{style}]{symbol} {label}[/{style}]{extra}: {escape(change.reason)}"


def _details(change: Change) -> Iterable[str]:
    if change.before is not None and change.after is not None:
        yield (f"address: {escape(change.before.connection)}/{escape(change.before.id)} -> "
               f"{escape(change.after.connection)}/{escape(change.after.id)}")
    if change.action is Action.BACKUP and change.kind is BackupKind.INCREMENTAL:
        for disk in change.disks:
            yield f"disk {disk.key}: {disk.mode.value} ({escape(disk.reason)})"
    for name in change.snapshots[:_LIST_LIMIT]:  # every action that lists snapshots removes them
        yield f"[red]-[/red] {escape(name)}"
    if len(change.snapshots) > _LIST_LIMIT:
        yield f"… and {len(change.snapshots) - _LIST_LIMIT} more"


def _diagnostic_line(diag: Diagnostic) -> str:
    style = _SEVERITY_STYLE[diag.severity]
    where = f" ({escape(str(diag.location))})" if diag.location else ""
    return f"[{style}]{diag.severity.value:<7}[/{style}] {diag.code.value}: {escape(diag.message)}{where}"


def render_human(plan: Plan, console: Console, *, explain_retention: bool = False) -> None:
    explain = explain_retention or plan.options.explain_retention
    if plan.changes:
        console.print("reconciler will perform the following actions:\n")
    for policy, by_policy in groupby(plan.changes, key=lambda c: c.policy):
        console.print(f"[bold]policy {escape(policy)}[/bold]" if policy else "[bold](no policy)[/bold]")
        for _, by_vm in groupby(by_policy, key=lambda c: c.vm.instance_uuid):
            changes = list(by_vm)
            vm = changes[0].vm
            console.print(f"  [bold]# {escape(vm.name or vm.instance_uuid)}[/bold] "
                          f"[dim]({escape(vm.id)} on {escape(vm.connection)}, {vm.instance_uuid})[/dim]")
            for change in changes:
                console.print(f"    {_headline(change)}", highlight=False)
                for line in _details(change):
                    console.print(f"        {line}", highlight=False)
        console.print()
    if explain and plan.retention:
        console.print("[bold]Retention:[/bold]")
        for explanation in plan.retention:
            vm = explanation.vm
            console.print(f"  [bold]# {escape(vm.name or vm.instance_uuid)}[/bold] "
                          f"[dim](policy {escape(explanation.policy)})[/dim]")
            for kept in explanation.kept:
                console.print(f"    [green]=[/green] {escape(kept.name)} kept by {', '.join(kept.rules)}",
                              highlight=False)
        console.print()
    if plan.diagnostics:
        console.print("[bold]Diagnostics:[/bold]")
        for diag in plan.diagnostics:
            console.print(f"  {_diagnostic_line(diag)}", highlight=False)
        console.print()
    console.print(f"[bold]{summary(plan)}[/bold]", highlight=False)


def render_json(plan: Plan, console: Console | None = None, *, explain_retention: bool = False) -> str:
    """The saved-plan / `--json` format; printed verbatim (no markup) when a console is given."""
    text = plan.to_json()
    if console is not None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)
    return text
