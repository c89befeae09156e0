"""Walk a plan: each VM's changes in plan order, VMs in parallel (bounded overall and per ESXi host), every
change journalled before and after, one frozen outcome per change. Apply runs exactly the plan's changes;
each action re-checks its own precondition."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from enum import StrEnum

from reconciler.adapters.journal.base import EventStatus, Journal, never_completed
from reconciler.adapters.observe import Sessions
from reconciler.adapters.vsphere.session import VsphereError
from reconciler.adapters.zfs import select_driver
from reconciler.adapters.zfs.backups import BackupRepository
from reconciler.adapters.zfs.base import ZfsError
from reconciler.adapters.zfs.dataset_options import vm_dataset_options
from reconciler.apply import actions
from reconciler.apply.backup import BackupResult, run_backup
from reconciler.apply.context import ActionContext, ActionFailed, ApplyOptions
from reconciler.apply.events import Event, Kind
from reconciler.apply.images import vm_dataset
from reconciler.apply.throttle import HostThrottles, host_rate
from reconciler.core.observed import Observed, VmState
from reconciler.core.plan import Action, Change, Plan
from reconciler.policy.model import PolicySet


class Result(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Outcome:
    change: Change
    result: Result
    summary: str = ""
    error: str = ""
    seconds: float = 0.0
    backup: BackupResult | None = None
    notes: tuple[str, ...] = ()


# A failure of these leaves the VM's later changes without their footing: they are skipped.
_BLOCKING = (Action.REPAIR, Action.REBIND, Action.PAIR)
# Cleanup that must never wait on anything else: our orphaned VMware snapshot slows the VM and its LUN, so
# its removal runs even when repair failed, the run is being stopped, or Ctrl-C was pressed.
_ALWAYS = (Action.REMOVE_VM_SNAPSHOT,)

_RUNNERS: dict[Action, Callable[[ActionContext], str]] = {
    Action.PAIR: actions.pair,
    Action.UNPAIR: actions.unpair,
    Action.REBIND: actions.rebind,
    Action.ENABLE_CBT: actions.enable_cbt,
    Action.REPAIR: actions.repair,
    Action.PRUNE: actions.prune,
    Action.REMOVE_VM_SNAPSHOT: actions.remove_vm_snapshot,
    Action.CONSOLIDATE: actions.consolidate,
}


class Executor:
    def __init__(self, plan: Plan, policies: PolicySet, observed: Observed, sessions: Sessions,
                 journals: ThreadJournals, run_id: str, options: ApplyOptions, emit: Callable[[Event], None], *,
                 cancel: threading.Event | None = None, drain: threading.Event | None = None) -> None:
        """`drain` set: no new change starts, running ones finish. `cancel` set: transfers stop now, VMware
        snapshots are still removed, nothing half-done is marked complete (both for `watch`'s stop)."""
        self.plan, self.policies, self.observed = plan, policies, observed
        self.sessions, self.journals, self.run_id = sessions, journals, run_id
        self.options, self.emit = options, emit
        self.cancel = cancel if cancel is not None else threading.Event()
        self.drain = drain if drain is not None else threading.Event()
        self.throttles = HostThrottles()
        self._host_slots: dict[tuple[str, str], threading.Semaphore] = {}
        self._slots_lock = threading.Lock()
        self._chain_repository = {chain.instance_uuid: repo.name for repo in observed.repositories
                                  for chain in repo.chains if not chain.retired}
        self._chain_any = {chain.instance_uuid: repo.name for repo in observed.repositories for chain in repo.chains}

    # -- resolution ---------------------------------------------------------------------------------------
    def repository_name(self, change: Change) -> str | None:
        policy = self.policies.policies.get(change.policy or "")
        if policy is not None and change.action is not Action.UNPAIR:
            return policy.repository
        uuid = change.vm.instance_uuid
        return self._chain_repository.get(uuid) or self._chain_any.get(uuid) or (policy.repository if policy else None)

    def repositories(self) -> set[str]:
        return {name for change in self.plan.changes if (name := self.repository_name(change))}

    def _vm(self, change: Change) -> VmState | None:
        candidates = [vm for vm in self.observed.vms if vm.instance_uuid == change.vm.instance_uuid]
        same = [vm for vm in candidates if vm.connection == change.vm.connection]
        return (same or candidates or [None])[0]

    def context(self, change: Change) -> ActionContext:
        connection = self.policies.connections.get(change.vm.connection)
        session = self.sessions.get(connection) if connection is not None else None
        repo_name = self.repository_name(change)
        repo_spec = self.policies.repositories.get(repo_name or "")
        repository = (BackupRepository(select_driver(repo_spec.driver.value), repo_spec.dataset,
                                       self.journals.never_completed, vm_dataset_options(repo_spec))
                      if repo_spec else None)
        vm = self._vm(change)
        ctx = ActionContext(change, self.run_id, connection, session, repository, repo_name,
                            self.policies.policies.get(change.policy or ""), vm, self.journals,
                            self.options, self.emit, cancel=self.cancel)
        if connection is not None and change.action is Action.BACKUP:
            host = change.host or (vm.host if vm else "")
            rate = host_rate(self._nic_speed(connection.name, host), connection.nbd_bandwidth_share)
            ctx.host_rate = rate
            ctx.throttle = self.throttles.for_host(connection.name, host, rate)
        return ctx

    def _nic_speed(self, connection: str, host: str) -> int | None:
        for state in self.observed.connections:
            if state.name == connection:
                for h in state.hosts:
                    if h.name == host:
                        return h.mgmt_nic_speed_mbps
        return None

    def _host_slot(self, change: Change) -> threading.Semaphore:
        connection = self.policies.connections.get(change.vm.connection)
        limit = connection.max_concurrent_per_host if connection is not None else 1
        key = (change.vm.connection, change.host or "")
        with self._slots_lock:
            return self._host_slots.setdefault(key, threading.BoundedSemaphore(max(1, limit)))

    # -- running ------------------------------------------------------------------------------------------
    def run(self) -> list[Outcome]:
        """Every change's outcome, in plan order. Ctrl-C sets `cancel`: work stops, cleanup runs."""
        per_vm: dict[str, list[Change]] = defaultdict(list)
        for change in self.plan.changes:
            per_vm[change.vm.instance_uuid].append(change)
        jobs = sorted(per_vm.values(), key=lambda cs: min((c.wave for c in cs if c.wave is not None), default=0))
        outcomes: dict[int, Outcome] = {}
        with ThreadPoolExecutor(max_workers=max(1, self.options.parallel), thread_name_prefix="apply") as pool:
            futures = [pool.submit(self._run_vm, job, outcomes) for job in jobs]
            try:
                while True:
                    _, pending = wait(futures, timeout=0.5, return_when=FIRST_EXCEPTION)
                    if not pending:
                        break
            except KeyboardInterrupt:
                self.cancel.set()
                self.emit(Event(Kind.NOTE, None, None, {"message": "interrupted: stopping transfers, removing "
                                                                   "VMware snapshots (Ctrl-C again to abandon)"}))
                wait(futures)
            for future in futures:
                future.result()  # a bug in the executor itself must not pass silently
        return [outcomes[i] for i in range(len(self.plan.changes)) if i in outcomes]

    def _run_vm(self, changes: list[Change], outcomes: dict[int, Outcome]) -> None:
        try:
            self._run_vm_changes(changes, outcomes)
        finally:
            self.journals.close_current()

    def _run_vm_changes(self, changes: list[Change], outcomes: dict[int, Outcome]) -> None:
        blocked: str | None = None
        backed_up = False
        for change in changes:
            index = self.plan.changes.index(change)
            if change.action in _ALWAYS:
                outcomes[index] = self._run_change(change)
            elif self.cancel.is_set():
                outcomes[index] = self._skip(change, "interrupted before it started")
            elif self.drain.is_set():
                outcomes[index] = self._skip(change, "not started: stopping (the next run does it)")
            elif blocked is not None:
                outcomes[index] = self._skip(change, blocked)
            elif change.after_backup and not backed_up:
                outcomes[index] = self._skip(change, "retention counted on this run's backup, which did not complete")
            else:
                outcome = self._run_change(change)
                outcomes[index] = outcome
                if outcome.result is Result.FAILED and change.action in _BLOCKING:
                    blocked = f"{change.action.value} failed"
                backed_up = backed_up or (change.action is Action.BACKUP and outcome.result is Result.SUCCEEDED)

    def _skip(self, change: Change, why: str) -> Outcome:
        self._journal(change, EventStatus.SKIPPED, {"reason": why})
        outcome = Outcome(change, Result.SKIPPED, error=why)
        self._emit_done(outcome)
        return outcome

    def _run_change(self, change: Change) -> Outcome:
        started = time.monotonic()
        kind = {"kind": change.kind.value if change.kind else None}
        self.emit(Event(Kind.ACTION_STARTED, change.vm.name, change.action.value, kind))
        self._journal(change, EventStatus.STARTED, kind)
        ctx: ActionContext | None = None
        try:
            ctx = self.context(change)
            if change.action is Action.BACKUP:
                with self._host_slot(change):
                    result = run_backup(ctx)
                summary = (f"{result.kind.value}, {result.consistency}, read {_size(result.bytes_read)}, "
                           f"wrote {_size(result.bytes_written)} → {result.snapshot}")
                detail = {"snapshot": result.snapshot, "kind": result.kind.value, "bytesRead": result.bytes_read,
                          "bytesWritten": result.bytes_written, "consistency": result.consistency}
                if result.verify_result is not None:
                    detail["verifyResult"] = result.verify_result
                if result.verify_failed:
                    # the snapshot stays (it is complete, and flagged on the snapshot); the run must not look fine
                    error = (f"backup {result.snapshot} was taken but its verification {result.verify_result} "
                             "(kept, flagged reconciler:verify-result)")
                    outcome = Outcome(change, Result.FAILED, summary, error=error,
                                      seconds=time.monotonic() - started, backup=result, notes=tuple(ctx.notes))
                    self._journal(change, EventStatus.FAILED, {**detail, "error": error})
                    self._emit_done(outcome)
                    return outcome
                outcome = Outcome(change, Result.SUCCEEDED, summary, seconds=time.monotonic() - started,
                                  backup=result, notes=tuple(ctx.notes))
            else:
                summary = _RUNNERS[change.action](ctx)
                outcome = Outcome(change, Result.SUCCEEDED, summary, seconds=time.monotonic() - started,
                                  notes=tuple(ctx.notes))
                detail = {"summary": summary}
            self._journal(change, EventStatus.SUCCEEDED, detail)
        except (ActionFailed, VsphereError, ZfsError, OSError) as exc:
            error = str(exc) or type(exc).__name__
            detail = {"error": error}
            if change.action is Action.BACKUP and ctx is not None:
                detail["dataWritten"] = self._left_dirty(ctx)
            self._journal(change, EventStatus.FAILED, detail)
            outcome = Outcome(change, Result.FAILED, error=error, seconds=time.monotonic() - started,
                              notes=tuple(ctx.notes) if ctx else ())
        self._emit_done(outcome)
        return outcome

    def _left_dirty(self, ctx: ActionContext) -> bool:
        if ctx.repository is None:
            return False
        try:
            record = vm_dataset(ctx.repository, ctx.change.vm.instance_uuid)
        except ZfsError:
            return False
        return record is not None and record.dirty_run_id == self.run_id

    def _journal(self, change: Change, status: EventStatus, detail: dict) -> None:
        self.journals.record_event(self.run_id, change.action.value, status,
                                   instance_uuid=change.vm.instance_uuid, detail=detail)

    def _emit_done(self, outcome: Outcome) -> None:
        data = {"result": outcome.result.value, "summary": outcome.summary, "error": outcome.error,
                "seconds": round(outcome.seconds, 3)}
        if outcome.backup is not None:
            data |= {"kind": outcome.backup.kind.value, "bytes_read": outcome.backup.bytes_read,
                     "bytes_written": outcome.backup.bytes_written, "snapshot": outcome.backup.snapshot,
                     "verify_result": outcome.backup.verify_result}
        self.emit(Event(Kind.ACTION_DONE, outcome.change.vm.name, outcome.change.action.value,
                        {k: v for k, v in data.items() if v not in ("", None)}))


class ThreadJournals:
    """One journal connection per worker thread (an sqlite3 connection belongs to the thread that made
    it); SQLite's busy timeout serialises the writes."""

    def __init__(self, open_journal: Callable[[], Journal]) -> None:
        self._open = open_journal
        self._local = threading.local()

    def get(self) -> Journal:
        journal = getattr(self._local, "journal", None)
        if journal is None:
            journal = self._local.journal = self._open()
        return journal

    def record_event(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.get().record_event(*args, **kwargs)

    def never_completed(self, run_id: str) -> bool:
        return never_completed(self.get(), run_id)

    def close_current(self) -> None:
        """Close this thread's connection (only its own thread may)."""
        journal = getattr(self._local, "journal", None)
        if journal is not None:
            self._local.journal = None
            journal.close()


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
