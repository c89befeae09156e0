"""observe -> plan (pure) -> apply -> journal for a Replication, against the real sshd and target pool."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest

from reconciler.adapters.journal.base import EventStatus
from reconciler.adapters.journal.sqlite import SqliteJournal
from reconciler.adapters.replication.observe import observe_source, observe_target
from reconciler.adapters.zfs.cli import CliZfsDriver
from reconciler.apply.replication import apply_replica_change
from reconciler.core.diagnostics import Code
from reconciler.core.replication import ReplicaAction, plan_replication
from reconciler.lab.sshd import Sshd
from reconciler.lab.zfs import ZfsFusePool
from reconciler.policy.model import Replication, Retention, Schedule, ScheduleRule, SshTarget, Weekday
from tests.integration.test_replication_ssh import _backup

pytestmark = pytest.mark.timeout(180)
UUID = "4210aaaa-0000-0000-0000-0000000000ab"
EVERY_MINUTE = Schedule("often", rules=(ScheduleRule(frozenset(Weekday), dt.timedelta(minutes=1)),))
KEEP_2 = Retention("keep-2", keep_last=2)
RUN = "20261204T220000Z-0000ab"


def _plan(replication: Replication, repo: str, now: dt.datetime):  # type: ignore[no-untyped-def]
    return plan_replication(replication, EVERY_MINUTE, KEEP_2, observe_source(repo), observe_target(replication), now)


def test_a_replication_converges_in_one_apply_and_the_target_retention_prunes_there(
        sshd: Sshd, zpool: ZfsFusePool, target_pool: ZfsFusePool, tmp_path: Path) -> None:
    driver = CliZfsDriver()
    repo, vault = f"{zpool.name}/loop-repo", f"{target_pool.name}/loop-vault"
    driver.create_dataset(repo)
    driver.create_dataset(vault)
    driver.create_dataset(f"{repo}/{UUID}", {"reconciler:managed": "true", "reconciler:vm-name": "web-01"})
    mountpoint = str(zpool.mountpoint / "loop-repo" / UUID)
    snaps = [_backup(f"{repo}/{UUID}", mountpoint, i) for i in range(3)]
    replication = Replication("offsite", "tank", SshTarget(sshd.user, "127.0.0.1", sshd.port, vault),
                              sshd.host_public_key, str(sshd.client_key), "often", "keep-2")
    now = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    changes, diagnostics = _plan(replication, repo, now)
    assert diagnostics == ()
    assert [c.describe() for c in changes] == ["> replicate web-01: 3 snapshots (full)"]
    with SqliteJournal(tmp_path / "journal.sqlite") as journal:
        journal.start_run(RUN, "apply")
        for change in changes:
            apply_replica_change(change, replication, repo, journal, RUN)
        # target retention keep-2: one prune there, never the held common base
        changes, _ = _plan(replication, repo, now)
        assert [(c.action, c.snapshots) for c in changes] == [(ReplicaAction.PRUNE_REPLICA, (snaps[0],))]
        apply_replica_change(changes[0], replication, repo, journal, RUN)
        assert _plan(replication, repo, now) == ((), ())  # converged
        statuses = [(e.action, e.status) for e in journal.events(RUN)]
    assert statuses == [("replicate", EventStatus.STARTED), ("replicate", EventStatus.SUCCEEDED),
                        ("prune-replica", EventStatus.STARTED), ("prune-replica", EventStatus.SUCCEEDED)]
    listed = subprocess.run(["zfs", "list", "-H", "-r", "-t", "snapshot", "-o", "name", vault],
                            capture_output=True, text=True, check=True).stdout.split()
    assert listed == [f"{vault}/{UUID}@{n}" for n in snaps[1:]]


def test_a_target_behind_a_wrong_host_key_is_a_plan_diagnostic(sshd: Sshd, zpool: ZfsFusePool,
                                                               tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    other = " ".join((tmp_path / "k.pub").read_text().split()[:2])
    replication = Replication("offsite", "tank", SshTarget(sshd.user, "127.0.0.1", sshd.port, "x/y"),
                              other, str(sshd.client_key), "often", "keep-2")
    target = observe_target(replication)
    assert not target.reachable
    changes, diagnostics = plan_replication(replication, EVERY_MINUTE, KEEP_2, [], target, dt.datetime.now(dt.UTC))
    assert changes == () and [d.code for d in diagnostics] == [Code.REPLICA_HOST_KEY_MISMATCH]
