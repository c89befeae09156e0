"""`ZfsDriver` over the `zfs` command: works on zfs-fuse (the lab) and OpenZFS.

Listings use `zfs get -H -p -r -o name,property,value,source` on both: it is the only parsable form
zfs-fuse has (no `list -p`), and the *source* column is what tells a snapshot's own user property
from one inherited from its dataset, which `zfs list -o` cannot. A whole repository is read with a
constant number of commands: 2 on OpenZFS (`get -t filesystem`, `get -t snapshot`), 3 on zfs-fuse.
The dialect (what this `zfs` can do) is detected once per driver with `zfs version`.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Mapping, Sequence

from reconciler.adapters.zfs import parse
from reconciler.adapters.zfs.base import (
    DatasetInfo,
    SnapshotInfo,
    ZfsError,
    check_property,
    split_snapshot_name,
)
from reconciler.adapters.zfs.runner import run, run_retrying_busy


class CliZfsDriver:
    name = "cli"

    def __init__(self, zfs: str = "zfs", via: Sequence[str] = ()) -> None:
        """`via`: a command prefix that reaches the ZFS host (an `ssh … --`); empty runs `zfs` here."""
        self.zfs = zfs
        self.via = tuple(via)

    def _run(self, args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(args, check=check, via=self.via)

    def _run_busy(self, args: Sequence[str], **kwargs) -> subprocess.CompletedProcess[str]:
        return run_retrying_busy(args, via=self.via, **kwargs)

    @functools.cached_property
    def dialect(self) -> parse.ZfsDialect:
        result = self._run([self.zfs, "version"], check=False)
        return parse.parse_dialect(result.returncode, result.stdout)

    # ---- collect: listings -------------------------------------------------------------------------
    def get_objects(self, target: str, props: Sequence[str], types: str) -> parse.Objects:
        """One `zfs get` for `target` and everything below it (the whole repository in one command)."""
        wanted = list(dict.fromkeys((*parse.LISTING_PROPERTIES, *props)))
        args = [self.zfs, "get", "-H", "-p", "-r", "-o", "name,property,value,source"]
        if self.dialect.get_type_filter:
            args += ["-t", types]
        args += [",".join(wanted), target]
        return parse.parse_get_output(self._run(args).stdout)

    def list_datasets(self, parent: str, props: Sequence[str] = ()) -> list[DatasetInfo]:
        if self.dialect.get_type_filter:
            return parse.datasets_from_objects(self.get_objects(parent, props, "filesystem"), props)
        # zfs-fuse's `get -r` cannot skip snapshots, and walking them dominates (~2 s per 4,000): name
        # the filesystems with `list -t filesystem` (fast), then ask `get` about exactly those.
        names = self._run([self.zfs, "list", "-H", "-r", "-t", "filesystem", "-o", "name", parent]).stdout.split("\n")
        wanted = ",".join(dict.fromkeys((*parse.LISTING_PROPERTIES, *props)))
        parts = []
        for chunk in _chunks([n for n in names if n]):
            args = [self.zfs, "get", "-H", "-p", "-o", "name,property,value,source", wanted, *chunk]
            parts.append(parse.parse_get_output(self._run(args).stdout))
        return parse.datasets_from_objects(parse.merge(*parts), props)

    def list_snapshots(self, dataset: str, props: Sequence[str] = ()) -> list[SnapshotInfo]:
        return parse.snapshots_from_objects(self.get_objects(dataset, props, "snapshot"), props)

    def get_value(self, name: str, prop: str) -> str:
        return parse.parse_single_value(self._run([self.zfs, "get", "-H", "-p", "-o", "value", prop, name]).stdout)

    def exists(self, name: str) -> bool:
        result = self._run([self.zfs, "get", "-H", "-o", "value", "type", name], check=False)
        if result.returncode == 0:
            return True
        if "does not exist" in result.stderr or "invalid" in result.stderr:
            return False
        raise ZfsError("cannot tell whether a dataset exists", ["zfs", "get", "type", name], result.stderr)

    def pool_free(self, pool: str) -> int:
        return int(self.get_value(pool.split("/")[0], "available"))

    # ---- changes -----------------------------------------------------------------------------------
    def create_dataset(self, name: str, props: Mapping[str, str] | None = None) -> None:
        self._run([self.zfs, "create", *_option_args(props or {}), name])

    def set_properties(self, name: str, props: Mapping[str, str]) -> None:
        for prop, value in props.items():
            check_property(prop, value)
        if not props:
            return
        if self.dialect.multi_set:
            self._run([self.zfs, "set", *(f"{p}={v}" for p, v in props.items()), name])
            return
        for prop, value in props.items():
            self._run([self.zfs, "set", f"{prop}={value}", name])

    def inherit_property(self, name: str, prop: str) -> None:
        self._run([self.zfs, "inherit", prop, name])

    def snapshot(self, name: str, props: Mapping[str, str] | None = None) -> None:
        split_snapshot_name(name)
        props = dict(props or {})
        for prop, value in props.items():
            check_property(prop, value)
        if self.dialect.snapshot_props_atomic:
            self._run([self.zfs, "snapshot", *_option_args(props), name])
            return
        self._run([self.zfs, "snapshot", name])
        try:
            self.set_properties(name, props)
        except ZfsError:
            # No half-labelled snapshot may stay: it would look like a backup without being one.
            self.destroy_snapshot(name)
            raise

    def destroy_snapshot(self, name: str) -> None:
        split_snapshot_name(name)
        try:
            self._run_busy([self.zfs, "destroy", name], still_worth_retrying=lambda: not self._held(name))
        except ZfsError as error:
            if error.busy and self._held(name):
                raise ZfsError(f"snapshot {name} is held; release its holds first", error.command,
                               error.stderr) from error
            raise

    def destroy_snapshots(self, names: Sequence[str]) -> None:
        if not self.dialect.comma_destroy:
            for name in names:
                self.destroy_snapshot(name)
            return
        by_dataset: dict[str, list[str]] = {}
        for name in names:
            dataset, snap = split_snapshot_name(name)
            by_dataset.setdefault(dataset, []).append(snap)
        for dataset, snaps in by_dataset.items():
            self._run_busy([self.zfs, "destroy", f"{dataset}@{','.join(snaps)}"])

    def rollback(self, snapshot: str) -> None:
        split_snapshot_name(snapshot)
        self._run([self.zfs, "rollback", snapshot])

    def hold(self, snapshot: str, tag: str) -> None:
        self._run([self.zfs, "hold", tag, snapshot])

    def release(self, snapshot: str, tag: str) -> None:
        self._run([self.zfs, "release", tag, snapshot])

    def mount(self, name: str) -> None:
        keystatus = self._run([self.zfs, "get", "-H", "-o", "value", "keystatus", name], check=False)
        if keystatus.returncode == 0 and keystatus.stdout.strip() == "unavailable":  # zfs-fuse: no such property
            self._run([self.zfs, "load-key", name])
        result = self._run([self.zfs, "mount", name], check=False)
        if result.returncode != 0 and "already mounted" not in result.stderr:
            raise ZfsError(f"cannot mount {name}", ["zfs", "mount", name], result.stderr)

    def clone(self, snapshot: str, name: str) -> None:
        split_snapshot_name(snapshot)
        self._run([self.zfs, "clone", snapshot, name])

    def destroy_dataset(self, name: str, recursive: bool = False) -> None:
        if "@" in name:
            raise ZfsError(f"destroy_dataset got a snapshot name {name!r}; use destroy_snapshot")
        self._run_busy([self.zfs, "destroy", *(["-r"] if recursive else []), name])

    def _held(self, snapshot: str) -> bool:
        try:
            return int(self.get_value(snapshot, "userrefs") or 0) > 0
        except (ZfsError, ValueError):
            return False


def _chunks(names: list[str], max_bytes: int = 512 * 1024) -> list[list[str]]:
    """Split a long name list so one command line stays far below ARG_MAX (2 MiB on Linux)."""
    chunks: list[list[str]] = [[]]
    size = 0
    for name in names:
        if chunks[-1] and size + len(name) + 1 > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(name)
        size += len(name) + 1
    return chunks if chunks[0] else []


def _option_args(props: Mapping[str, str]) -> list[str]:
    args = []
    for prop, value in props.items():
        check_property(prop, value)
        args += ["-o", f"{prop}={value}"]
    return args
