"""`reconciler restore VM`: get a backup's data back — disk images, an NBD export, files, or a new VM —
always from a ZFS clone of the backup's snapshot, destroyed afterwards unless `--keep-clone`."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from reconciler.cli.backups import repositories, repository_options, user_errors


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so servers stop and the clone is destroyed on either."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _basename(chain: Any) -> str:
    name = chain.dataset.vm_name or chain.dataset.instance_uuid
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


@click.command()
@click.argument("vm")
@click.option("--backup", "backup_spec", metavar="RUN_ID|latest|TIME", default="latest", show_default=True,
              help="Which backup: a run id, `latest`, or a time (the newest backup taken at or before it).")
@click.option("--export", "export_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write the disks as image files into this directory.")
@click.option("--format", "image_format", type=click.Choice(["raw", "qcow2", "vmdk"]), default="raw",
              show_default=True, help="Image format for --export (raw stays sparse).")
@click.option("--serve", is_flag=True, help="Serve every disk read-only over NBD until Ctrl-C / SIGTERM.")
@click.option("--port", type=int, help="With --serve: TCP ports PORT, PORT+1, … on 127.0.0.1 (default: Unix sockets).")
@click.option("--socket-dir", type=click.Path(file_okay=False, path_type=Path),
              help="With --serve: directory for the Unix sockets (default: a new temporary directory).")
@click.option("--files", "file_paths", multiple=True, metavar="[VOLUME:]PATH",
              help="A file or directory inside the backup (VOLUME like sda3); repeatable.")
@click.option("--to", "to_dir", type=click.Path(file_okay=False, path_type=Path),
              help="With --files: where to copy them.")
@click.option("--list", "list_only", is_flag=True, help="With --files (or alone with it): list instead of copying.")
@click.option("--to-vsphere", "connection_name", metavar="CONNECTION",
              help="Create a new VM from the backup on this policy Connection and write its disks.")
@click.option("--name", "new_name", help="With --to-vsphere: the new VM's name (default: <VM>-restored-<run id>).")
@click.option("--datastore", help="With --to-vsphere: the datastore (default: the one with the most free space).")
@click.option("--keep-clone", is_flag=True, help="Keep the ZFS clone the restore read from (its name is printed).")
@repository_options
@user_errors
def restore(vm: str, backup_spec: str, export_dir: Path | None, image_format: str, serve: bool, port: int | None,
            socket_dir: Path | None, file_paths: tuple[str, ...], to_dir: Path | None, list_only: bool,
            connection_name: str | None, new_name: str | None, datastore: str | None, keep_clone: bool,
            repository: str | None, policies: tuple[Path, ...], driver: str) -> None:
    """Restore VM (instanceUuid, name or id) from a backup, without touching the backup."""
    from reconciler.restore.clone import BackupClone
    from reconciler.restore.locate import find_chain, select_backup

    modes = [m for m, on in (("--export", export_dir), ("--serve", serve), ("--files", file_paths or list_only),
                             ("--to-vsphere", connection_name)) if on]
    if len(modes) != 1:
        raise click.UsageError("choose exactly one of --export DIR, --serve, --files PATH… --to DIR, --to-vsphere")
    if file_paths and not list_only and to_dir is None:
        raise click.UsageError("--files needs --to DIR (or --list)")
    policy_set = None
    if connection_name:
        from reconciler.cli.backups import load_policy_set

        policy_set = load_policy_set(policies)
        if policy_set is None or connection_name not in policy_set.connections:
            known = ", ".join(sorted(policy_set.connections)) if policy_set else "no policy set loaded"
            raise click.UsageError(f"unknown connection {connection_name!r} ({known}); give --policies PATH")
    chain, zfs = find_chain(repositories(repository, policies, driver), vm)
    backup = select_backup(chain, backup_spec)
    click.echo(f"{chain.label}: backup {backup.run_id} ({backup.record.kind}, {backup.time.isoformat()})", err=True)
    with sigterm_as_interrupt(), BackupClone(zfs, backup, keep=keep_clone) as clone:
        if keep_clone:
            click.echo(f"clone kept: {clone.name} at {clone.mountpoint}", err=True)
        images = clone.images()
        if export_dir is not None:
            _export(images, export_dir, image_format, _basename(chain))
        elif serve:
            _serve(images, port, socket_dir)
        elif connection_name:
            assert policy_set is not None
            name = new_name or f"{chain.dataset.vm_name or 'vm'}-restored-{backup.run_id}"
            _to_vsphere(policy_set, connection_name, name, images, datastore)
        else:
            _files(images, file_paths, to_dir, list_only)


def _export(images: Any, directory: Path, image_format: str, basename: str) -> None:
    from reconciler.restore.export import ImageFormat, export_disks

    for disk in export_disks(images, directory, ImageFormat(image_format), basename):
        click.echo(f"disk {disk.key}: {disk.path} ({disk.format}, {disk.capacity} bytes)")


def _serve(images: Any, port: int | None, socket_dir: Path | None) -> None:
    from reconciler.restore.serve import DiskServers

    with contextlib.ExitStack() as stack:
        if port is None and socket_dir is None:
            socket_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="reconciler-serve-")))
        elif socket_dir is not None:
            socket_dir.mkdir(parents=True, exist_ok=True)
        servers = stack.enter_context(DiskServers(images, socket_dir=socket_dir if port is None else None,
                                                  port=port, log_dir=socket_dir))
        for disk in servers.disks:
            click.echo(f"disk {disk.key}: {disk.uri} ({disk.capacity} bytes, read-only)")
        click.echo("serving; press Ctrl-C (or send SIGTERM) to stop", err=True)
        sys.stdout.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            click.echo("stopping: NBD servers and the clone are removed", err=True)


def _files(images: Any, specs: tuple[str, ...], to_dir: Path | None, list_only: bool) -> None:
    from reconciler.restore.files import GuestDisks

    with GuestDisks([image.path for image in images]) as guest:
        if list_only:
            targets = specs or tuple(f"{device.removeprefix('/dev/')}:/" for device in sorted(guest.filesystems))
            for spec in targets:
                for entry in guest.list(spec):
                    click.echo(f"{entry.device.removeprefix('/dev/')}:{entry.path}\t{entry.kind}\t{entry.size}\t"
                               f"{_time(entry.mtime)}")
            return
        assert to_dir is not None
        for spec in specs:
            restored = guest.copy_out(spec, to_dir)
            click.echo(f"{restored.device.removeprefix('/dev/')}:{restored.source} -> {restored.target}")


def _time(epoch: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _to_vsphere(policy_set: Any, connection_name: str, name: str, images: Any, datastore: str | None) -> None:
    from reconciler.adapters.observe import Sessions
    from reconciler.adapters.secrets import SecretUnavailable
    from reconciler.adapters.vsphere.session import VsphereError
    from reconciler.restore.locate import RestoreError
    from reconciler.restore.to_vsphere import restore_to_vsphere

    connection = policy_set.connections[connection_name]
    sessions = Sessions(environ=dict(os.environ))
    try:
        session = sessions.get(connection)
        vm = restore_to_vsphere(session, name, images, datastore=datastore, thumbprint=connection.thumbprint)
    except (VsphereError, SecretUnavailable) as exc:
        raise RestoreError(f"connection {connection_name}: {exc}") from None
    finally:
        sessions.close()
    click.echo(f"created VM {vm.name}: {vm.moref} on {connection_name} (powered off)")
    for disk in vm.disks:
        click.echo(f"disk {disk.key}: {disk.datastore_path} ({disk.capacity} bytes written)")
