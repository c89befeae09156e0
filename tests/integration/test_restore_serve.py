"""`reconciler restore --serve`: every disk of a backup is readable over NBD (by `nbdcopy`), and SIGTERM
stops it cleanly: no nbdkit left, no clone left, exit 0."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.adapters.nbd.server import is_nbdkit_pid
from tests.integration.restore_world import (
    EXT4_KEY,
    NTFS_KEY,
    RUN1,
    VM_NAME,
    World,
    children,
    same_bytes,
    world_fixture,  # noqa: F401  (the session fixture `world`)
)

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("restore")]  # one shared backup world
URI = re.compile(r"^disk (\d+): (nbd\S+) ")


def nbdkit_children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if is_nbdkit_pid(int(p))]


def free_port_pair() -> int:
    """A port P with P+1 free too (the OS picks P; two disks are served on P and P+1)."""
    for _ in range(20):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no two adjacent free ports")


@pytest.mark.parametrize("listen", ["unix", "tcp"])
def test_served_disks_are_readable_by_nbdcopy_and_sigterm_cleans_up(world: World, tmp_path: Path,
                                                                     listen: str) -> None:
    sockets = tmp_path / "sockets"
    where = ["--socket-dir", str(sockets)] if listen == "unix" else ["--port", str(free_port_pair())]
    server = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "restore", VM_NAME, "--backup", RUN1, "--serve", *where,
         "--repository", world.repository],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        uris: dict[int, str] = {}
        assert server.stdout is not None
        while len(uris) < 2:
            line = server.stdout.readline()
            assert line, f"restore --serve ended early: {server.stderr.read() if server.stderr else ''}"
            if match := URI.match(line):
                uris[int(match.group(1))] = match.group(2)
        nbdkits = nbdkit_children(server.pid)
        assert len(nbdkits) == 2
        for key in (NTFS_KEY, EXT4_KEY):
            target = tmp_path / f"copy-{key}.raw"
            subprocess.run(["nbdcopy", uris[key], str(target)], check=True, timeout=120)
            assert same_bytes(target, world.then / f"disk-{key}.raw")
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert not any(is_nbdkit_pid(pid) for pid in nbdkits)
    assert children(world.dataset) == []
    assert not list(sockets.glob("*.sock"))  # (no directory at all with --port)
