"""Volume exclusions end to end: `reconciler apply` on a lab whose disks hold real partition tables and file
systems leaves excluded and unsupported volumes unread (holes in the image), copies everything else byte
for byte, records what it found on the ZFS snapshot, and the next `reconciler plan --json` shows it.

The lab: `files-01` (NTFS + ReFS, policy excludes ReFS), `dyn-01` (a lone dynamic disk, policy excludes
dynamic disks), `span-01` (two dynamic disks of one LDM group, policy excludes nothing: unsupported)."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.inspect import DeepFacts, inspect_image
from reconciler.adapters.zfs.backups import read_repository
from reconciler.adapters.zfs.base import ZfsError
from reconciler.adapters.zfs.cli import CliZfsDriver
from reconciler.apply.inspection import decode, decode_deep
from reconciler.lab import inventory as inv
from reconciler.lab.images import build_lab_disk
from tests.fixtures.vsphere import VsphereSite, start_site
from tests.integration.backup_world import snapshot_files

pytestmark = pytest.mark.lab

MiB = 1024 * 1024
GiB = 1024 * MiB
RECONCILER = str(Path(sys.executable).with_name("reconciler"))
PASSWORD_ENV = "RECONCILER_TEST_EXCLUSIONS_PASSWORD"
FILES, DYN, SPAN, RDS, ODD = "files-01", "dyn-01", "span-01", "rds-01", "odd-01"
# (partition start, length) of the lab layouts on a 1 GiB disk, from `reconciler.lab.images`
REFS = (597688320, 475004928)
NTFS = (122683392, 475004928)
LDM_DATA = (18874368, 1053818880)
MSR = (2097152, 16777216)
_clones = itertools.count()


def _uuid(n: int) -> str:
    return f"50030000-0000-4000-8000-0000000e{n:04x}"


def _vm(name: str, n: int, disks: tuple[inv.Disk, ...]) -> inv.VM:
    return inv.VM(name, _uuid(n), _uuid(n).replace("5003", "4203", 1), disks=disks, host="esx-excl.lab", cbt=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VsphereSite]:
    images = tmp_path_factory.mktemp("exclusion-images")
    build_lab_disk(images / "files.raw", "windows-ntfs-refs", GiB)
    build_lab_disk(images / "dyn.raw", "windows-dynamic", GiB)
    build_lab_disk(images / "span-a.raw", "windows-dynamic", GiB)
    build_lab_disk(images / "rds.raw", "rds-upd", GiB)
    with (images / "odd.raw").open("wb") as odd:  # garbage where a partition table should be
        odd.write(random.Random(7).randbytes(MiB))
        odd.truncate(GiB)
    # a second disk of the same LDM disk group: a copy (its GUIDs repeat too)
    subprocess.run(["cp", "--sparse=always", images / "span-a.raw", images / "span-b.raw"], check=True)
    inventory = inv.Inventory(
        mode=inv.Mode.VCENTER,
        hosts=(inv.Host("esx-excl.lab"),),
        vms=(
            _vm(FILES, 1, (inv.Disk(2000, GiB, images / "files.raw"),)),
            _vm(DYN, 2, (inv.Disk(2000, GiB, images / "dyn.raw"),)),
            _vm(SPAN, 3, (inv.Disk(2000, GiB, images / "span-a.raw"), inv.Disk(2001, GiB, images / "span-b.raw"))),
            _vm(RDS, 4, (inv.Disk(2000, GiB, images / "rds.raw"),)),
            _vm(ODD, 5, (inv.Disk(2000, GiB, images / "odd.raw"),)),
        ),
    )
    the_site = start_site(inventory, tmp_path_factory.mktemp("exclusion-site"))
    try:
        yield the_site
    finally:
        the_site.process.stop()


POLICIES = """\
apiVersion: reconciler/v1
kind: Connection
metadata: {{name: excl}}
spec:
  address: {address}
  user: user
  passwordFrom: {{env: {password_env}}}
  thumbprint: "{thumbprint}"
---
apiVersion: reconciler/v1
kind: Repository
metadata: {{name: pool}}
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
spec: {{keepLast: 5}}
---
apiVersion: reconciler/v1
kind: ProtectionPolicy
metadata: {{name: windows}}
spec:
  connection: excl
  repository: pool
  schedule: hourly
  retention: short
  select: {{names: [{files}, {dyn}]}}
  exclusions: {{refs: {refs}, dynamicDisk: true}}
---
apiVersion: reconciler/v1
kind: ProtectionPolicy
metadata: {{name: everything}}
spec:
  connection: excl
  repository: pool
  schedule: hourly
  retention: short
  select: {{names: [{span}, {odd}]}}
"""

# only in the guestfs tests: User Profile Disks are found by deep inspection of the backup image
RDS_POLICY = """\
---
apiVersion: reconciler/v1
kind: ProtectionPolicy
metadata: {{name: rds}}
spec:
  connection: excl
  repository: pool
  schedule: hourly
  retention: short
  select: {{names: [{rds}]}}
  exclusions: {{upd: true}}
"""


class Appliance:
    """The policies, state and clock of one appliance protecting the exclusion lab."""

    def __init__(self, site: VsphereSite, dataset: str, root: Path) -> None:
        self.site, self.dataset, self.root = site, dataset, root
        self.clock = dt.datetime.now(dt.UTC)
        self.driver = CliZfsDriver()
        self.write_policies(refs=True)

    def write_policies(self, *, refs: bool, rds: bool = False) -> None:
        e = self.site.endpoints
        (self.root / "policies").mkdir(exist_ok=True)
        text = POLICIES.format(
            address=e.sdk, password_env=PASSWORD_ENV, thumbprint=e.thumbprint_sha256, dataset=self.dataset,
            files=FILES, dyn=DYN, span=SPAN, odd=ODD, refs=str(refs).lower())
        (self.root / "policies" / "lab.yaml").write_text(text + (RDS_POLICY.format(rds=RDS) if rds else ""))

    def _run(self, command: str, *args: str, at: dt.datetime) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, PASSWORD_ENV: self.site.endpoints.password, "RECONCILER_RETRY_BACKOFF": "0.2"}
        return subprocess.run(
            [RECONCILER, command, str(self.root / "policies"), "--state-dir", str(self.root / "state"), "--json",
             "--at", at.isoformat().replace("+00:00", "Z"), *args],
            capture_output=True, text=True, env=env, timeout=300)

    def apply(self, *args: str) -> list[dict[str, Any]]:
        self.clock += dt.timedelta(hours=2)  # an hourly backup is always due
        done = self._run("apply", "--auto-approve", *args, at=self.clock)
        events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        assert done.returncode == 0, done.stderr + "\n".join(map(json.dumps, events))
        return events

    def plan(self) -> dict[str, Any]:
        done = self._run("plan", at=self.clock + dt.timedelta(minutes=1))
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def backups(self, vm: str) -> list[Any]:
        dataset = f"{self.dataset}/{self.site.endpoints.vm(vm).instance_uuid}"
        return [s for s in read_repository(self.driver, self.dataset).snapshots_of(dataset) if s.complete]

    def snapshot_files(self, snapshot: str) -> contextlib.AbstractContextManager[Path]:
        """A ZFS snapshot's files, through a temporary clone."""
        return snapshot_files(self.driver, snapshot, f"{self.dataset}-view{next(_clones)}")

    def source(self, vm: str, key: int) -> Path:
        return Path(self.site.endpoints.vm(vm).disk(key).file)


def done_events(events: list[dict[str, Any]], vm: str) -> dict[str, Any]:
    found = [e for e in events if e["event"] == "action-done" and e.get("vm") == vm and e.get("action") == "backup"]
    assert found and found[-1]["result"] == "succeeded", events
    return found[-1]


def read(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(length)


def equal_outside(image: Path, source: Path, holes: list[tuple[int, int]]) -> bool:
    """The image equals the source everywhere except inside `holes`, which are all zero in the image."""
    size = source.stat().st_size
    cuts = sorted(holes)
    position = 0
    with image.open("rb") as a, source.open("rb") as b:
        for start, length in [*cuts, (size, 0)]:
            a.seek(position)
            b.seek(position)
            remaining = start - position
            while remaining > 0:
                n = min(remaining, 8 * MiB)
                if a.read(n) != b.read(n):
                    return False
                remaining -= n
            if length:
                a.seek(start)
                left = length
                while left > 0:
                    n = min(left, 8 * MiB)
                    if a.read(n).strip(b"\0"):
                        return False
                    left -= n
            position = start + length
    return image.stat().st_size == size


@pytest.fixture(scope="module")
def appliance(site: VsphereSite, zpool, tmp_path_factory: pytest.TempPathFactory) -> Appliance:
    dataset = f"{zpool.name}/exclusions"
    with contextlib.suppress(ZfsError):
        CliZfsDriver().destroy_dataset(dataset, recursive=True)
    # data inside the volumes that must not be read, and inside the one that must
    site.control.write(FILES, 2000, REFS[0] + 8 * MiB, length=2 * MiB, pattern="random", seed=1)
    site.control.write(FILES, 2000, NTFS[0] + 64 * MiB, length=MiB, pattern="random", seed=2)
    site.control.write(DYN, 2000, LDM_DATA[0] + 8 * MiB, length=2 * MiB, pattern="random", seed=3)
    site.control.write(SPAN, 2001, LDM_DATA[0] + 8 * MiB, length=2 * MiB, pattern="random", seed=4)
    return Appliance(site, dataset, tmp_path_factory.mktemp("exclusion-appliance"))


@pytest.fixture(scope="module")
def first(appliance: Appliance) -> list[dict[str, Any]]:
    return appliance.apply()


def test_full_backup_leaves_the_excluded_refs_volume_unread(appliance: Appliance, first) -> None:
    done = done_events(first, FILES)
    assert done["kind"] == "full"
    (backup,) = appliance.backups(FILES)
    with appliance.snapshot_files(backup.name) as files:
        image = files / "disk-2000.raw"
        assert read(image, REFS[0] + 8 * MiB, 2 * MiB) == bytes(2 * MiB)
        assert equal_outside(image, appliance.source(FILES, 2000), [REFS])
        # the ReFS volume's 2 MiB of data were neither read nor written
        source_allocated = appliance.source(FILES, 2000).stat().st_blocks * 512
        assert image.stat().st_blocks * 512 <= source_allocated - MiB
    assert done["bytes_read"] < source_allocated - MiB  # CBT rounds the areas it reports up to its blocks


def test_full_backup_keeps_partition_tables_and_the_ntfs_bytes(appliance: Appliance, first) -> None:
    (backup,) = appliance.backups(FILES)
    source = appliance.source(FILES, 2000)
    with appliance.snapshot_files(backup.name) as files:
        image = files / "disk-2000.raw"
        assert read(image, 0, 34 * 512) == read(source, 0, 34 * 512)  # protective MBR + primary GPT
        assert read(image, GiB - 33 * 512, 33 * 512) == read(source, GiB - 33 * 512, 33 * 512)  # backup GPT
        assert read(image, NTFS[0], NTFS[1]) == read(source, NTFS[0], NTFS[1])


def test_an_excluded_lone_dynamic_disk_keeps_its_gpt_and_ldm_database(appliance: Appliance, first) -> None:
    assert done_events(first, DYN)["kind"] == "full"
    (backup,) = appliance.backups(DYN)
    with appliance.snapshot_files(backup.name) as files:
        assert equal_outside(files / "disk-2000.raw", appliance.source(DYN, 2000), [LDM_DATA])


def test_spanned_dynamic_disks_are_unsupported_without_any_exclusion(appliance: Appliance, first) -> None:
    (backup,) = appliance.backups(SPAN)
    with appliance.snapshot_files(backup.name) as files:
        assert equal_outside(files / "disk-2000.raw", appliance.source(SPAN, 2000), [LDM_DATA])
        # the second disk is a copy: its MSR's GUID repeats, so that is not read either (its LDM metadata
        # partition is the LDM database, always read)
        assert equal_outside(files / "disk-2001.raw", appliance.source(SPAN, 2001), [MSR, LDM_DATA])


def test_the_snapshot_records_what_was_left_unread(appliance: Appliance, first) -> None:
    (backup,) = appliance.backups(FILES)
    (disk,) = decode(backup.volumes)
    assert disk.key == 2000
    assert [(f.volume, f.excluded, f.reason) for f in disk.findings] == [("partition 4 (Data)", True, "refs")]
    assert json.loads(backup.volumes)["disks"][0]["skipped"] == REFS[1]


def test_a_disk_that_cannot_be_inspected_is_backed_up_whole_with_a_warning(appliance: Appliance, first) -> None:
    assert done_events(first, ODD)["kind"] == "full"
    notes = [e["message"] for e in first if e["event"] == "note" and e.get("vm") == ODD]
    assert notes == ["volume inspection: disk 2000: no recognised partition table or file system at LBA 0"]
    (backup,) = appliance.backups(ODD)
    with appliance.snapshot_files(backup.name) as files:
        assert equal_outside(files / "disk-2000.raw", appliance.source(ODD, 2000), [])


def diagnostics(plan: dict[str, Any], vm: str) -> set[tuple[str, int, str]]:
    return {(d["code"], d["disk"], d["message"].rpartition(": ")[2]) for d in plan["diagnostics"]
            if d.get("vm", {}).get("name") == vm and d["code"] in ("excluded-volume", "unsupported-volume")}


def test_the_next_plan_shows_excluded_and_unsupported_volumes_per_disk(appliance: Appliance, first) -> None:
    plan = appliance.plan()
    assert diagnostics(plan, FILES) == {("excluded-volume", 2000, "refs")}
    assert diagnostics(plan, DYN) == {("excluded-volume", 2000, "dynamic-disk")}
    span = diagnostics(plan, SPAN)
    assert ("unsupported-volume", 2000, "spanned") in span and ("unsupported-volume", 2001, "spanned") in span
    assert {code for code, _, _ in span} == {"unsupported-volume"}
    message = next(d["message"] for d in plan["diagnostics"] if d["code"] == "excluded-volume"
                   and d["vm"]["name"] == FILES)
    assert "disk 2000" in message and "partition 4" in message


@pytest.fixture(scope="module")
def incremental(appliance: Appliance, first) -> list[dict[str, Any]]:
    appliance.site.control.write(FILES, 2000, REFS[0] + 16 * MiB, length=MiB, pattern="random", seed=5)
    appliance.site.control.write(FILES, 2000, NTFS[0] + 96 * MiB, length=MiB, pattern="random", seed=6)
    return appliance.apply()


def test_an_incremental_does_not_read_changes_inside_an_excluded_volume(appliance: Appliance, incremental) -> None:
    done = done_events(incremental, FILES)
    assert done["kind"] == "incremental"
    assert MiB <= done["bytes_read"] <= MiB + 128 * 1024  # the NTFS change only
    latest = appliance.backups(FILES)[-1]
    with appliance.snapshot_files(latest.name) as files:
        assert equal_outside(files / "disk-2000.raw", appliance.source(FILES, 2000), [REFS])


@pytest.fixture(scope="module")
def refs_included(appliance: Appliance, incremental) -> list[dict[str, Any]]:
    appliance.write_policies(refs=False)
    try:
        return appliance.apply()
    finally:
        appliance.write_policies(refs=True)


def test_a_volume_no_longer_excluded_makes_its_disk_read_in_full(appliance: Appliance, refs_included) -> None:
    done = done_events(refs_included, FILES)
    assert done["kind"] == "full"
    notes = [e["message"] for e in refs_included if e["event"] == "note" and e.get("vm") == FILES]
    assert any("excluded volumes changed" in n for n in notes), notes
    latest = appliance.backups(FILES)[-1]
    assert decode(latest.volumes)[0].findings == ()
    with appliance.snapshot_files(latest.name) as files:
        assert equal_outside(files / "disk-2000.raw", appliance.source(FILES, 2000), [])
    assert done_events(refs_included, DYN)["kind"] == "incremental"  # its holes did not change



# ---- deep inspection (libguestfs) of the backup image: User Profile Disks --------------------------------
@pytest.fixture(scope="module")
def upd_backups(appliance: Appliance, refs_included) -> tuple[list[dict[str, Any]], dict[str, Any], list[Any]]:
    pytest.importorskip("guestfs", reason="python3-guestfs is not installed")
    appliance.write_policies(refs=True, rds=True)
    first_run = appliance.apply("--target", RDS)
    plan = appliance.plan()
    second_run = appliance.apply("--target", RDS)
    return [*first_run, *second_run], plan, appliance.backups(RDS)


def upd_volume(appliance: Appliance) -> tuple[int, int]:
    (part,) = inspect_image(appliance.source(RDS, 2000)).partitions
    return part.start, part.length


@pytest.mark.guestfs
def test_deep_inspection_of_the_first_full_backup_finds_the_user_profile_disks(appliance: Appliance,
                                                                                upd_backups) -> None:
    _, plan, (first_backup, _) = upd_backups
    assert decode_deep(first_backup.deep) == {2000: {1: DeepFacts(upd=True)}}
    assert diagnostics(plan, RDS) == {("excluded-volume", 2000, "upd")}
    with appliance.snapshot_files(first_backup.name) as files:  # read once, before it was known
        assert equal_outside(files / "disk-2000.raw", appliance.source(RDS, 2000), [])


@pytest.mark.guestfs
def test_the_next_backup_leaves_the_user_profile_disk_volume_unread(appliance: Appliance, upd_backups) -> None:
    events, _, (_, second_backup) = upd_backups
    notes = [e["message"] for e in events if e["event"] == "note" and e.get("vm") == RDS]
    assert any("excluded volumes changed" in n for n in notes), notes
    with appliance.snapshot_files(second_backup.name) as files:
        assert equal_outside(files / "disk-2000.raw", appliance.source(RDS, 2000), [upd_volume(appliance)])
    # the volume is a hole in this image: what deep inspection knew about it is carried over
    assert decode_deep(second_backup.deep) == {2000: {1: DeepFacts(upd=True)}}
