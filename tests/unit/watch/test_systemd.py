"""sd_notify over a real datagram socket, as systemd listens for it; a no-op outside systemd."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from reconciler.watch.systemd import notify, watchdog_interval


def test_notify_sends_one_datagram_to_the_notify_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        assert notify("READY=1\nSTATUS=watching", {"NOTIFY_SOCKET": path})
        assert server.recv(4096) == b"READY=1\nSTATUS=watching"


def test_abstract_notify_socket_is_supported() -> None:
    name = f"rcn-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        assert notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert server.recv(64) == b"WATCHDOG=1"


def test_outside_systemd_or_with_a_dead_socket_nothing_happens(tmp_path: Path) -> None:
    assert notify("READY=1", {}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_watchdog_pings_at_half_the_interval_and_only_for_this_process() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
