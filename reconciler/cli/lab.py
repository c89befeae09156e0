"""`reconciler lab …`: start, inspect, poke and stop the local lab (vcsim ×2, a zfs-fuse pool, nbdkit)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from reconciler.cli.output import make_console
from reconciler.lab.lab import SITES, Lab, LabError, LabPorts, LabState, LabStatus
from reconciler.lab.nbd import Via

DEFAULT_STATE_DIR = ".lab"


def _state_dir_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_STATE_DIR,
        envvar="RECONCILER_LAB_STATE_DIR",
        show_default=True,
        help="Where the lab keeps its processes' state, pool file and disk images.",
    )(command)


def _site_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--site", type=click.Choice(SITES), default="vcenter", show_default=True, help="Which simulated site."
    )(command)


def _clear_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Lab problems become one `Error: …` line and exit status 1, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from reconciler.lab.vcsim import NoSourceCheckout, VcsimError

        try:
            return command(*args, **kwargs)
        except NoSourceCheckout as err:
            # a usage problem (installed package, not a checkout), not a lab failure: exit status 2
            failure = click.ClickException(str(err))
            failure.exit_code = 2
            raise failure from err
        except (LabError, VcsimError) as err:
            raise click.ClickException(str(err)) from err
        except ValueError as err:  # e.g. an unknown fault name, checked before anything is sent
            raise click.UsageError(str(err)) from err
        except OSError as err:  # e.g. a file vanished under a running lab
            raise click.ClickException(f"{err} — is the lab up? `reconciler lab status`") from err

    return wrapper


def _parse_export(value: str) -> tuple[str, int]:
    vm, _, key = value.rpartition(":")
    if not vm or not key.isdigit():
        raise click.BadParameter(f"{value!r}: expected VM:DISK_KEY, e.g. web-01:2000")
    return vm, int(key)


@click.group("lab")
def lab() -> None:
    """The local lab: a vCenter and a standalone ESXi host (vcsim with CBT and real disk bytes), a
    zfs-fuse pool and nbdkit exports — a data centre on one machine."""


@lab.command()
@_state_dir_option
@click.option("--export", "exports", multiple=True, metavar="VM:DISK_KEY",
              help="Export this vCenter VM disk over NBD (repeatable). Default: every vCenter VM disk.")
@click.option("--no-exports", is_flag=True, help="Start no NBD export.")
@click.option("--via", type=click.Choice([v.value for v in Via]), default=Via.CURL.value, show_default=True,
              help="nbdkit plugin: curl reads the datastore over vSphere's HTTP file access, file the file.")
@click.option("--pool", "pool_name", default="reconciler-lab", show_default=True, help="zfs-fuse pool name.")
@click.option("--auto-ports", is_flag=True,
              help="Let the OS choose ports (labs side by side) instead of 18443/18444 and 18480/18481.")
@click.option("--json", "as_json", is_flag=True, help="Print the lab's state as JSON.")
@_clear_errors
def up(state_dir: Path, exports: tuple[str, ...], no_exports: bool, via: str, pool_name: str,
       auto_ports: bool, as_json: bool) -> None:
    """Start the lab (refuses if it is already up)."""
    console = make_console(stderr=as_json)
    the_lab = Lab(state_dir, pool_name=pool_name, ports=LabPorts.auto() if auto_ports else None)
    wanted = tuple(_parse_export(e) for e in exports)
    with console.status("starting the lab: vcsim (vCenter, ESXi), zfs-fuse pool, nbdkit…"):
        state = the_lab.up(
            exports=() if no_exports else wanted, export_all=not wanted and not no_exports, via=Via(via)
        )
    if as_json:
        click.echo(json.dumps(state.to_json(), indent=2))
        return
    _render(console, the_lab.status())
    console.print(f"\nShell variables for tools and policies: [bold]source {state_dir / 'env'}[/]")


@lab.command()
@_state_dir_option
@_clear_errors
def down(state_dir: Path) -> None:
    """Stop everything the lab started and remove its temporary files."""
    stopped = Lab(state_dir).down()
    click.echo("stopped: " + ", ".join(stopped) if stopped else "the lab was not up")


@lab.command()
@_state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_clear_errors
def status(state_dir: Path, as_json: bool) -> None:
    """Show URLs, thumbprints, the pool and the exports; exit 1 when the lab is not up or degraded."""
    lab_status = Lab(state_dir).status()
    if as_json:
        payload = {
            "up": lab_status.up,
            "healthy": lab_status.healthy,
            "state": lab_status.state.to_json() if lab_status.state else None,
            "processes": [{"what": p.what, "pid": p.pid, "running": p.running} for p in lab_status.processes],
        }
        click.echo(json.dumps(payload, indent=2))
    elif not lab_status.up:
        click.echo(f"the lab is not up (state dir {state_dir}); start it with `reconciler lab up`")
    else:
        _render(make_console(), lab_status)
    if not lab_status.healthy:
        raise SystemExit(1)


@lab.command()
@_state_dir_option
@_site_option
@click.argument("vm")
@click.argument("disk_key", type=int)
@click.option("--offset", type=click.IntRange(min=0), required=True, help="Byte offset in the disk.")
@click.option("--length", type=click.IntRange(min=1), help="Bytes to write (with --random or --zero).")
@click.option("--random", "pattern", flag_value="random", help="Write random bytes.")
@click.option("--zero", "pattern", flag_value="zero", help="Write zeros.")
@click.option("--seed", type=int, help="Seed for --random (repeatable content).")
@click.option("--file", "data_file", type=click.File("rb"), help="Write this file's bytes.")
@_clear_errors
def write(state_dir: Path, site: str, vm: str, disk_key: int, offset: int, length: int | None,
          pattern: str | None, seed: int | None, data_file: Any) -> None:
    """Write into a VM's disk as its guest would (CBT records it)."""
    if (data_file is None) == (pattern is None):
        raise click.UsageError("give either --file F, or --length N with --random or --zero")
    if pattern is not None and length is None:
        raise click.UsageError(f"--{pattern} needs --length N")
    control = Lab(state_dir).control(site)
    if data_file is not None:
        data = data_file.read()
        control.write(vm, disk_key, offset, data=data)
        written = len(data)
    else:
        control.write(vm, disk_key, offset, length=length, pattern=pattern, seed=seed)
        written = length or 0
    click.echo(f"wrote {written} bytes at offset {offset} of {vm} disk {disk_key} ({site})")


@lab.command()
@_state_dir_option
@_site_option
@click.argument("name", required=False)
@click.option("--on/--off", default=True, help="Switch the fault on (default) or off.")
@click.option("--vm", help="Only this VM.")
@click.option("--count", type=click.IntRange(min=1), help="Fire N times, then clear itself.")
@click.option("--seconds", type=click.IntRange(min=0), help="Duration (task-hangs).")
@click.option("--after-bytes", type=click.IntRange(min=0), help="Fail a disk read after N bytes.")
@click.option("--list", "list_faults", is_flag=True, help="Show the faults that are on.")
@_clear_errors
def fault(state_dir: Path, site: str, name: str | None, on: bool, vm: str | None, count: int | None,
          seconds: int | None, after_bytes: int | None, list_faults: bool) -> None:
    """Switch a fault on or off: quiesce-fails, snapshot-create-fails, snapshot-remove-fails,
    session-expires, task-hangs, disk-read-error, host-disconnected."""
    control = Lab(state_dir).control(site)
    if list_faults:
        click.echo(json.dumps(control.faults(), indent=2))
        return
    if name is None:
        raise click.UsageError("name a fault, or use --list")
    if not on:
        control.clear_fault(name)
        click.echo(f"fault {name} off ({site})")
        return
    params = {"vm": vm, "count": count, "seconds": seconds, "afterBytes": after_bytes}
    control.set_fault(name, **{k: v for k, v in params.items() if v is not None})
    click.echo(f"fault {name} on ({site})")


@lab.command("export")
@_state_dir_option
@_site_option
@click.argument("vm")
@click.argument("disk_key", type=int)
@click.option("--via", type=click.Choice([v.value for v in Via]), default=Via.CURL.value, show_default=True)
@_clear_errors
def export_command(state_dir: Path, site: str, vm: str, disk_key: int, via: str) -> None:
    """Export one more VM disk over NBD (read-only) until `lab down`."""
    state = Lab(state_dir).export(vm, disk_key, via=Via(via), site=site)
    click.echo(state.exports[-1].uri)


def _render(console: Console, lab_status: LabStatus) -> None:
    state: LabState | None = lab_status.state
    if state is None:
        return
    running = {p.what: p.running for p in lab_status.processes}

    def mark(what: str) -> str:
        return "[green]running[/]" if running.get(what) else "[red]not running[/]"

    sites = Table(title="vSphere (vcsim)", title_justify="left")
    for column in ("site", "SDK URL", "control URL", "thumbprint (SHA-256)", "VMs", "pid", "state"):
        sites.add_column(column, overflow="fold")
    for site in state.sites.values():
        sites.add_row(site.site, site.sdk, site.control, site.thumbprint_sha256, str(len(site.vms)),
                      str(site.pid), mark(f"vcsim {site.site}"))
    console.print(sites)
    if state.pool is not None:
        pool = Table(title="ZFS (zfs-fuse)", title_justify="left")
        for column in ("pool", "parent dataset", "mountpoint", "state"):
            pool.add_column(column, overflow="fold")
        imported = running.get(f"zfs pool {state.pool.name}")
        pool.add_row(state.pool.name, state.pool.parent_dataset, state.pool.mountpoint,
                     "[green]imported[/]" if imported else "[red]missing[/]")
        console.print(pool)
    exports = Table(title="NBD exports (nbdkit, read-only)", title_justify="left")
    for column in ("export", "via", "URI", "pid", "state"):
        exports.add_column(column, overflow="fold")
    for record in state.exports:
        exports.add_row(
            record.name, record.via.value, record.uri, str(record.pid), mark(f"nbdkit {record.name}")
        )
    if not state.exports:
        exports.add_row("(none)", "", "`reconciler lab export VM DISK_KEY`", "", "")
    console.print(exports)
