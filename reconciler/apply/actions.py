"""The actions other than backup. Each re-checks its precondition first (the world may have moved since
the plan) and says "nothing to do" rather than failing when it already holds."""

from __future__ import annotations

import threading
from pathlib import Path

from reconciler.adapters.vsphere import ops
from reconciler.adapters.zfs.backups import SNAPSHOT_PREFIX
from reconciler.apply.backup import remove_our_snapshot
from reconciler.apply.context import ActionContext, ActionFailed, crash_point, retry
from reconciler.apply.images import vm_dataset
from reconciler.core.observed import OUR_SNAPSHOT_PREFIX, PowerState

# pair may create the repository's parent dataset: two VMs pairing at once must not both try
_PAIR_LOCK = threading.Lock()


def pair(ctx: ActionContext) -> str:
    repository = ctx.require_repository()
    vm = ctx.change.vm
    address = ctx.change.after
    with _PAIR_LOCK:
        dataset = repository.pair(vm.instance_uuid, vm.name, address.id if address else vm.id,
                                  address.connection if address else vm.connection, ctx.change.policy or "")
    return f"dataset {dataset}"


def unpair(ctx: ActionContext) -> str:
    repository = ctx.require_repository()
    record = vm_dataset(repository, ctx.change.vm.instance_uuid)
    if record is None:
        return "nothing to do: no dataset"
    repository.retire(record.dataset)
    return f"{record.dataset} retired; its backups are kept"


def rebind(ctx: ActionContext) -> str:
    repository = ctx.require_repository()
    record = vm_dataset(repository, ctx.change.vm.instance_uuid)
    if record is None:
        raise ActionFailed(f"{ctx.vm_name}: no dataset to rebind")
    after = ctx.change.after
    if after is None:
        raise ActionFailed("rebind without a new address")
    repository.rebind(record.dataset, after.id, after.connection, ctx.change.vm.name or None)
    return f"now {after.connection}/{after.id}"


def enable_cbt(ctx: ActionContext) -> str:
    session = ctx.require_session()
    ops.set_change_tracking(session, ctx.vm_id, True, timeout=ctx.options.task_timeout)
    if ctx.vm is not None and ctx.vm.power_state is not PowerState.ON:
        return "CBT enabled (takes effect at power-on)"
    # A running VM picks the setting up only at its next stun/unstun: a snapshot create+remove is one.
    name = f"{OUR_SNAPSHOT_PREFIX}{ctx.run_id}"
    snapshot_id = None
    try:
        snapshot_id = ops.create_snapshot(session, ctx.vm_id, name, quiesce=False, timeout=ctx.options.task_timeout)
    finally:
        remove_our_snapshot(ctx, name, snapshot_id)
    return "CBT enabled (stun cycle done)"


def repair(ctx: ActionContext) -> str:
    """Roll the live images back to the last complete backup; without one, start from empty images."""
    repository = ctx.require_repository()
    record = vm_dataset(repository, ctx.change.vm.instance_uuid)
    if record is None:
        return "nothing to do: no dataset"
    if not record.dirty_run_id:
        return "nothing to do: not dirty"
    snapshots = repository.read().snapshots_of(record.dataset)
    complete = [s for s in snapshots if s.complete]
    driver = repository.driver
    last = complete[-1] if complete else None
    # rollback needs the target to be the newest snapshot: our incomplete ones after it go first
    newer = snapshots[snapshots.index(last) + 1:] if last else snapshots
    held = [s.name for s in newer if s.ours and s.held]
    foreign = [s.name for s in newer if not s.ours]
    if last is not None and (held or foreign):
        problems = [f"not made by reconciler: {', '.join(foreign)}"] if foreign else []
        problems += [f"held: {', '.join(held)} (zfs release them)"] if held else []
        raise ActionFailed(f"{record.dataset}: cannot roll back to the last complete backup {last.name}: newer "
                           f"snapshots are {'; '.join(problems)}. Remove or move them, then apply again")
    ours = [s.name for s in newer if s.ours and not s.held]
    if ours:
        driver.destroy_snapshots(ours)
    if last is not None:
        driver.rollback(last.name)
        outcome = f"rolled back to {last.name.partition('@')[2]}"
    else:
        mountpoint = Path(record.mountpoint or "")
        for image in mountpoint.glob("disk-*.raw"):
            image.unlink()
        outcome = "no complete backup: images removed, the next backup is full"
    if ours:
        outcome += f"; removed {len(ours)} incomplete snapshot(s) of ours"
    repository.clear_dirty(record.dataset)
    return outcome


def prune(ctx: ActionContext) -> str:
    """Destroy the listed snapshots in one batch, re-checking right before that each is still ours,
    complete or abandoned, and not held (a hold may have been placed since the plan)."""
    repository = ctx.require_repository()
    record = vm_dataset(repository, ctx.change.vm.instance_uuid)
    if record is None:
        return "nothing to do: no dataset"
    current = {s.name.partition("@")[2]: s for s in repository.read().snapshots_of(record.dataset)}
    doomed, kept = [], []
    for name in ctx.change.snapshots:
        snap = current.get(name)
        if snap is None:
            continue
        if snap.held or not snap.ours or not name.startswith(SNAPSHOT_PREFIX):
            kept.append(name)
            continue
        doomed.append(f"{record.dataset}@{name}")
    newest = [n for n, s in current.items() if s.complete][-1:]
    if any(d.endswith("@" + n) for d in doomed for n in newest):
        raise ActionFailed("refusing to prune the newest complete backup (the plan is stale: plan again)")
    if doomed:
        # the oldest first, then the rest in one batch: the crash tests stop apply in between
        repository.driver.destroy_snapshots(doomed[:1])
        crash_point(ctx.options, "mid-prune")
        repository.driver.destroy_snapshots(doomed[1:])
    summary = f"pruned {len(doomed)} snapshot(s)"
    if kept:
        ctx.note(f"kept {', '.join(kept)}: held or not ours since the plan was made")
        summary += f", kept {len(kept)} (held or not ours)"
    return summary


def remove_vm_snapshot(ctx: ActionContext) -> str:
    session = ctx.require_session()
    present = {name for _, name in ops.vm_snapshots(session, ctx.vm_id)}
    removed = []
    for name in ctx.change.snapshots:
        if not name.startswith(OUR_SNAPSHOT_PREFIX):
            raise ActionFailed(f"refusing to remove {name!r}: not a snapshot made by reconciler")
        if name in present:
            remove_our_snapshot(ctx, name, None)
            removed.append(name)
    return f"removed {', '.join(removed)}" if removed else "nothing to do: already gone"


def consolidate(ctx: ActionContext) -> str:
    """Consolidate like a careful operator: try, wait, try again; then say what to look at."""
    session = ctx.require_session()
    try:
        retry(3, ctx.options.backoff * 5,
              lambda: ops.consolidate_disks(session, ctx.vm_id, timeout=ctx.options.task_timeout),
              lambda exc: isinstance(exc, ops.TaskFailed),
              lambda n, exc: ctx.note(f"consolidation attempt {n} failed ({exc}); waiting, then again"))
    except ops.TaskFailed as exc:
        raise ActionFailed(f"consolidation failed 3 times ({exc}): a file lock (another backup tool, a "
                           "hot-added disk) usually causes this; check the VM's events") from exc
    return "disks consolidated"
