"""`reconciler status --check` as a monitoring system runs it: a plugin-style summary line first, then one
line per VM; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN from each VM's freshness against its schedule;
a newest backup that failed verification is CRITICAL; the table and JSON show the verification."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.adapters.zfs.backups import BackupRepository, backup_properties
from reconciler.adapters.zfs.cli import CliZfsDriver
from reconciler.restore.locate import VERIFIED, VERIFY_RESULT

pytestmark = pytest.mark.lab  # a real zfs-fuse pool; no vSphere call is made

RECONCILER = str(Path(sys.executable).with_name("reconciler"))
POLICIES = """\
apiVersion: reconciler/v1
kind: Connection
metadata: {{name: vc}}
spec: {{address: https://127.0.0.1:1/sdk, user: user, passwordFrom: {{env: STATUS_TEST_PASSWORD}}, insecure: true}}
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
spec: {{keepLast: 3}}
---
apiVersion: reconciler/v1
kind: ProtectionPolicy
metadata: {{name: gold}}
spec:
  connection: vc
  repository: pool
  schedule: hourly
  retention: short
  select:
    names: [web-01, db-01, app-01]
"""
NOW = dt.datetime.now(dt.UTC)


class Repo:
    """A repository with backups made `ago` before now, as the pipeline records them."""

    def __init__(self, zfs_dataset: str, root: Path) -> None:
        self.parent = f"{zfs_dataset}/repo"
        self.repo = BackupRepository(CliZfsDriver(), self.parent)
        self.policies = root / "policies.yaml"
        self.policies.write_text(POLICIES.format(dataset=self.parent))
        self.state_dir = root / "state"
        self.runs = self.vms = 0

    def vm(self, name: str, *ages: dt.timedelta) -> str:
        self.vms += 1
        dataset = self.repo.pair(f"50000000-0000-4000-8000-{self.vms:012d}", name, f"vm-{self.vms}", "vc", "gold")
        snapshot = ""
        for age in ages:
            self.runs += 1
            at = NOW - age
            run_id = at.strftime("%Y%m%dT%H%M%SZ") + f"-{self.runs:06x}"
            props = backup_properties("full", at.isoformat(timespec="seconds").replace("+00:00", "Z"),
                                      [{"key": 2000, "changeId": "52 1/1", "capacity": 1024}], 1024, 0)
            snapshot = self.repo.complete_backup(dataset, run_id, props)
        return snapshot

    def status(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([RECONCILER, "status", str(self.policies), "--state-dir", str(self.state_dir), *args],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "STATUS_TEST_PASSWORD": "x", "COLUMNS": "200"})


@pytest.fixture
def repo(zfs_dataset: str, tmp_path: Path) -> Repo:
    return Repo(zfs_dataset, tmp_path)


MINUTES = dt.timedelta(minutes=10)
DAYS = dt.timedelta(days=3)


def test_every_vm_on_time_is_ok_with_a_one_line_summary_first(repo: Repo) -> None:
    repo.vm("web-01", 2 * DAYS, MINUTES)
    repo.vm("db-01", MINUTES)
    done = repo.status("--check")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "OK - 2 VMs backed up on time"
    assert [line.split(" - ")[0] for line in lines[1:]] == ["OK: db-01", "OK: web-01"]


def test_a_backup_three_days_old_on_an_hourly_schedule_is_critical_and_named(repo: Repo) -> None:
    repo.vm("web-01", MINUTES)
    repo.vm("db-01", DAYS)
    done = repo.status("--check")
    assert done.returncode == 2, done.stdout + done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("CRITICAL - db-01 last backup 3.0 d ago (due every 1h)"), first
    assert "CRITICAL: db-01" in done.stdout and "OK: web-01" in done.stdout


def test_a_vm_without_a_backup_yet_is_a_warning(repo: Repo) -> None:
    repo.vm("web-01", MINUTES)
    repo.vm("app-01")
    done = repo.status("--check")
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == "WARNING - app-01 has no complete backup yet"


def test_thresholds_are_options(repo: Repo) -> None:
    repo.vm("db-01", dt.timedelta(hours=2))  # 2 intervals: WARNING by default
    assert repo.status("--check").returncode == 1
    assert repo.status("--check", "--warning", "2.5", "--critical", "4").returncode == 0
    bad = repo.status("--check", "--warning", "5", "--critical", "2")
    assert bad.returncode == 2 and "warning ≤ critical" in bad.stderr and "Traceback" not in bad.stderr


def test_a_newest_backup_that_failed_verification_is_critical_and_shown_in_the_table(repo: Repo) -> None:
    snapshot = repo.vm("db-01", MINUTES)
    CliZfsDriver().set_properties(snapshot, {VERIFIED: "2026-11-30T02:00:00Z",
                                             VERIFY_RESULT: "failed: disk 2000 checksum: the backup is corrupt"})
    done = repo.status("--check")
    assert done.returncode == 2
    assert done.stdout.splitlines()[0].startswith("CRITICAL - db-01 last backup failed verification (disk 2000")
    table = repo.status()
    assert table.returncode == 0 and "verified" in table.stdout and "failed" in table.stdout
    (row,) = json.loads(repo.status("--json").stdout)
    assert row["verify_result"].startswith("failed:") and row["freshness"] == "CRITICAL"


def test_a_verified_backup_shows_ok_in_the_verified_column(repo: Repo) -> None:
    snapshot = repo.vm("db-01", MINUTES)
    CliZfsDriver().set_properties(snapshot, {VERIFIED: "2026-11-30T02:00:00Z", VERIFY_RESULT: "ok"})
    (row,) = json.loads(repo.status("--json").stdout)
    assert (row["verify_result"], row["verified"], row["freshness"]) == ("ok", "2026-11-30T02:00:00Z", "OK")
    assert "ok 2026-11-30 02:00Z" in repo.status().stdout


def test_nothing_protected_yet_is_unknown(repo: Repo) -> None:
    done = repo.status("--check")
    assert done.returncode == 3 and done.stdout.startswith("UNKNOWN - no protected VMs")


def test_invalid_policy_files_are_unknown_not_a_traceback(repo: Repo) -> None:
    repo.policies.write_text(repo.policies.read_text().replace("every: 1h", "every: often"))
    done = repo.status("--check")
    assert done.returncode == 3 and "UNKNOWN - " in done.stdout and "Traceback" not in done.stderr
