"""Pure parsers of `zfs` command output (collect and parse are separate: these are tested on captured
output of zfs-fuse and OpenZFS, without a pool)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.adapters.zfs.base import DatasetInfo, SnapshotInfo, ZfsError

# Native properties every listing asks for, whatever the caller wants.
LISTING_PROPERTIES = ("type", "creation", "userrefs", "used", "referenced", "mountpoint", "mounted")
OWN_SOURCES = ("local", "received")  # a user property the object itself carries (not inherited)


@dataclass(frozen=True)
class ZfsDialect:
    """What the installed `zfs` command can do; detected once per driver.

    zfs-fuse (pool version 23) lacks `zfs version`, `get -t`, `list -p`, several properties per `zfs set`
    and comma lists in `zfs destroy`, and silently ignores `zfs snapshot -o`. OpenZFS has them all."""

    name: str
    get_type_filter: bool
    snapshot_props_atomic: bool
    multi_set: bool
    comma_destroy: bool


ZFS_FUSE = ZfsDialect("zfs-fuse", False, False, False, False)
OPENZFS = ZfsDialect("openzfs", True, True, True, True)


def parse_dialect(version_returncode: int, version_output: str) -> ZfsDialect:
    """`zfs version` exists from OpenZFS 0.8 on (prints `zfs-2.1.11-1` …); zfs-fuse rejects it."""
    if version_returncode == 0 and "zfs-" in version_output:
        return OPENZFS
    return ZFS_FUSE


# name -> property -> (value, source), objects in the order ZFS listed them. Plain tuples: a repository
# listing is one line per object and property (150,000 lines for 10,000 snapshots), so no object per line.
Objects = dict[str, dict[str, tuple[str, str]]]


def parse_get_output(text: str) -> Objects:
    """Output of `zfs get -H -p -o name,property,value,source` (values never hold tabs: we refuse them)."""
    objects: Objects = {}
    for number, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3 or "\t" not in parts[2]:
            raise ZfsError(f"unexpected line {number} in `zfs get` output: {line!r}")
        value, _, source = parts[2].rpartition("\t")
        props = objects.get(parts[0])
        if props is None:
            props = objects[parts[0]] = {}
        props[parts[1]] = (value, source)
    return objects


def merge(*parts: Objects) -> Objects:
    merged: Objects = {}
    for part in parts:
        for name, props in part.items():
            merged.setdefault(name, {}).update(props)
    return merged


def _own_value(prop: str, entry: tuple[str, str] | None) -> str | None:
    """A user property's value if set on this object; native ones always count (`-`/`-` is unset)."""
    if entry is None:
        return None
    value, source = entry
    if ":" in prop:
        return value if source in OWN_SOURCES else None
    return None if value == "-" and source in ("-", "") else value


def _int(name: str, prop: str, entry: tuple[str, str] | None) -> int:
    if entry is None or entry[0] in ("-", ""):
        return 0
    try:
        return int(entry[0])
    except ValueError as exc:
        raise ZfsError(f"{name}: {prop} is not a number: {entry[0]!r} (was -p used?)") from exc


def _properties(props: dict[str, tuple[str, str]], wanted: Sequence[str]) -> dict[str, str]:
    found = {}
    for prop in wanted:
        value = _own_value(prop, props.get(prop))
        if value is not None:
            found[prop] = value
    return found


def datasets_from_objects(objects: Objects, wanted: Sequence[str]) -> list[DatasetInfo]:
    datasets = []
    for name, props in objects.items():
        if props.get("type", ("",))[0] != "filesystem":
            continue
        mountpoint = props.get("mountpoint", ("-",))[0]
        datasets.append(
            DatasetInfo(
                name=name,
                mountpoint=mountpoint if mountpoint.startswith("/") else None,
                used=_int(name, "used", props.get("used")),
                referenced=_int(name, "referenced", props.get("referenced")),
                properties=_properties(props, wanted),
                mounted=props.get("mounted", ("yes",))[0] != "no",
            )
        )
    return datasets


def snapshots_from_objects(objects: Objects, wanted: Sequence[str]) -> list[SnapshotInfo]:
    snapshots = []
    for name, props in objects.items():
        if props.get("type", ("",))[0] != "snapshot":
            continue
        snapshots.append(
            SnapshotInfo(
                name=name,
                dataset=name.partition("@")[0],
                created=_int(name, "creation", props.get("creation")),
                userrefs=_int(name, "userrefs", props.get("userrefs")),
                properties=_properties(props, wanted),
            )
        )
    return snapshots


def parse_single_value(text: str) -> str:
    """Output of `zfs get -H -p -o value PROP NAME`."""
    lines = [line for line in text.splitlines() if line]
    if len(lines) != 1:
        raise ZfsError(f"expected one value, got {len(lines)} lines: {text!r}")
    return lines[0]
