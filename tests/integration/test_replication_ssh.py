"""Replication over a real sshd into a second zfs-fuse pool: full, incremental, holds, refusals."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.adapters.replication.send import hold_tag, replicate_dataset
from reconciler.adapters.replication.ssh import SshEndpoint, SshError, SshFailure, SshSession
from reconciler.adapters.replication.target import list_local, list_remote
from reconciler.adapters.zfs.base import ZfsError
from reconciler.adapters.zfs.cli import CliZfsDriver
from reconciler.lab.sshd import Sshd
from reconciler.lab.zfs import ZfsFusePool

pytestmark = pytest.mark.timeout(180)
_numbers = itertools.count()
NAME = "offsite"


def _endpoint(sshd: Sshd, **changes: object) -> SshEndpoint:
    fields = {"user": sshd.user, "host": "127.0.0.1", "port": sshd.port, "host_key": sshd.host_public_key,
              "identity_file": str(sshd.client_key), "connect_timeout": 5} | changes
    return SshEndpoint(**fields)  # type: ignore[arg-type]


def _backup(dataset: str, mountpoint: str, n: int, size: int = 256 * 1024) -> str:
    """A complete backup as the reconciler makes one: data, snapshot, then reconciler:status=complete."""
    Path(mountpoint, f"disk-{n}.raw").write_bytes(os.urandom(size))
    name = f"reconciler-20261204T2200{n:02d}Z-abc{n:03d}"
    driver = CliZfsDriver()
    driver.snapshot(f"{dataset}@{name}", {"reconciler:managed": "true", "reconciler:run-id": name[11:]})
    driver.set_properties(f"{dataset}@{name}", {"reconciler:status": "complete"})
    return name


@pytest.fixture
def pair(zpool: ZfsFusePool, target_pool: ZfsFusePool) -> Iterator[tuple[str, str, str]]:
    n = next(_numbers)
    source, target_parent = f"{zpool.name}/repl{n}", f"{target_pool.name}/vault{n}"
    driver = CliZfsDriver()
    driver.create_dataset(source)
    driver.create_dataset(target_parent)
    yield source, f"{target_parent}/vm", str(zpool.mountpoint / f"repl{n}")
    for dataset in (source, f"{target_parent}/vm"):
        for snap in list_local(dataset) if driver.exists(dataset) else ():
            if snap.userrefs:
                subprocess.run(["zfs", "release", hold_tag(NAME), f"{snap.dataset}@{snap.name}"], check=False)
    for dataset in (source, target_parent):
        # zfs-fuse may still be busy with a killed send: the dataset then goes with the session's pool
        with contextlib.suppress(ZfsError):
            driver.destroy_dataset(dataset, recursive=True)


def test_first_replication_is_full_then_only_the_new_backups_are_sent(sshd: Sshd, pair: tuple[str, str, str]) -> None:
    source, target, mountpoint = pair
    first = [_backup(source, mountpoint, i) for i in range(2)]
    with SshSession(_endpoint(sshd)) as ssh:
        full = replicate_dataset(ssh, source, target, NAME)
        assert full is not None and full.base is None and full.snapshot == first[-1]
        later = _backup(source, mountpoint, 5)
        incremental = replicate_dataset(ssh, source, target, NAME)
        assert incremental is not None and incremental.base == first[-1] and incremental.snapshot == later
        assert incremental.bytes_sent < full.bytes_sent
        assert replicate_dataset(ssh, source, target, NAME) is None  # in sync: nothing to send
        remote = list_remote(ssh, target) or []
    source_snaps = {s.name: s for s in list_local(source)}
    # every backup arrived, the same snapshot (guid), complete (its reconciler:* properties came along)
    assert [(s.name, s.guid, s.complete) for s in remote] == \
        [(n, source_snaps[n].guid, True) for n in [*first, later]]
    # the common base is held on both sides, and only it: source retention cannot prune it
    assert {s.name: s.userrefs for s in remote} == {first[0]: 0, first[1]: 0, later: 1}
    assert source_snaps[later].userrefs == 1 and source_snaps[first[-1]].userrefs == 0


def test_a_wrong_host_key_is_refused_and_nothing_is_sent(sshd: Sshd, pair: tuple[str, str, str],
                                                         tmp_path: Path) -> None:
    source, target, mountpoint = pair
    _backup(source, mountpoint, 0)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    with SshSession(_endpoint(sshd, host_key=other)) as ssh, pytest.raises(SshError) as refused:
        replicate_dataset(ssh, source, target, NAME)
    assert refused.value.failure is SshFailure.HOST_KEY_MISMATCH
    with SshSession(_endpoint(sshd)) as ssh:
        assert list_remote(ssh, target) is None
    assert all(s.userrefs == 0 for s in list_local(source))


def test_an_unreachable_target_is_reported_as_such_and_the_source_is_untouched(
        sshd: Sshd, pair: tuple[str, str, str]) -> None:
    source, target, mountpoint = pair
    _backup(source, mountpoint, 0)
    with socket_port() as closed_port, SshSession(_endpoint(sshd, port=closed_port)) as ssh, \
            pytest.raises(SshError) as failed:
        replicate_dataset(ssh, source, target, NAME)
    assert failed.value.failure is SshFailure.UNREACHABLE
    assert [(s.userrefs, s.complete) for s in list_local(source)] == [(0, True)]


def test_a_diverged_target_is_refused_and_nothing_is_destroyed(sshd: Sshd, pair: tuple[str, str, str],
                                                               target_pool: ZfsFusePool) -> None:
    source, target, mountpoint = pair
    base = _backup(source, mountpoint, 0)
    with SshSession(_endpoint(sshd)) as ssh:
        replicate_dataset(ssh, source, target, NAME)
        subprocess.run(["zfs", "snapshot", f"{target}@someone-elses"], check=True)
        _backup(source, mountpoint, 1)
        with pytest.raises(SshError, match="diverged: someone-elses"):
            replicate_dataset(ssh, source, target, NAME)
        assert [s.name for s in list_remote(ssh, target) or []] == [base, "someone-elses"]


class socket_port:
    """A port nothing listens on (bound, never listening), for the whole `with`."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_a_send_killed_mid_stream_counts_nothing_and_the_next_run_converges(
        sshd: Sshd, pair: tuple[str, str, str]) -> None:
    source, target, mountpoint = pair
    base = _backup(source, mountpoint, 0)
    with SshSession(_endpoint(sshd)) as ssh:
        replicate_dataset(ssh, source, target, NAME)
    newer = _backup(source, mountpoint, 1, size=4 * 1024 * 1024)
    endpoint = _endpoint(sshd)
    # a separate process sending slowly (256 KiB/s: ~16 s for 4 MiB), killed with SIGKILL after 2 s
    script = (
        "import sys; from reconciler.adapters.replication.ssh import SshEndpoint, SshSession;"
        "from reconciler.adapters.replication.send import replicate_dataset;"
        f"e = SshEndpoint({endpoint.user!r}, '127.0.0.1', {endpoint.port}, {endpoint.host_key!r}, "
        f"{endpoint.identity_file!r});"
        f"replicate_dataset(SshSession(e).__enter__(), {source!r}, {target!r}, {NAME!r}, 256 * 1024)"
    )
    child = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(2)
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the sender and its ssh with it, as a crash would
        child.wait()
    with SshSession(_endpoint(sshd)) as ssh:
        assert [s.name for s in list_remote(ssh, target) or []] == [base]  # nothing half-counted
        again = replicate_dataset(ssh, source, target, NAME)
        assert again is not None and again.base == base and again.snapshot == newer
        assert [(s.name, s.userrefs) for s in list_remote(ssh, target) or []] == [(base, 0), (newer, 1)]


def test_the_bandwidth_limit_holds_the_rate_on_the_wire(sshd: Sshd, pair: tuple[str, str, str]) -> None:
    source, target, mountpoint = pair
    _backup(source, mountpoint, 0, size=2 * 1024 * 1024)
    with SshSession(_endpoint(sshd)) as ssh:
        result = replicate_dataset(ssh, source, target, NAME, bandwidth_limit=1024 * 1024)
    assert result is not None and result.bytes_sent > 2 * 1024 * 1024
    assert result.seconds >= 0.9 * result.bytes_sent / (1024 * 1024)
