"""Thin backups end to end (`skipFreeBlocks: true`): `reconciler apply` on a lab VM whose disk holds a real
ext4 file system (mke2fs -d, then a large file removed with debugfs, its data still on the disk) stores
about the used bytes, not the disk's written bytes; the backup's image passes e2fsck, its files are byte
identical, its free blocks are zeros. An incremental after the guest deletes one file and writes another
(applied as guest writes, so CBT sees them) punches the freed blocks and reads little."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.zfs.backups import read_repository
from reconciler.adapters.zfs.base import ZfsError
from reconciler.adapters.zfs.cli import CliZfsDriver
from reconciler.adapters.zfs.runner import run
from reconciler.lab import inventory as inv
from reconciler.lab.images import PartSpec, build_image
from tests.fixtures.vsphere import VsphereSite, start_site
from tests.integration.backup_world import sha256, snapshot_files

pytestmark = pytest.mark.lab

MiB = 1024 * 1024
GiB = 1024 * MiB
RECONCILER = str(Path(sys.executable).with_name("reconciler"))
PASSWORD_ENV = "RECONCILER_TEST_THIN_PASSWORD"
VM, KEY = "thin-01", 2000
FILES = {"keep.bin": 48 * MiB, "etc/hostname": 9, "home/notes.txt": 70_000, "victim.bin": 24 * MiB,
         "gone.bin": 300 * MiB}


def _content(name: str) -> bytes:
    """Incompressible, reproducible; made 1 MiB at a time (randbytes is limited to 256 MiB)."""
    size = FILES.get(name, 6 * MiB)
    rng = random.Random(name)
    return b"".join(rng.randbytes(min(MiB, size - i)) for i in range(0, size, MiB))


def _debugfs(image: Path, start: int, command: str, write: bool = True) -> str:
    target = f"{image}?offset={start}" if start else str(image)  # e2fsprogs opens a partition inside a disk
    done = subprocess.run(["debugfs", *(["-w"] if write else []), "-R", command, target],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "debugfs:" not in done.stderr.replace("debugfs 1.", ""), done.stderr
    return done.stdout


def _partition(image: Path) -> tuple[int, int]:
    from reconciler.adapters.inspect import inspect_image

    part = inspect_image(image).partitions[0]
    return part.start, part.length


def _extract(image: Path, start: int, length: int, dest: Path) -> Path:
    subprocess.run(["dd", f"if={image}", f"of={dest}", "bs=1M", f"skip={start // MiB}", f"count={length // MiB}",
                    "conv=sparse", "status=none"], check=True)
    return dest


def _free_ranges(fs: Path) -> list[tuple[int, int]]:
    """Free byte ranges of a file system image as dumpe2fs reports them."""
    out = subprocess.run(["dumpe2fs", str(fs)], capture_output=True, text=True, check=True).stdout
    block = int(re.search(r"^Block size:\s+(\d+)", out, re.M).group(1))
    found = []
    for line in re.findall(r"^\s+Free blocks: (.*)$", out, re.M):
        for item in filter(None, (p.strip() for p in line.split(","))):
            first, _, last = item.partition("-")
            found.append((int(first) * block, (int(last or first) - int(first) + 1) * block))
    return found


def _used_bytes(fs: Path) -> int:
    out = subprocess.run(["dumpe2fs", "-h", str(fs)], capture_output=True, text=True, check=True).stdout
    block = int(re.search(r"^Block size:\s+(\d+)", out, re.M).group(1))
    blocks = int(re.search(r"^Block count:\s+(\d+)", out, re.M).group(1))
    free = int(re.search(r"^Free blocks:\s+(\d+)", out, re.M).group(1))
    return (blocks - free) * block


def _zero(path: Path, ranges: list[tuple[int, int]]) -> bool:
    with path.open("rb") as f:
        for offset, length in ranges:
            f.seek(offset)
            while length > 0:
                chunk = f.read(min(length, 8 * MiB))
                if chunk.strip(b"\0"):
                    return False
                length -= len(chunk)
    return True


def _written_extents_bytes(path: Path) -> int:
    return path.stat().st_blocks * 512


def _stored(snapshot: str) -> int:
    """What ZFS stores for a backup (its `referenced`): zfs-fuse's st_blocks go stale after an overwrite."""
    return int(run(["zfs", "get", "-H", "-p", "-o", "value", "referenced", snapshot]).stdout)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VsphereSite]:
    images = tmp_path_factory.mktemp("thin-images")
    disk = images / "thin.raw"
    tree = [(name, _content(name)) for name in FILES]
    build_image(disk, GiB, "gpt", [PartSpec(GiB - 2 * MiB, "ext4", label="root", files=tuple(tree))], seed=14)
    start, _ = _partition(disk)
    _debugfs(disk, start, "rm /gone.bin")  # freed, but its 300 MiB stay on the disk: a plain backup copies them
    inventory = inv.Inventory(
        mode=inv.Mode.VCENTER, hosts=(inv.Host("esx-thin.lab"),),
        vms=(inv.VM(VM, "50030000-0000-4000-8000-0000000f0001", "42030000-0000-4000-8000-0000000f0001",
                    disks=(inv.Disk(KEY, GiB, disk),), host="esx-thin.lab", cbt=True),),
    )
    the_site = start_site(inventory, tmp_path_factory.mktemp("thin-site"))
    try:
        yield the_site
    finally:
        the_site.process.stop()


POLICIES = """\
apiVersion: reconciler/v1
kind: Connection
metadata: {{name: thin}}
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
metadata: {{name: linux}}
spec:
  connection: thin
  repository: pool
  schedule: hourly
  retention: short
  select: {{names: [{vm}]}}
  skipFreeBlocks: {thin}
  verify: after-backup  # the recorded digest must match the image, punched ranges included
"""


class Appliance:
    def __init__(self, site: VsphereSite, dataset: str, root: Path) -> None:
        self.site, self.dataset, self.root = site, dataset, root
        self.clock = dt.datetime.now(dt.UTC)
        self.driver = CliZfsDriver()
        self.write_policies(thin=True)

    def write_policies(self, *, thin: bool) -> None:
        e = self.site.endpoints
        (self.root / "policies").mkdir(exist_ok=True)
        (self.root / "policies" / "lab.yaml").write_text(POLICIES.format(
            address=e.sdk, password_env=PASSWORD_ENV, thumbprint=e.thumbprint_sha256, dataset=self.dataset, vm=VM,
            thin=str(thin).lower()))

    def apply(self) -> list[dict[str, Any]]:
        self.clock += dt.timedelta(hours=2)
        env = {**os.environ, PASSWORD_ENV: self.site.endpoints.password, "RECONCILER_RETRY_BACKOFF": "0.2"}
        done = subprocess.run(
            [RECONCILER, "apply", str(self.root / "policies"), "--state-dir", str(self.root / "state"), "--json",
             "--at", self.clock.isoformat().replace("+00:00", "Z"), "--auto-approve"],
            capture_output=True, text=True, env=env, timeout=300)
        events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        assert done.returncode == 0, done.stderr + "\n".join(map(json.dumps, events))
        return events

    def backups(self) -> list[Any]:
        dataset = f"{self.dataset}/{self.site.endpoints.vm(VM).instance_uuid}"
        return [s for s in read_repository(self.driver, self.dataset).snapshots_of(dataset) if s.complete]

    def source(self) -> Path:
        return Path(self.site.endpoints.vm(VM).disk(KEY).file)

    @contextlib.contextmanager
    def restored(self, snapshot: str, tmp: Path) -> Iterator[tuple[Path, Path]]:
        """(the backup's disk image, its ext4 partition extracted to a file of its own)."""
        with snapshot_files(self.driver, snapshot, f"{self.dataset}-view{len(list(tmp.iterdir()))}") as files:
            image = files / f"disk-{KEY}.raw"
            start, length = _partition(image)
            yield image, _extract(image, start, length, tmp / f"fs-{snapshot.rpartition('@')[2]}.img")


def done_event(events: list[dict[str, Any]]) -> dict[str, Any]:
    found = [e for e in events if e["event"] == "action-done" and e.get("vm") == VM and e.get("action") == "backup"]
    assert found and found[-1]["result"] == "succeeded", events
    return found[-1]


def check_guests_view(fs: Path, tmp: Path, present: dict[str, bytes]) -> None:
    """e2fsck finds nothing to fix, each file is byte-identical, every free block is zeros."""
    fsck = subprocess.run(["e2fsck", "-f", "-n", str(fs)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    for name, content in present.items():
        out = tmp / "dumped"
        _debugfs(fs, 0, f"dump /{name} {out}", write=False)
        assert out.read_bytes() == content, name
    assert _zero(fs, _free_ranges(fs))


@pytest.fixture(scope="module")
def appliance(site: VsphereSite, zpool, tmp_path_factory: pytest.TempPathFactory) -> Appliance:
    dataset = f"{zpool.name}/thin"
    with contextlib.suppress(ZfsError):
        CliZfsDriver().destroy_dataset(dataset, recursive=True)
    # zfs-fuse cannot punch holes, so freed blocks are overwritten with zeros: zle stores those as holes.
    # Set on the parent, inherited by the VM's dataset (the Repository's `compression` is not applied yet).
    run(["zfs", "create", "-o", "compression=zle", dataset])
    return Appliance(site, dataset, tmp_path_factory.mktemp("thin-appliance"))


@pytest.fixture(scope="module")
def first(appliance: Appliance) -> list[dict[str, Any]]:
    return appliance.apply()


def test_a_thin_full_backup_stores_about_the_used_bytes(appliance: Appliance, first, tmp_path: Path) -> None:
    done = done_event(first)
    assert done["kind"] == "full"
    source = appliance.source()
    start, length = _partition(source)
    used = _used_bytes(_extract(source, start, length, tmp_path / "source-fs.img"))
    assert _written_extents_bytes(source) > used + 250 * MiB  # the deleted file's data is on the disk
    assert done["bytes_read"] <= 1.1 * used
    (backup,) = appliance.backups()
    assert 48 * MiB <= _stored(backup.name) <= 1.1 * used
    with appliance.restored(backup.name, tmp_path) as (_, fs):
        check_guests_view(fs, tmp_path, {n: _content(n) for n in ("keep.bin", "etc/hostname", "home/notes.txt",
                                                                   "victim.bin")})
    notes = [e["message"] for e in first if e["event"] == "note" and e.get("vm") == VM]
    assert any(re.search(r"disk 2000: partition 1 \(root\): [\d.]+ MiB of [\d.]+ MiB allocated, [\d.]+ MiB skipped",
                         n) for n in notes), notes
    thin = json.loads(backup.volumes)["disks"][0]["thin"]
    assert thin[0]["volume"] == "partition 1 (root)" and thin[0]["allocated"] <= 1.1 * used


def _apply_as_guest_writes(appliance: Appliance, modified: Path) -> int:
    """Write every 64 KiB block where `modified` differs from the source through the lab (CBT sees it)."""
    source, block, changed = appliance.source(), 64 * 1024, 0
    with source.open("rb") as a, modified.open("rb") as b:
        offset = 0
        while chunk := b.read(8 * MiB):
            old = a.read(len(chunk))
            for i in range(0, len(chunk), block):
                if chunk[i : i + block] != old[i : i + block]:
                    appliance.site.control.write(VM, KEY, offset + i, data=chunk[i : i + block])
                    changed += block
            offset += len(chunk)
    return changed


def test_an_incremental_punches_blocks_freed_since_and_reads_what_was_written(appliance: Appliance, first,
                                                                               tmp_path: Path) -> None:
    done_event(first)
    copy = tmp_path / "guest.raw"
    subprocess.run(["cp", "--sparse=always", str(appliance.source()), str(copy)], check=True)
    start, _ = _partition(copy)
    new = tmp_path / "new.bin"
    new.write_bytes(_content("new.bin"))
    _debugfs(copy, start, "rm /victim.bin")
    _debugfs(copy, start, f"write {new} new.bin")
    written = _apply_as_guest_writes(appliance, copy)
    assert written < 8 * MiB + 6 * MiB  # metadata and the new file: the deletion writes no data blocks

    done = done_event(appliance.apply())
    assert done["kind"] == "incremental"
    assert done["bytes_read"] <= written
    _, latest = appliance.backups()
    assert _stored(latest.name) <= (48 + 6 + 8) * MiB  # victim.bin's 24 MiB are no longer stored
    with appliance.restored(latest.name, tmp_path) as (_, fs):
        check_guests_view(fs, tmp_path, {"keep.bin": _content("keep.bin"), "new.bin": _content("new.bin"),
                                         "home/notes.txt": _content("home/notes.txt")})


def test_turning_thin_backups_off_reads_the_disk_in_full_into_a_byte_for_byte_copy(appliance: Appliance, first,
                                                                                  tmp_path: Path) -> None:
    done_event(first)
    appliance.write_policies(thin=False)
    try:
        events = appliance.apply()
    finally:
        appliance.write_policies(thin=True)
    done = done_event(events)
    notes = [e["message"] for e in events if e["event"] == "note" and e.get("vm") == VM]
    assert any("skipFreeBlocks is off now" in n for n in notes), notes
    assert done["kind"] == "full"  # CBT alone would never bring back the free blocks' old bytes
    latest = appliance.backups()[-1]
    with snapshot_files(appliance.driver, latest.name, f"{appliance.dataset}-plain") as files:
        assert sha256(files / f"disk-{KEY}.raw") == sha256(appliance.source())
