"""Prove a backup restorable: recorded per-disk digests match the images, partition tables parse, and
(deep) the file systems of `backup`-verdict volumes mount read-only and list their root. The outcome is
recorded on the snapshot itself (`reconciler:verified`, `reconciler:verify-result`), where `backups` and
`status` read it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from reconciler.adapters.checksum import ChecksumError, digest_matches
from reconciler.adapters.inspect import InspectError, analyse, inspect_image
from reconciler.adapters.zfs import ZfsDriver, ZfsError
from reconciler.core.volumes import NO_EXCLUSIONS, Filesystem, Verdict
from reconciler.policy.model import Exclusions
from reconciler.restore.clone import BackupClone, DiskImage
from reconciler.restore.locate import VERIFIED, VERIFY_RESULT, Backup, RestoreError, read_backups

# what a read-only mount can prove; swap, LVM PVs, BitLocker and ReFS hold no file tree libguestfs reads
MOUNTABLE = frozenset({Filesystem.NTFS, Filesystem.FAT12, Filesystem.FAT16, Filesystem.FAT32, Filesystem.EXFAT,
                       Filesystem.EXT2, Filesystem.EXT3, Filesystem.EXT4, Filesystem.XFS, Filesystem.BTRFS})
MAX_RESULT_CHARS = 1000  # the property stays short: the full report is what the command prints


class Outcome(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Check:
    disk: int  # the disk's key (-1: the backup as a whole)
    what: str  # checksum, partitions, filesystem <device>
    outcome: Outcome
    detail: str


@dataclass(frozen=True)
class VerifyReport:
    snapshot: str
    checks: tuple[Check, ...]
    verified_at: str

    @property
    def ok(self) -> bool:
        return all(c.outcome is not Outcome.FAILED for c in self.checks)

    @property
    def result(self) -> str:
        """The `reconciler:verify-result` value: `ok` or `failed: <what failed>`."""
        if self.ok:
            return "ok"
        failures = "; ".join(f"disk {c.disk} {c.what}: {c.detail}" for c in self.checks if c.outcome is Outcome.FAILED)
        text = f"failed: {failures}".replace("\t", " ").replace("\n", " ")
        return text if len(text) <= MAX_RESULT_CHARS else text[: MAX_RESULT_CHARS - 1] + "…"


def check_digest(image: DiskImage) -> Check:
    if not image.recorded_sha256:
        return Check(image.key, "checksum", Outcome.SKIPPED, "no digest was recorded at backup time")
    try:
        matches, actual = digest_matches(image.recorded_sha256, image.path)
    except ChecksumError as exc:
        return Check(image.key, "checksum", Outcome.FAILED, str(exc))
    if matches:
        return Check(image.key, "checksum", Outcome.OK, actual)
    return Check(image.key, "checksum", Outcome.FAILED,
                 f"image digest {actual} differs from the recorded {image.recorded_sha256}: the backup is corrupt")


# a deep check: (disk index in `images`, guestfs device) -> root listing, raising RestoreError
RootLister = Callable[[str], list[str]]


def check_images(images: Sequence[DiskImage], deep: RootLister | None = None,
                 exclusions: Exclusions = NO_EXCLUSIONS) -> list[Check]:
    """Every check on the images of one backup (pure reader + digest; deep via `deep`). `exclusions` are
    the policy's: volumes it excluded were never read (they are holes), so they are not mounted."""
    from reconciler.restore.files import device_name

    checks: list[Check] = []
    layouts = []
    for image in images:
        checks.append(check_digest(image))
        try:
            layout = inspect_image(image.path)
        except InspectError as exc:
            checks.append(Check(image.key, "partitions", Outcome.FAILED, str(exc)))
            layouts.append(None)
            continue
        detail = f"{layout.table}, {len(layout.partitions)} partition(s)"
        if layout.warnings:
            detail += "; " + "; ".join(layout.warnings)
        checks.append(Check(image.key, "partitions", Outcome.OK, detail))
        layouts.append(layout)
    if deep is None:
        return checks
    parsed = [(i, layout) for i, layout in enumerate(layouts) if layout is not None]
    reports = analyse([layout for _, layout in parsed], exclusions)
    for (index, layout), report in zip(parsed, reports, strict=True):
        for row in report.partitions:
            if row.verdict.verdict is not Verdict.BACKUP or row.partition.filesystem not in MOUNTABLE:
                continue
            whole = len(layout.partitions) == 1 and str(layout.table) == "none"
            device = device_name(index, None if whole else row.partition.index)
            what = f"filesystem {device} ({row.partition.filesystem})"
            try:
                names = deep(device)
                checks.append(Check(images[index].key, what, Outcome.OK, f"root lists {len(names)} entries"))
            except RestoreError as exc:
                checks.append(Check(images[index].key, what, Outcome.FAILED, str(exc)))
    return checks


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def record(driver: ZfsDriver, report: VerifyReport) -> None:
    try:
        driver.set_properties(report.snapshot, {VERIFIED: report.verified_at, VERIFY_RESULT: report.result})
    except ZfsError as exc:
        raise RestoreError(f"verified, but could not record the result on {report.snapshot}: {exc}") from None


def verify_backup(driver: ZfsDriver, backup: Backup, *, deep: bool = False, keep_clone: bool = False,
                  record_result: bool = True, exclusions: Exclusions = NO_EXCLUSIONS) -> VerifyReport:
    """Verify one backup on a clone of its snapshot; records the result on the snapshot."""
    with BackupClone(driver, backup, keep=keep_clone) as clone:
        try:
            images = clone.images()
        except RestoreError as exc:  # a recorded disk without its image: the backup is broken, record it
            report = VerifyReport(backup.record.name, (Check(-1, "images", Outcome.FAILED, str(exc)),), now_iso())
            if record_result:
                record(driver, report)
            return report
        if deep:
            from reconciler.restore.files import GuestDisks

            with GuestDisks([image.path for image in images]) as guest:
                checks = check_images(images, guest.root_listing, exclusions)
        else:
            checks = check_images(images)
    report = VerifyReport(backup.record.name, tuple(checks), now_iso())
    if record_result:
        record(driver, report)
    return report


def verify_after_backup(driver: ZfsDriver, dataset: str, run_id: str, *, deep: bool = False,
                        exclusions: Exclusions = NO_EXCLUSIONS) -> VerifyReport:
    """For the backup pipeline (`verify: after-backup`): verify the backup `run_id` just completed in
    `dataset` and record the result. Raises RestoreError when the backup cannot be found."""
    for backup in read_backups(driver, dataset):
        if backup.record.run_id == run_id and backup.record.complete:
            return verify_backup(driver, backup, deep=deep, exclusions=exclusions)
    raise RestoreError(f"no complete backup {run_id} in {dataset} to verify")
