"""Which VMs a policy claims (pure). A VM matches if any criterion matches, then `exclude` removes."""

from __future__ import annotations

import re
from fnmatch import translate
from functools import lru_cache

from reconciler.core.observed import VmState
from reconciler.policy.model import Selector


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(translate(pattern))


def _folder_matches(folder: str, vm_folder: str) -> bool:
    folder = folder.rstrip("/") or "/"
    return folder == "/" or vm_folder == folder or vm_folder.startswith(folder + "/")


def _tag_matches(wanted: str, tags: tuple[str, ...]) -> bool:
    if ":" in wanted:
        return wanted in tags
    return any(tag.rpartition(":")[2] == wanted for tag in tags)


def selects(selector: Selector, vm: VmState) -> bool:
    hit = (
        vm.id in selector.ids
        or vm.instance_uuid.lower() in (u.lower() for u in selector.instance_uuids)
        or any(_glob(g).match(vm.name) for g in selector.names)
        or any(_folder_matches(f, vm.folder) for f in selector.folders)
        or any(_tag_matches(t, vm.tags) for t in selector.tags)
    )
    return hit and not (selector.exclude is not None and selects(selector.exclude, vm))


def names_vm(target: str, instance_uuid: str, vm_id: str, name: str) -> bool:
    """`--target`: an instanceUuid, an id, a name or a name glob."""
    return target.lower() == instance_uuid.lower() or target == vm_id or bool(_glob(target).match(name))
