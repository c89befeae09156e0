"""`ZfsDriver` over libzfs_core (Debian contrib `python3-pyzfs`), for appliances running OpenZFS.

Changes go through libzfs_core: a snapshot and its user properties are created atomically by
`lzc_snapshot(snaps, props)`, destroys of many snapshots are one ioctl, holds need no helper script.
Listings use the `zfs` command (the CLI driver's collector): libzfs_core has no list call (the
`lzc_list` of some forks never reached OpenZFS), and one `zfs get -r` is already one pass over the pool.
`lzc_set_props`/`lzc_inherit` are "uncommitted" in pyzfs (missing from most libzfs_core builds, they
raise NotImplementedError): setting and inheriting fall back to the CLI. Datasets created through
libzfs_core are not mounted, so `create_dataset`/`clone` mount them with `zfs mount`.

Not exercised on the lab machine (no /dev/zfs): the contract suite runs it wherever /dev/zfs exists.
"""

from __future__ import annotations

import errno
import importlib
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import ModuleType

from reconciler.adapters.zfs.base import (
    DatasetInfo,
    SnapshotInfo,
    ZfsError,
    check_property,
    split_snapshot_name,
)
from reconciler.adapters.zfs.cli import CliZfsDriver
from reconciler.adapters.zfs.runner import BUSY_DELAYS, run


def load_libzfs_core() -> ModuleType:
    try:
        return importlib.import_module("libzfs_core")
    except ImportError as exc:
        raise ZfsError(
            "the pyzfs driver needs libzfs_core (Debian contrib package python3-pyzfs); "
            "install it or use `driver: cli`"
        ) from exc


class PyZfsDriver:
    name = "pyzfs"

    def __init__(self, lzc: ModuleType | None = None, zfs: str = "zfs") -> None:
        self.lzc = lzc or load_libzfs_core()
        self.cli = CliZfsDriver(zfs)

    @contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        """libzfs_core raises its own ZFSError family; the reconciler sees one exception type."""
        try:
            yield
        except self.lzc.exceptions.ZFSError as exc:
            errors = getattr(exc, "errors", None) or []
            detail = "; ".join(str(e) for e in errors) or str(exc)
            if getattr(exc, "errno", None) == errno.EBUSY:
                detail += " (dataset is busy)"
            raise ZfsError(f"libzfs_core {what} failed", ("libzfs_core", what), detail) from exc

    # ---- listings: via the CLI (see module docstring) -----------------------------------------------
    def list_datasets(self, parent: str, props: Sequence[str] = ()) -> list[DatasetInfo]:
        return self.cli.list_datasets(parent, props)

    def list_snapshots(self, dataset: str, props: Sequence[str] = ()) -> list[SnapshotInfo]:
        return self.cli.list_snapshots(dataset, props)

    def exists(self, name: str) -> bool:
        return bool(self.lzc.lzc_exists(name.encode()))

    def pool_free(self, pool: str) -> int:
        return self.cli.pool_free(pool)

    # ---- changes -----------------------------------------------------------------------------------
    def create_dataset(self, name: str, props: Mapping[str, str] | None = None) -> None:
        props = dict(props or {})
        user = {p: v for p, v in props.items() if ":" in p}
        native = {p: v for p, v in props.items() if ":" not in p}
        if "encryption" in native:
            # Encryption is fixed at creation, and lzc_create wants the wrapping key itself (derived
            # from a passphrase by libzfs, not libzfs_core): `zfs create` reads keylocation itself.
            self.cli.create_dataset(name, props)
            return
        with self._calling(f"create {name}"):
            # nvlist values of native properties must be typed (index numbers, integers): pass user
            # properties (strings) here and let `zfs set` parse the native ones.
            self.lzc.lzc_create(name.encode(), "zfs", _encode_props(user))
        self.cli.set_properties(name, native)
        run([self.cli.zfs, "mount", name])

    def set_properties(self, name: str, props: Mapping[str, str]) -> None:
        for prop, value in props.items():
            check_property(prop, value)
            try:
                with self._calling(f"set {prop} on {name}"):
                    self.lzc.lzc_set_props(name.encode(), prop.encode(), value.encode())
            except (NotImplementedError, AttributeError):  # 2.1 pyzfs: uncommitted, or absent (lzc_inherit)
                self.cli.set_properties(name, {prop: value})

    def inherit_property(self, name: str, prop: str) -> None:
        try:
            with self._calling(f"inherit {prop} on {name}"):
                self.lzc.lzc_inherit(name.encode(), prop.encode())
        except (NotImplementedError, AttributeError):  # 2.1 pyzfs has no lzc_inherit at all
            self.cli.inherit_property(name, prop)

    def snapshot(self, name: str, props: Mapping[str, str] | None = None) -> None:
        split_snapshot_name(name)
        with self._calling(f"snapshot {name}"):
            self.lzc.lzc_snapshot([name.encode()], _encode_props(props or {}))

    def destroy_snapshot(self, name: str) -> None:
        self.destroy_snapshots([name])

    def destroy_snapshots(self, names: Sequence[str]) -> None:
        for name in names:
            split_snapshot_name(name)
        if not names:
            return
        by_pool: dict[str, list[bytes]] = {}  # lzc_destroy_snaps wants one pool per call
        for name in names:
            by_pool.setdefault(name.split("/")[0].split("@")[0], []).append(name.encode())
        for snaps in by_pool.values():
            with self._calling(f"destroy {len(snaps)} snapshot(s)"):
                self.lzc.lzc_destroy_snaps(snaps, False)

    def rollback(self, snapshot: str) -> None:
        dataset, _ = split_snapshot_name(snapshot)
        with self._calling(f"rollback to {snapshot}"):
            self.lzc.lzc_rollback_to(dataset.encode(), snapshot.encode())

    def hold(self, snapshot: str, tag: str) -> None:
        with self._calling(f"hold {tag} on {snapshot}"):
            missing = self.lzc.lzc_hold({snapshot.encode(): tag.encode()})
        if missing:
            raise ZfsError(f"cannot hold {snapshot}: it does not exist")

    def release(self, snapshot: str, tag: str) -> None:
        with self._calling(f"release {tag} on {snapshot}"):
            missing = self.lzc.lzc_release({snapshot.encode(): [tag.encode()]})
        if missing:
            raise ZfsError(f"cannot release {tag!r} from {snapshot}: no such snapshot or tag")

    def mount(self, name: str) -> None:
        self.cli.mount(name)  # libzfs_core mounts nothing, and lzc_load_key wants the derived key itself

    def clone(self, snapshot: str, name: str) -> None:
        split_snapshot_name(snapshot)
        with self._calling(f"clone {snapshot} as {name}"):
            self.lzc.lzc_clone(name.encode(), snapshot.encode(), {})
        run([self.cli.zfs, "mount", name])

    def destroy_dataset(self, name: str, recursive: bool = False) -> None:
        if "@" in name:
            raise ZfsError(f"destroy_dataset got a snapshot name {name!r}; use destroy_snapshot")
        if recursive:
            # Children and snapshots first, deepest first; the CLI does the unmounts libzfs_core cannot.
            self.cli.destroy_dataset(name, recursive=True)
            return
        run([self.cli.zfs, "unmount", name], check=False)
        for delay in (*BUSY_DELAYS, None):
            try:
                with self._calling(f"destroy {name}"):
                    self.lzc.lzc_destroy(name.encode())
                return
            except ZfsError as error:
                if delay is None or not error.busy:
                    raise
                time.sleep(delay)


def _encode_props(props: Mapping[str, str]) -> dict[bytes, bytes]:
    for prop, value in props.items():
        check_property(prop, value)
    return {prop.encode(): value.encode() for prop, value in props.items()}
