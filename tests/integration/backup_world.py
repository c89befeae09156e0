"""A policy set over the test lab, and what the backup tests check with: `reconciler apply` run as the
operator runs it (a subprocess, JSON events), checksums of disks and of ZFS snapshots (read from a clone:
zfs-fuse exposes no `.zfs/snapshot`), VMware snapshots as vSphere lists them."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.adapters.vsphere import ops
from reconciler.adapters.vsphere.session import VsphereSession
from reconciler.adapters.zfs.backups import read_repository
from reconciler.adapters.zfs.base import ZfsError
from reconciler.adapters.zfs.cli import CliZfsDriver
from reconciler.adapters.zfs.runner import run
from reconciler.lab.lab import Lab

MiB = 1024 * 1024
RECONCILER = str(Path(sys.executable).with_name("reconciler"))
_clones = itertools.count()

POLICIES = """\
apiVersion: reconciler/v1
kind: Repository
metadata: {{name: test-pool}}
spec: {{dataset: {dataset}, driver: cli}}
---
apiVersion: reconciler/v1
kind: Schedule
metadata: {{name: hourly}}
spec:
  rules:
    - every: 1h
---
apiVersion: reconciler/v1
kind: Retention
metadata: {{name: short}}
spec: {{keepLast: {keep_last}}}
---
apiVersion: reconciler/v1
kind: ProtectionPolicy
metadata: {{name: test}}
spec:
  connection: lab-vcenter
  repository: test-pool
  schedule: hourly
  retention: short
  select:
    names: [{names}]
  quiesce: {quiesce}
"""


@dataclass(frozen=True)
class ApplyRun:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str

    def done(self, vm: str, action: str = "backup") -> dict[str, Any]:
        found = [e for e in self.events if e["event"] == "action-done" and e.get("vm") == vm
                 and e.get("action") == action]
        assert found, f"no {action} of {vm} finished: {self.events} {self.stderr}"
        return found[-1]

    def report(self) -> str:
        """What went wrong, for assertion messages: stderr, notes and outcomes."""
        lines = [json.dumps(e) for e in self.events if e["event"] in ("note", "action-done")]
        return "\n".join([self.stderr, *lines])

    def notes(self, vm: str) -> list[str]:
        return [e["message"] for e in self.events if e["event"] == "note" and e.get("vm") == vm]


@dataclass
class World:
    lab: Lab
    root: Path
    dataset: str
    vms: tuple[str, ...]
    quiesce: str = "preferred"
    keep_last: int = 3
    clock: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def __post_init__(self) -> None:
        self.state = self.lab.require_state()
        self.policy_dir = self.root / "policies"
        self.state_dir = self.root / "state"
        self.policy_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.lab.state_dir / "connections.yaml", self.policy_dir / "connections.yaml")
        self.write_policies()
        site = self.state.sites["vcenter"]
        self.session = VsphereSession(site.sdk, site.username, site.password, thumbprint=site.thumbprint_sha256)
        self.control = self.lab.control()
        self.driver = CliZfsDriver()

    def write_policies(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self, key, value)
        (self.policy_dir / "rest.yaml").write_text(POLICIES.format(
            dataset=self.dataset, names=", ".join(self.vms), quiesce=self.quiesce, keep_last=self.keep_last))

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "RECONCILER_LAB_PASSWORD": self.state.sites["vcenter"].password,
                "RECONCILER_RETRY_BACKOFF": "0.2", **extra}

    def next_time(self) -> str:
        """Every apply runs 2 h after the previous one: an hourly backup is always due."""
        self.clock += dt.timedelta(hours=2)
        return self.clock.isoformat().replace("+00:00", "Z")

    def apply(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> ApplyRun:
        command = [RECONCILER, "apply", str(self.policy_dir), "--state-dir", str(self.state_dir),
                   "--auto-approve", "--json", "--at", self.next_time(), *args]
        done = subprocess.run(command, capture_output=True, text=True, env=env or self.env(), timeout=timeout)
        events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        return ApplyRun(done.returncode, events, done.stderr)

    def apply_watching(self, on_event: Any, *args: str, timeout: float = 300) -> ApplyRun:
        """Apply while the test reacts to its events as they come (to arm a fault mid-transfer)."""
        command = [RECONCILER, "apply", str(self.policy_dir), "--state-dir", str(self.state_dir),
                   "--auto-approve", "--json", "--at", self.next_time(), *args]
        events = []
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=self.env(), preexec_fn=_interruptible) as process:
            assert process.stdout is not None and process.stderr is not None
            for line in process.stdout:
                if line.startswith("{"):
                    events.append(json.loads(line))
                    on_event(events[-1], process)
            stderr = process.stderr.read()
            returncode = process.wait(timeout)
        return ApplyRun(returncode, events, stderr)

    def plan(self, *args: str) -> dict[str, Any]:
        command = [RECONCILER, "plan", str(self.policy_dir), "--state-dir", str(self.state_dir), "--json",
                   "--at", (self.clock + dt.timedelta(minutes=1)).isoformat().replace("+00:00", "Z"), *args]
        done = subprocess.run(command, capture_output=True, text=True, env=self.env(), timeout=120, check=True)
        return json.loads(done.stdout)

    # -- the source ------------------------------------------------------------------------------------
    def disk(self, vm: str, key: int) -> dict[str, Any]:
        return self.state.sites["vcenter"].disk(vm, key)

    def source_sha(self, vm: str, key: int) -> str:
        return sha256(Path(self.disk(vm, key)["file"]))

    def vm_id(self, vm: str) -> str:
        return next(v["moref"] for v in self.state.sites["vcenter"].vms if v["name"] == vm)

    def instance_uuid(self, vm: str) -> str:
        return next(v["instanceUuid"] for v in self.state.sites["vcenter"].vms if v["name"] == vm)

    def vmware_snapshots(self, vm: str) -> list[str]:
        return [name for _, name in ops.vm_snapshots(self.session, self.vm_id(vm))]

    # -- the repository --------------------------------------------------------------------------------
    def record(self, vm: str) -> tuple[Any, list[Any]]:
        repo = read_repository(self.driver, self.dataset)
        dataset = f"{self.dataset}/{self.instance_uuid(vm)}"
        ds = next((d for d in repo.datasets if d.dataset == dataset), None)
        return ds, repo.snapshots_of(dataset)

    def complete_backups(self, vm: str) -> list[Any]:
        return [s for s in self.record(vm)[1] if s.complete]

    def snapshot_files(self, snapshot: str) -> contextlib.AbstractContextManager[Path]:
        return snapshot_files(self.driver, snapshot, f"{self.dataset}-verify{next(_clones)}")

    def snapshot_sha(self, snapshot: str, key: int) -> str:
        with self.snapshot_files(snapshot) as files:
            return sha256(files / f"disk-{key}.raw")

    def clear_faults(self) -> None:
        for fault in self.control.faults():
            self.control.clear_fault(fault["name"])


@contextlib.contextmanager
def snapshot_files(driver: CliZfsDriver, snapshot: str, clone: str) -> Iterator[Path]:
    """A ZFS snapshot's files, through a temporary clone named `clone` (zfs-fuse has no `.zfs/snapshot`)."""
    driver.clone(snapshot, clone)
    try:
        mountpoint = Path(run(["zfs", "get", "-H", "-o", "value", "mountpoint", clone]).stdout.strip())
        deadline = time.monotonic() + 10
        while not any(mountpoint.glob("disk-*.raw")) and time.monotonic() < deadline:
            time.sleep(0.1)  # zfs-fuse mounts asynchronously
        yield mountpoint
    finally:
        for _ in range(20):
            try:
                driver.destroy_dataset(clone)
                break
            except ZfsError:
                time.sleep(0.5)


def _interruptible() -> None:
    """In the child: Ctrl-C (SIGINT) acts as on a terminal even when this test run inherited it ignored,
    as a run started in the background by a non-interactive shell does (and Python then keeps it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def data_extents(path: Path) -> list[tuple[int, int]]:
    extents = []
    with path.open("rb") as handle:
        fd, size, position = handle.fileno(), os.fstat(handle.fileno()).st_size, 0
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            extents.append((start, end - start))
            position = end
    return extents


def stored_beyond_source(image: Path, source: Path, record: int = 128 * 1024) -> int:
    """Bytes the image allocates beyond what the source allocates (zfs-fuse answers no SEEK_HOLE, so count
    blocks). ZFS allocates whole records: each source extent may cost up to one record more at each end.
    Zero (or less) when every hole of the source stayed a hole in the image."""
    extents = data_extents(source)
    allowance = sum(length for _, length in extents) + 2 * record * len(extents)
    return max(0, image.stat().st_blocks * 512 - allowance)


def make_world(lab: Lab, root: Path, name: str, vms: tuple[str, ...], **kwargs: Any) -> World:
    pool = lab.require_state().pool
    assert pool is not None
    dataset = f"{pool.name}/{name}"
    with contextlib.suppress(ZfsError):
        CliZfsDriver().destroy_dataset(dataset, recursive=True)
    return World(lab, root, dataset, vms, **kwargs)
