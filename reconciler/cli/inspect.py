"""`reconciler inspect IMAGE…`: partitions, file systems and backup verdicts of a VM's disk images."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from reconciler.adapters.inspect import DiskReport, InspectError, analyse, inspect_image
from reconciler.adapters.inspect.allocation import Allocation, AllocationMap, read_volume_allocations
from reconciler.adapters.inspect.reader import FileReader
from reconciler.cli.output import make_console
from reconciler.core.thin import ThinVolume
from reconciler.core.volumes import Verdict
from reconciler.policy.model import Exclusions

# --exclude names, as the policy's `exclusions` keys spell them (camelCase) or as reasons do (kebab-case)
EXCLUSION_FLAGS = {
    "refs": "refs",
    "dynamic-disk": "dynamic_disk",
    "dynamicdisk": "dynamic_disk",
    "upd": "upd",
    "lvm": "lvm",
    "bitlocker": "bitlocker",
    "dedup": "dedup",
}
VERDICT_STYLES = {Verdict.BACKUP: "green", Verdict.EXCLUDE: "yellow", Verdict.UNSUPPORTED: "red"}


def parse_exclusions(text: str) -> Exclusions:
    """`refs,lvm,D:,/home` -> Exclusions; items with `:` or `/` are mount points."""
    flags: dict[str, bool] = {}
    mount_points = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if ":" in item or "/" in item or "\\" in item:
            mount_points.append(item)
        elif (flag := EXCLUSION_FLAGS.get(item.lower())) is not None:
            flags[flag] = True
        else:
            known = ", ".join(sorted(k for k in EXCLUSION_FLAGS if k != "dynamicdisk"))
            raise click.BadParameter(f"unknown exclusion {item!r}; expected {known} or a mount point")
    return Exclusions(**flags, mount_points=tuple(mount_points))


Allocations = Sequence[dict[int, Allocation]]  # per disk, per partition index


def thin_volumes(report: DiskReport, allocations: dict[int, Allocation]) -> list[tuple[int, ThinVolume]]:
    """(partition index, finding) for each volume a backup reads and an allocation reader exists for."""
    found = []
    for row in report.partitions:
        part = row.partition
        allocation = allocations.get(part.index)
        if allocation is None or row.verdict.verdict is not Verdict.BACKUP:
            continue
        name = f"partition {part.index}"
        if isinstance(allocation, AllocationMap):
            found.append((part.index, ThinVolume(name, allocation.length, allocated=allocation.allocated_bytes)))
        else:
            found.append((part.index, ThinVolume(name, part.length, declined=allocation.reason)))
    return found


def to_json(reports: Sequence[DiskReport], allocations: Allocations | None = None) -> dict[str, Any]:
    """`allocations` (`--allocation`) adds each readable volume's `allocation` to its partition."""
    document = _to_json(reports)
    if allocations is None:
        return document
    for disk, report, per_partition in zip(document["disks"], reports, allocations, strict=True):
        found = dict(thin_volumes(report, per_partition))
        for partition in disk["partitions"]:
            if (volume := found.get(partition["index"])) is not None:
                partition["allocation"] = {"allocated": volume.allocated, "skipped": volume.skipped,
                                           "declined": volume.declined}
    return document


def _to_json(reports: Sequence[DiskReport]) -> dict[str, Any]:
    return {
        "disks": [
            {
                "path": report.layout.path,
                "size": report.layout.size,
                "partitionTable": str(report.layout.table),
                "partitions": [
                    {
                        "index": row.partition.index,
                        "start": row.partition.start,
                        "length": row.partition.length,
                        "type": str(row.partition.type),
                        "filesystem": None if row.partition.filesystem is None else str(row.partition.filesystem),
                        "guid": row.partition.guid,
                        "verdict": str(row.verdict.verdict),
                        "reason": None if row.verdict.reason is None else str(row.verdict.reason),
                    }
                    for row in report.partitions
                ],
                "warnings": list(report.warnings),
            }
            for report in reports
        ]
    }


def _size(value: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def render(reports: Sequence[DiskReport], console: Console, deep_notes: Sequence[str] = (),
           allocations: Allocations | None = None) -> None:
    for disk, report in enumerate(reports):
        layout = report.layout
        title = f"disk {disk}: {layout.path} ({_size(layout.size)}, {layout.table})"
        table = Table(title=title, title_justify="left")
        for column in ("#", "start", "length", "type", "filesystem", "serial / GUID", "verdict", "reason"):
            numeric = column in ("#", "start", "length")
            # offsets and verdicts must stay whole; a long serial may fold onto a second line
            folds = column == "serial / GUID"
            table.add_column(
                column,
                justify="right" if numeric else "left",
                no_wrap=not folds,
                overflow="fold" if folds else "ellipsis",
            )
        for row in report.partitions:
            part = row.partition
            style = VERDICT_STYLES[row.verdict.verdict]
            table.add_row(
                str(part.index),
                str(part.start),
                _size(part.length),
                str(part.type),
                str(part.filesystem or "-"),
                part.serial or part.guid or "-",
                f"[{style}]{row.verdict.verdict}[/{style}]",
                str(row.verdict.reason or ""),
            )
        console.print(table)
        for _, volume in thin_volumes(report, allocations[disk]) if allocations is not None else ():
            console.print(f"thin: {volume.describe()}")
        for warning in report.warnings:
            console.print(f"[yellow]warning:[/yellow] {warning}")
    for note in deep_notes:
        console.print(note)


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--deep", is_flag=True, help="Also mount volumes with libguestfs (dedup, UPDs, mount points, OS).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--exclude",
    default="",
    metavar="LIST",
    help="Verdicts under these policy exclusions: refs,dynamic-disk,upd,lvm,bitlocker,dedup or mount points.",
)
@click.option("--allocation", is_flag=True,
              help="Also read each volume's allocation map: what a thin backup (skipFreeBlocks) would skip.")
def inspect(images: tuple[str, ...], deep: bool, as_json: bool, exclude: str, allocation: bool) -> None:
    """Show the partitions of IMAGE… (the disks of one VM) and what a backup would read."""
    exclusions = parse_exclusions(exclude)
    allocations: list[dict[int, Allocation]] | None = None
    try:
        layouts = [inspect_image(path) for path in images]
        if allocation:
            allocations = []
            for path, layout in zip(images, layouts, strict=True):
                with FileReader(path) as reader:
                    allocations.append(read_volume_allocations(reader, layout))
        deep_results, notes = None, []
        if deep:
            from reconciler.adapters.inspect.deep import Appliance

            with Appliance(images) as appliance:
                report = appliance.inspect()
            deep_results = report.volumes
            notes = [f"guest OS: {o.product_name} ({o.type}/{o.distro}) on {o.root}" for o in report.operating_systems]
            notes += [f"[yellow]warning:[/yellow] {w}" for w in report.warnings]
            notes += [
                f"disk {disk} partition {part}: mount points {', '.join(facts.mount_points)}"
                for (disk, part), facts in sorted(report.volumes.items())
                if facts.mount_points
            ]
    except InspectError as exc:
        raise click.ClickException(str(exc)) from exc
    reports = analyse(layouts, exclusions, deep_results)
    if as_json:
        click.echo(json.dumps(to_json(reports, allocations), indent=2))
    else:
        render(reports, make_console(), notes, allocations)
