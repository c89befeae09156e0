"""`plan(desired, observed, now) -> Plan`: the pure heart of the reconciler.

No clock, file, socket or environment: everything arrives as arguments, so the same inputs always give
the same (sorted) plan. Per protected VM the order of changes is the order of `Action`.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace

from reconciler.core import loadspread, retention, schedule
from reconciler.core.diagnostics import Code, Diagnostic, Severity
from reconciler.core.observed import (
    ApiType,
    Backup,
    BackupDisk,
    BackupKind,
    Chain,
    ConnectionError_,
    Observed,
    PowerState,
    RepositoryState,
    ToolsStatus,
    VmHistory,
    VmState,
)
from reconciler.core.plan import (
    Action,
    Address,
    Change,
    DiskPlan,
    NotObserved,
    Plan,
    PlanOptions,
    RetentionExplanation,
    Unobserved,
)
from reconciler.core.refs import VmRef
from reconciler.core.selection import names_vm, selects
from reconciler.policy.model import Location, PolicySet, ProtectionPolicy, Quiesce, Transport

NBD_LARGE_DISK = 2**40  # 1 TiB: NBD reads of bigger disks take hours; hotadd or SAN is the better path
FOREIGN_SNAPSHOT_AGE = dt.timedelta(hours=24)
SUPPORTED_VERSIONS = ((6, 0), (8, 0))  # major.minor, inclusive
_UNSUPPORTED_EDITIONS = ("free", "eval", "hypervisor")  # the free ESXi licence is "vSphere Hypervisor"
_TOOLS_USABLE = (ToolsStatus.OK, ToolsStatus.OLD)


def plan(
    desired: PolicySet,
    observed: Observed,
    now: dt.datetime,
    *,
    allow_mass_prune: bool = False,
    targets: Iterable[str] | None = None,
    explain_retention: bool = False,
    fingerprint: str | None = None,
) -> Plan:
    """Compare desired with observed at `now` (aware). `fingerprint` may be passed when already known."""
    if now.tzinfo is None:
        raise ValueError("plan(): `now` must be timezone-aware")
    options = PlanOptions(allow_mass_prune, tuple(targets or ()), explain_retention)
    planner = _Planner(desired, observed, now, options)
    planner.run()
    changes, diagnostics, explained = planner.changes, planner.diagnostics, planner.explanations
    if options.targets:
        changes = [c for c in changes if _targeted(options.targets, c.vm)]
        diagnostics = [d for d in diagnostics if d.vm is None or _targeted(options.targets, d.vm)]
        explained = [e for e in explained if _targeted(options.targets, e.vm)]
    return Plan(
        changes=tuple(sorted(changes, key=Change.sort_key)),
        diagnostics=tuple(sorted(set(diagnostics), key=Diagnostic.sort_key)),
        fingerprint=fingerprint if fingerprint is not None else observed.fingerprint(),
        made_at=now.astimezone(dt.UTC),
        options=options,
        retention=tuple(sorted(explained, key=lambda e: (e.policy, e.vm.name, e.vm.instance_uuid))),
        unobserved=Unobserved(tuple(planner.unobserved_connections), tuple(planner.unobserved_repositories)),
    )


def _targeted(targets: tuple[str, ...], vm: VmRef) -> bool:
    return any(names_vm(t, vm.instance_uuid, vm.id, vm.name) for t in targets)


def _ref(vm: VmState) -> VmRef:
    return VmRef(vm.instance_uuid, vm.name, vm.id, vm.connection)


def _chain_ref(chain: Chain) -> VmRef:
    return VmRef(chain.instance_uuid, chain.vm_name, chain.vm_id, chain.connection)


def _epoch(change_id: str) -> str:
    """The CBT epoch of a change ID ("52 3c …/17" -> "52 3c …"): it changes when CBT is reset."""
    return change_id.rpartition("/")[0] or change_id


def _version(text: str) -> tuple[int, int] | None:
    parts = text.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return None


def _unsupported_edition(edition: str | None) -> bool:
    return edition is not None and any(m in edition.lower() for m in _UNSUPPORTED_EDITIONS)


@dataclass(frozen=True)
class _Backup:
    """A planned backup before load spreading, with what spreading needs to know."""

    change: Change
    last_ts: float  # the longest-waiting VMs go first
    disk_count: int
    api_type: ApiType
    max_per_host: int


class _Planner:
    def __init__(self, desired: PolicySet, observed: Observed, now: dt.datetime, options: PlanOptions):
        self.desired, self.observed, self.now, self.options = desired, observed, now, options
        self.changes: list[Change] = []
        self.diagnostics: list[Diagnostic] = []
        self.backups: list[_Backup] = []
        self.explanations: list[RetentionExplanation] = []
        self.connections = {c.name: c for c in observed.connections}
        self.repositories = {r.name: r for r in observed.repositories}
        self.history: dict[str, VmHistory] = {h.instance_uuid: h for h in observed.journal.vms}
        self.chains: dict[tuple[str, str], Chain] = {}
        self.chains_by_uuid: dict[str, list[tuple[RepositoryState, Chain]]] = defaultdict(list)
        for repo in observed.repositories:
            if repo.reachable:
                for chain in repo.chains:
                    self.chains[(repo.name, chain.instance_uuid)] = chain
                    self.chains_by_uuid[chain.instance_uuid].append((repo, chain))
        self.reachable = {name for name, c in self.connections.items() if c.reachable}
        self.vms_by_uuid: dict[str, list[VmState]] = defaultdict(list)
        for vm in observed.vms:
            if vm.connection in self.reachable:
                self.vms_by_uuid[vm.instance_uuid].append(vm)
        self.blocked_hosts: set[tuple[str, str]] = set()
        self.blocked_connections: set[str] = set()
        self.rules = {name: retention.policy_rules(r) for name, r in desired.retentions.items()}
        # what the policies need and could not be seen (in name order): the plan is incomplete
        self.unobserved_connections: list[NotObserved] = []
        self.unobserved_repositories: list[NotObserved] = []

    def diag(self, code: Code, severity: Severity, message: str, vm: VmRef | None = None,
             disk: int | None = None, location: Location | None = None) -> None:
        self.diagnostics.append(Diagnostic(code, severity, message, vm, disk, location))

    def run(self) -> None:
        policies = [self.desired.policies[n] for n in sorted(self.desired.policies)]
        policies = [p for p in policies if self._policy_usable(p)]
        for name in sorted({p.connection for p in policies}):
            self._check_connection(name)
        for name in sorted({p.repository for p in policies}):
            repo = self.repositories.get(name)
            if repo is None or not repo.reachable:
                detail = repo.error_message if repo else "not observed"
                self.unobserved_repositories.append(NotObserved(name, detail))
                self.diag(Code.REPOSITORY_UNREACHABLE, Severity.ERROR,
                          f"repository {name!r} is unreachable: {detail}; nothing planned for its VMs",
                          location=self.desired.repositories[name].location)
        claims = self._claims(policies)
        for uuid in sorted(claims):
            claimants = claims[uuid]
            if len({p.name for p, _ in claimants}) > 1:
                self._conflict(uuid, claimants)
            else:
                policy, vm = claimants[0]
                self._plan_vm(policy, vm)
        self._unclaimed_chains(claims)
        self._missing_explicit(policies)
        self._orphan_snapshots(claims)
        self._spread()

    def _policy_usable(self, policy: ProtectionPolicy) -> bool:
        missing = [f"{kind} {name!r}" for kind, name, table in (
            ("connection", policy.connection, self.desired.connections),
            ("repository", policy.repository, self.desired.repositories),
            ("schedule", policy.schedule, self.desired.schedules),
            ("retention", policy.retention, self.desired.retentions),
        ) if name not in table]
        if missing:
            self.diag(Code.POLICY_INVALID, Severity.ERROR,
                      f"policy {policy.name!r} refers to unknown {', '.join(missing)}; it is skipped",
                      location=policy.location)
            return False
        sched = self.desired.schedules[policy.schedule]
        problem = schedule.problem(sched)
        if problem:
            self.diag(Code.POLICY_INVALID, Severity.ERROR,
                      f"schedule {sched.name!r} of policy {policy.name!r}: {problem}; the policy is skipped",
                      location=sched.location)
        return problem is None

    def _check_connection(self, name: str) -> None:
        state = self.connections.get(name)
        location = self.desired.connections[name].location
        if state is None or not state.reachable:
            code = (Code.THUMBPRINT_MISMATCH if state and state.error is ConnectionError_.THUMBPRINT_MISMATCH
                    else Code.CONNECTION_FAILED)
            detail = state.error_message if state and state.error_message else "not reachable"
            self.unobserved_connections.append(NotObserved(name, detail))
            self.diag(code, Severity.ERROR, f"connection {name!r}: {detail}; its VMs are not planned",
                      location=location)
            return
        version = _version(state.version)
        low, high = SUPPORTED_VERSIONS
        if version is None or not low <= version <= high:
            self.diag(Code.UNSUPPORTED_VSPHERE_VERSION, Severity.WARNING,
                      f"connection {name!r} runs vSphere {state.version}; supported are 6.0 to 8.0",
                      location=location)
        if _unsupported_edition(state.license_edition):
            self.blocked_connections.add(name)
            self.diag(Code.UNSUPPORTED_LICENSE, Severity.ERROR,
                      f"connection {name!r} has licence {state.license_edition!r}: its backup API is "
                      "read-only; no backups", location=location)
        for host in state.hosts:
            if _unsupported_edition(host.license_edition) and name not in self.blocked_connections:
                self.blocked_hosts.add((name, host.name))
                self.diag(Code.UNSUPPORTED_LICENSE, Severity.ERROR,
                          f"host {host.name!r} on {name!r} has licence {host.license_edition!r}: "
                          "no backups of its VMs", location=location)

    def _claims(self, policies: list[ProtectionPolicy]) -> dict[str, list[tuple[ProtectionPolicy, VmState]]]:
        by_connection: dict[str, list[VmState]] = defaultdict(list)
        for vm in sorted(self.observed.vms, key=lambda v: (v.connection, v.id)):
            by_connection[vm.connection].append(vm)
        claims: dict[str, list[tuple[ProtectionPolicy, VmState]]] = defaultdict(list)
        for policy in policies:
            if policy.connection not in self.reachable:
                continue
            for vm in by_connection.get(policy.connection, ()):
                if selects(policy.select, vm):
                    claims[vm.instance_uuid].append((policy, vm))
        return claims

    def _conflict(self, uuid: str, claimants: list[tuple[ProtectionPolicy, VmState]]) -> None:
        vm = claimants[0][1]
        where = ", ".join(f"{p.name} ({p.location})" for p, _ in claimants)
        self.diag(Code.POLICY_CONFLICT, Severity.ERROR,
                  f"VM {vm.name!r} is claimed by several policies: {where}; it is not backed up",
                  vm=_ref(vm), location=claimants[0][0].location)

    # -- one protected VM -------------------------------------------------------------------------------

    def _plan_vm(self, policy: ProtectionPolicy, vm: VmState) -> None:
        repo = self.repositories.get(policy.repository)
        if repo is None or not repo.reachable:
            return
        ref, chain = _ref(vm), self.chains.get((repo.name, vm.instance_uuid))
        blocked = self._vm_diagnostics(policy, vm, ref)
        active = not policy.paused
        if chain is None or chain.retired:
            if active and not vm.encrypted:
                why = (f"re-protect: chain {chain.dataset} was retired, its backups are kept" if chain
                       else f"matched by policy {policy.name!r}, not yet protected")
                self.add(Change(Action.PAIR, ref, policy.name, why,
                                after=Address(vm.connection, vm.id)))
        elif (chain.vm_id, chain.connection) != (vm.id, vm.connection):
            self.add(Change(Action.REBIND, ref, policy.name,
                            f"same instanceUuid, new address: {chain.connection}/{chain.vm_id} -> "
                            f"{vm.connection}/{vm.id}; the chain is kept",
                            before=Address(chain.connection, chain.vm_id),
                            after=Address(vm.connection, vm.id)))
        if chain is not None and chain.dirty_run_id:
            self._repair(policy, ref, chain)
        if active and not vm.cbt_enabled and vm.hw_version >= 7 and not blocked:
            self.add(Change(Action.ENABLE_CBT, ref, policy.name,
                            "Changed Block Tracking is off: incrementals need it"))
        if vm.consolidation_needed:
            self.add(Change(Action.CONSOLIDATE, ref, policy.name,
                            "vSphere reports that the VM's disks need consolidation"))
        planned = self._backup(policy, vm, ref, chain) if active and not blocked else None
        if chain is not None and (not chain.retired or active):
            self._prune(policy, vm, ref, chain, planned)

    def add(self, change: Change) -> None:
        self.changes.append(change)

    def _vm_diagnostics(self, policy: ProtectionPolicy, vm: VmState, ref: VmRef) -> bool:
        """Diagnostics about the VM itself; True when they block its backup."""
        blocked = vm.connection in self.blocked_connections or (vm.connection, vm.host) in self.blocked_hosts
        if vm.encrypted:
            blocked = True
            self.diag(Code.ENCRYPTED_VM, Severity.ERROR,
                      f"VM {vm.name!r} is encrypted: it cannot be backed up over NBD", vm=ref)
        if vm.hw_version < 7:
            self.diag(Code.HW_VERSION_BELOW_7, Severity.WARNING,
                      f"VM {vm.name!r} has hardware version {vm.hw_version} (< 7, no CBT): every backup "
                      "is full", vm=ref)
        if (vm.power_state is PowerState.ON and vm.tools_status not in _TOOLS_USABLE
                and policy.quiesce is not Quiesce.OFF):
            required = policy.quiesce is Quiesce.REQUIRED
            blocked = blocked or required
            self.diag(Code.TOOLS_NOT_RUNNING,
                      Severity.ERROR if required else Severity.INFO,
                      f"VMware Tools are not running in {vm.name!r} ({vm.tools_status.value}): "
                      + ("quiesce is required, the backup is blocked" if required
                         else "the backup will be crash-consistent"), vm=ref)
        if vm.consolidation_needed:
            self.diag(Code.CONSOLIDATION_NEEDED, Severity.WARNING,
                      f"VM {vm.name!r} needs disk consolidation", vm=ref)
        for finding in vm.volumes:
            code = Code.EXCLUDED_VOLUME if finding.excluded else Code.UNSUPPORTED_VOLUME
            self.diag(code, Severity.INFO if finding.excluded else Severity.WARNING,
                      f"disk {finding.disk}, {finding.volume}: {finding.reason}", vm=ref, disk=finding.disk)
        if policy.transports[:1] == (Transport.NBD,):
            for disk in vm.disks:
                if disk.capacity > NBD_LARGE_DISK:
                    self.diag(Code.NBD_LARGE_DISK, Severity.WARNING,
                              f"disk {disk.key} of {vm.name!r} is {disk.capacity / 2**40:.1f} TiB and is "
                              "read over NBD: consider the hotadd transport", vm=ref, disk=disk.key)
        for snap in vm.snapshots:
            if not snap.ours and self.now - snap.created >= FOREIGN_SNAPSHOT_AGE:
                age = (self.now - snap.created).days
                self.diag(Code.FOREIGN_SNAPSHOT, Severity.WARNING,
                          f"VM {vm.name!r} has a snapshot {snap.name!r} not made by us, {age} days old: it "
                          "slows the VM and another tool may be resetting CBT", vm=ref)
        return blocked

    def _repair(self, policy: ProtectionPolicy, ref: VmRef, chain: Chain) -> None:
        complete = [b for b in chain.backups if b.complete and b.ours]
        last_good = complete[-1] if complete else None
        after_ts = last_good.created_ts if last_good else float("-inf")
        after_good = [b.name for b in chain.backups if not b.complete and b.ours and b.created_ts > after_ts]
        target = f"roll back to {last_good.name}" if last_good else "no complete backup: start afresh"
        self.add(Change(Action.REPAIR, ref, policy.name,
                        f"interrupted backup {chain.dirty_run_id} left the live image dirty; {target}",
                        snapshots=tuple(after_good)))

    def _backup(self, policy: ProtectionPolicy, vm: VmState, ref: VmRef, chain: Chain | None) -> Change | None:
        sched = self.desired.schedules[policy.schedule]
        backups = chain.backups if chain is not None else ()  # a retired chain re-paired is reused
        last = _last_complete(backups)
        last_time = last.created if last else None
        if not schedule.is_due(sched, last_time, self.now):
            return None
        history = self.history.get(vm.instance_uuid)
        force = None
        if last is None:
            force = "no backup yet"
        elif vm.hw_version < 7:
            force = f"hardware version {vm.hw_version} has no CBT"
        elif not vm.cbt_enabled:
            force = "CBT is being enabled"
        elif (chain is not None and chain.dirty_run_id) or (history is not None and history.interrupted):
            force = "the previous backup failed mid-way"
        disks = tuple(self._disk_plan(vm, ref, backups, force))
        kind = (BackupKind.FULL if all(d.mode is BackupKind.FULL for d in disks)
                else BackupKind.INCREMENTAL)
        if last_time is None:
            reason = "first backup"
        else:
            hours = (self.now - last_time).total_seconds() / 3600
            reason = f"due: last complete backup {hours:.1f} h ago ({last.name})"  # type: ignore[union-attr]
        if force and kind is BackupKind.FULL and last is not None:
            reason += f"; full: {force}"
        change = Change(Action.BACKUP, ref, policy.name, reason, kind=kind, disks=disks, host=vm.host,
                        datastores=tuple(sorted({d.datastore for d in vm.disks})))
        api_type = self.connections[vm.connection].api_type
        per_host = self.desired.connections[vm.connection].max_concurrent_per_host
        last_ts = last.created_ts if last else float("-inf")
        self.backups.append(_Backup(change, last_ts, len(vm.disks), api_type, per_host))
        return change

    def _disk_plan(self, vm: VmState, ref: VmRef, backups: tuple[Backup, ...],
                   force: str | None) -> Iterable[DiskPlan]:
        bases = _disk_bases(backups, {d.key for d in vm.disks}) if force is None else {}
        for disk in sorted(vm.disks, key=lambda d: d.key):
            full = BackupKind.FULL
            if force is not None:
                yield DiskPlan(disk.key, full, force)
                continue
            base = bases.get(disk.key)
            if base is None:
                yield DiskPlan(disk.key, full, "new disk")
                continue
            name, recorded = base
            if recorded.capacity != disk.capacity:
                yield DiskPlan(disk.key, full, f"resized from {recorded.capacity} to {disk.capacity} bytes")
            elif recorded.backing != disk.backing:
                yield DiskPlan(disk.key, full, f"moved from {recorded.backing} to {disk.backing}")
            elif not disk.change_id or not recorded.change_id:
                yield DiskPlan(disk.key, full, "no change ID to continue from")
            elif _epoch(disk.change_id) != _epoch(recorded.change_id):
                self.diag(Code.CBT_RESET, Severity.WARNING,
                          f"CBT of disk {disk.key} of {vm.name!r} was reset since {name}: that disk is read "
                          "in full", vm=ref, disk=disk.key)
                yield DiskPlan(disk.key, full, "CBT was reset")
            else:
                yield DiskPlan(disk.key, BackupKind.INCREMENTAL, f"changes since {name}")

    def _prune(self, policy: ProtectionPolicy, vm: VmState, ref: VmRef, chain: Chain,
               planned: Change | None) -> None:
        if not chain.backups:
            return
        decision = self._retention(policy, vm, chain.backups, chain)
        bases = {name for uuid, name in self.observed.replica_bases if uuid == vm.instance_uuid}
        if bases:  # a replica's common base stays, whatever retention says: the chain to the target holds
            decision = replace(decision, prune=tuple(n for n in decision.prune if n not in bases))
        if decision.refused:
            self.diag(Code.MASS_PRUNE_REFUSED, Severity.WARNING,
                      f"retention would prune {decision.complete_pruned} of {decision.complete_total} "
                      f"backups of {vm.name!r} (more than half): nothing pruned without --allow-mass-prune",
                      vm=ref)
        if decision.prune:
            self.add(Change(Action.PRUNE, ref, policy.name, f"outside retention {policy.retention!r}",
                            snapshots=decision.prune))
        if decision.kept:
            self.explanations.append(RetentionExplanation(ref, policy.name, decision.kept))
        if planned is not None and not decision.refused:
            # Judge retention as it will be once this run's backup is complete, so that one apply converges
            # (the re-plan is empty); what only that backup makes redundant waits for it to succeed.
            after = self._retention(policy, vm, (*chain.backups, _planned_backup(planned, vm, self.now)), None)
            repaired = {n for c in self.changes if c.action is Action.REPAIR and c.vm == ref for n in c.snapshots}
            extra = tuple(n for n in after.prune if n not in decision.prune and n not in repaired
                          and n not in bases)
            if extra and not after.refused:
                self.add(Change(Action.PRUNE, ref, policy.name,
                                f"outside retention {policy.retention!r} once this run's backup is complete",
                                snapshots=extra, after_backup=True))

    def _retention(self, policy: ProtectionPolicy, vm: VmState, backups: tuple[Backup, ...],
                   chain: Chain | None) -> retention.RetentionDecision:
        return retention.decide(
            backups, self.rules[policy.retention], self.now,
            self.desired.schedules[policy.schedule].timezone,
            index=chain.index if chain is not None else None,
            live_disk_keys=frozenset(d.key for d in vm.disks),
            repairing=False if chain is None else bool(chain.dirty_run_id),
            allow_mass_prune=self.options.allow_mass_prune,
            explain=self.options.explain_retention and chain is not None,
        )

    # -- the rest of the world ---------------------------------------------------------------------------

    def _unclaimed_chains(self, claims: dict[str, list[tuple[ProtectionPolicy, VmState]]]) -> None:
        for uuid in sorted(self.chains_by_uuid):
            if uuid in claims:
                continue
            for repo, chain in self.chains_by_uuid[uuid]:
                if chain.retired:
                    continue
                vms = self.vms_by_uuid.get(uuid)
                if vms:
                    self.add(Change(Action.UNPAIR, _ref(vms[0]), chain.policy or None,
                                    f"no policy claims this VM any more; its backups in {chain.dataset} "
                                    "are kept", before=Address(chain.connection, chain.vm_id)))
                elif chain.connection in self.reachable:
                    self.diag(Code.VM_NOT_FOUND, Severity.WARNING,
                              f"VM {chain.vm_name!r} ({uuid}) is no longer in the inventory of "
                              f"{chain.connection!r}; its backups in {repo.name}:{chain.dataset} are kept",
                              vm=_chain_ref(chain))

    def _missing_explicit(self, policies: list[ProtectionPolicy]) -> None:
        """A policy naming a VM by id or instanceUuid that the connection does not have."""
        for policy in policies:
            if policy.connection not in self.reachable:
                continue
            ids = {vm.id for vm in self.observed.vms if vm.connection == policy.connection} \
                if policy.select.ids else set()
            for vm_id in policy.select.ids:
                if vm_id not in ids:
                    self.diag(Code.VM_NOT_FOUND, Severity.WARNING,
                              f"policy {policy.name!r} selects id {vm_id!r}, not found on "
                              f"{policy.connection!r}", location=policy.location)
            for uuid in policy.select.instance_uuids:
                found = any(vm.connection == policy.connection for vm in self.vms_by_uuid.get(uuid, ()))
                if not found and uuid not in self.chains_by_uuid:
                    self.diag(Code.VM_NOT_FOUND, Severity.WARNING,
                              f"policy {policy.name!r} selects instanceUuid {uuid!r}, not found on "
                              f"{policy.connection!r}", location=policy.location)

    def _orphan_snapshots(self, claims: dict[str, list[tuple[ProtectionPolicy, VmState]]]) -> None:
        running = self.observed.journal.runs_in_progress
        for vm in self.observed.vms:
            if vm.connection not in self.reachable:
                continue
            orphans = tuple(sorted(s.name for s in vm.snapshots if s.ours and s.run_id not in running))
            if orphans:
                claimants = claims.get(vm.instance_uuid, ())
                policy = claimants[0][0].name if len(claimants) == 1 else None
                self.add(Change(Action.REMOVE_VM_SNAPSHOT, _ref(vm), policy,
                                "VMware snapshot left by a run that is no longer running", snapshots=orphans))

    def _spread(self) -> None:
        ordered = sorted(self.backups, key=lambda b: (b.last_ts, b.change.vm.name, b.change.vm.instance_uuid))
        demands = []
        for item in ordered:
            conn, host = item.change.vm.connection, item.change.host or ""
            needs = [(("host", conn, host), 1, max(item.max_per_host, 1))]
            if item.api_type is ApiType.VCENTER:
                needs.append((("nfc", conn), max(item.disk_count, 1), loadspread.VCENTER_NFC_BUDGET))
            needs.extend((("datastore", conn, ds), 1, loadspread.DATASTORE_SNAPSHOT_LIMIT)
                         for ds in item.change.datastores)
            demands.append(loadspread.Demand(tuple(needs)))
        for item, wave in zip(ordered, loadspread.assign_waves(demands), strict=True):
            self.changes.append(replace(item.change, wave=wave))


def _planned_backup(change: Change, vm: VmState, now: dt.datetime) -> Backup:
    """The backup `change` will make, as retention sees it: complete, newest, of every live disk."""
    disks = tuple(BackupDisk(d.key, d.change_id, d.capacity, d.backing) for d in vm.disks)
    return Backup("(this run's backup)", now, change.kind, complete=True, disks=disks)


def _last_complete(backups: tuple[Backup, ...]) -> Backup | None:
    for backup in reversed(backups):
        if backup.complete and backup.ours:
            return backup
    return None


def _disk_bases(backups: tuple[Backup, ...], keys: set[int]) -> dict[int, tuple[str, BackupDisk]]:
    """Per disk key: (snapshot name, recorded disk) of the newest complete backup that holds it."""
    bases: dict[int, tuple[str, BackupDisk]] = {}
    wanted = set(keys)
    for backup in reversed(backups):
        if not wanted:
            break
        if backup.complete and backup.ours:
            for disk in backup.disks:
                if disk.key in wanted:
                    bases[disk.key] = (backup.name, disk)
                    wanted.discard(disk.key)
    return bases

