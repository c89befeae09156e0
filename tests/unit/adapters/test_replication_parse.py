"""The pure parts of replication: ssh failure classes, the pinned known_hosts line, listings, the rate."""

from __future__ import annotations

from reconciler.adapters.replication.send import RateLimiter
from reconciler.adapters.replication.ssh import SshFailure, classify, known_hosts_line
from reconciler.adapters.replication.target import parse_snapshots

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMHT41"


def test_ssh_failures_are_told_apart_by_exit_status_and_message() -> None:
    assert classify(255, "Host key verification failed.\n") is SshFailure.HOST_KEY_MISMATCH
    assert classify(255, "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@") is SshFailure.HOST_KEY_MISMATCH
    assert classify(255, "ssh: connect to host 10.0.0.1 port 22: Connection refused") is SshFailure.UNREACHABLE
    assert classify(1, "cannot receive: destination has been modified") is SshFailure.COMMAND_FAILED


def test_the_known_hosts_line_brackets_a_non_default_port() -> None:
    assert known_hosts_line("dr.example.com", 22, KEY) == f"dr.example.com {KEY}\n"
    assert known_hosts_line("127.0.0.1", 2222, KEY + "\n") == f"[127.0.0.1]:2222 {KEY}\n"


def test_a_listing_keeps_snapshots_with_guid_and_counts_only_their_own_status() -> None:
    text = "".join(f"{n}\t{p}\t{v}\t{s}\n" for n, p, v, s in [
        ("t/vm", "guid", "1", "-"),
        ("t/vm@b", "guid", "22", "-"), ("t/vm@b", "creation", "200", "-"), ("t/vm@b", "userrefs", "1", "-"),
        ("t/vm@b", "reconciler:status", "complete", "received"),
        ("t/vm@a", "guid", "11", "-"), ("t/vm@a", "creation", "100", "-"), ("t/vm@a", "userrefs", "0", "-"),
        ("t/vm@a", "reconciler:status", "complete", "inherited from t/vm"),
    ])
    snaps = parse_snapshots(text)
    assert [(s.name, s.guid, s.created, s.userrefs, s.complete) for s in snaps] == \
        [("a", "11", 100, 0, False), ("b", "22", 200, 1, True)]


def test_the_rate_limiter_sleeps_just_enough_to_hold_the_rate() -> None:
    now = [0.0]
    slept: list[float] = []
    limiter = RateLimiter(1000, clock=lambda: now[0], sleep=slept.append)
    limiter.take(500)
    now[0] = 0.1
    limiter.take(500)
    assert slept == [0.5, 0.9]
    unlimited = RateLimiter(None, clock=lambda: 0.0, sleep=slept.append)
    unlimited.take(10**9)
    assert len(slept) == 2
