"""The narrow interface the reconciler uses to talk to ZFS, and the records it returns.

Both drivers (the `zfs` command, libzfs_core) implement `ZfsDriver`; one contract test suite holds them to
the same behaviour. Records are plain adapter-level data: the planner's observed types live in `core/`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# ZFS stores user property values of at most 8191 bytes (ZAP_MAXVALUELEN - 1).
MAX_USER_PROPERTY_BYTES = 8191


class ZfsError(Exception):
    """Any failure talking to ZFS: what was run and what ZFS said."""

    def __init__(self, message: str, command: Sequence[str] = (), stderr: str = "") -> None:
        self.message = message
        self.command = tuple(command)
        self.stderr = stderr.strip()
        super().__init__(self._render())

    def _render(self) -> str:
        text = self.message
        if self.command:
            text += f" (command: {' '.join(self.command)})"
        if self.stderr and self.stderr not in text:
            text += f": {self.stderr}"
        return text

    @property
    def busy(self) -> bool:
        return "dataset is busy" in self.stderr.lower()

    @property
    def missing(self) -> bool:
        return "does not exist" in self.stderr or "does not exist" in self.message


@dataclass(frozen=True)
class DatasetInfo:
    """A filesystem; `properties` holds the requested native values and the *locally set* user ones."""

    name: str
    mountpoint: str | None
    used: int
    referenced: int
    properties: Mapping[str, str] = field(default_factory=dict, hash=False)
    mounted: bool = True  # False e.g. for an encrypted dataset whose key is not loaded (after a reboot)


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot; user properties inherited from its dataset are *not* in `properties` (they are not
    the snapshot's own: a `reconciler:managed` inherited from the VM dataset must not make a foreign
    snapshot look like ours)."""

    name: str
    dataset: str
    created: int  # epoch seconds
    userrefs: int  # hold count (zfs-fuse cannot list holds, but counts them)
    properties: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def short_name(self) -> str:
        return self.name.partition("@")[2]


@runtime_checkable
class ZfsDriver(Protocol):
    """What the reconciler needs from ZFS. Listing calls run a constant number of commands, whatever
    the number of datasets below `parent` (planning 10,000 VMs must not run 10,000 commands)."""

    name: str

    def list_datasets(self, parent: str, props: Sequence[str] = ()) -> list[DatasetInfo]:
        """`parent` and every filesystem below it."""
        ...

    def list_snapshots(self, dataset: str, props: Sequence[str] = ()) -> list[SnapshotInfo]:
        """Every snapshot of `dataset` and of the filesystems below it, oldest first per dataset."""
        ...

    def create_dataset(self, name: str, props: Mapping[str, str] | None = None) -> None: ...

    def set_properties(self, name: str, props: Mapping[str, str]) -> None: ...

    def inherit_property(self, name: str, prop: str) -> None: ...

    def snapshot(self, name: str, props: Mapping[str, str] | None = None) -> None:
        """Create `name` (`ds@snap`) with `props`; either both happen or neither does."""
        ...

    def destroy_snapshot(self, name: str) -> None: ...

    def destroy_snapshots(self, names: Sequence[str]) -> None: ...

    def rollback(self, snapshot: str) -> None:
        """Roll the dataset back to `snapshot`, which must be its latest."""
        ...

    def hold(self, snapshot: str, tag: str) -> None: ...

    def release(self, snapshot: str, tag: str) -> None: ...

    def clone(self, snapshot: str, name: str) -> None: ...

    def destroy_dataset(self, name: str, recursive: bool = False) -> None: ...

    def exists(self, name: str) -> bool: ...

    def mount(self, name: str) -> None:
        """Mount `name`, loading its encryption key first (from its keylocation) when it is unavailable."""
        ...

    def pool_free(self, pool: str) -> int:
        """Bytes still writable in `pool` (the root dataset's `available`)."""
        ...


def split_snapshot_name(name: str) -> tuple[str, str]:
    dataset, at, snap = name.partition("@")
    if not at or not dataset or not snap:
        raise ZfsError(f"not a snapshot name (expected DATASET@NAME): {name!r}")
    return dataset, snap


def check_property(prop: str, value: str) -> None:
    """Reject what would corrupt tab-separated listings or exceed ZFS's limit, before ZFS sees it."""
    if not prop or any(c in prop for c in "\t\n= "):
        raise ZfsError(f"invalid property name {prop!r}")
    if "\t" in value or "\n" in value:
        raise ZfsError(f"property {prop} value contains a tab or newline (store it JSON-encoded)")
    if ":" in prop and len(value.encode()) > MAX_USER_PROPERTY_BYTES:
        raise ZfsError(
            f"property {prop} value is {len(value.encode())} bytes; ZFS allows {MAX_USER_PROPERTY_BYTES}"
        )
