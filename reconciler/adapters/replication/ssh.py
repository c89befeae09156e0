"""Running `zfs` on the replication target over ssh, with the host key pinned.

ssh is run non-interactively (BatchMode) against a known_hosts file holding exactly the policy's key, with
StrictHostKeyChecking=yes: a host presenting another key is refused, never learnt. Failures are classified
(unreachable, host key mismatch, remote command failed) so the plan can say which one it was.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from reconciler.policy.model import Replication


class SshFailure(StrEnum):
    UNREACHABLE = "target-unreachable"
    HOST_KEY_MISMATCH = "host-key-mismatch"
    COMMAND_FAILED = "command-failed"


class SshError(Exception):
    def __init__(self, failure: SshFailure, message: str, stderr: str = "") -> None:
        self.failure, self.stderr = failure, stderr.strip()
        super().__init__(f"{message}: {self.stderr}" if self.stderr else message)


_HOST_KEY_SIGNS = ("host key verification failed", "remote host identification has changed",
                   "no matching host key type", "host key for")
_UNREACHABLE_SIGNS = ("connection refused", "connection timed out", "no route to host", "could not resolve",
                      "network is unreachable", "connection closed by", "operation timed out")


def classify(returncode: int, stderr: str) -> SshFailure:
    """Pure: ssh exits 255 for its own failures; anything else is the remote command's status."""
    lower = stderr.lower()
    if returncode == 255 and any(sign in lower for sign in _HOST_KEY_SIGNS):
        return SshFailure.HOST_KEY_MISMATCH
    if returncode == 255:
        return SshFailure.UNREACHABLE
    return SshFailure.COMMAND_FAILED


def known_hosts_line(host: str, port: int, host_key: str) -> str:
    """Pure: the known_hosts entry ssh looks up for host:port (non-22 ports are written `[host]:port`)."""
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {host_key.strip()}\n"


@dataclass(frozen=True)
class SshEndpoint:
    user: str
    host: str
    port: int
    host_key: str
    identity_file: str
    connect_timeout: int = 10

    @classmethod
    def of(cls, replication: Replication) -> SshEndpoint:
        t = replication.target
        return cls(t.user, t.host, t.port, replication.host_key, replication.identity_file)

    def argv(self, known_hosts: Path, remote: Sequence[str], control: Path | None = None) -> list[str]:
        # one TCP connection and handshake for all of a session's commands (listing, send, verify, holds)
        shared = ["-o", "ControlMaster=auto", "-o", f"ControlPath={control}", "-o", "ControlPersist=60"] \
            if control is not None else []
        return ["ssh", "-p", str(self.port), "-i", self.identity_file, *shared,
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", f"ConnectTimeout={self.connect_timeout}", "-o", "ServerAliveInterval=15",
                "-o", "LogLevel=ERROR", f"{self.user}@{self.host}", "--", shlex.join(remote)]


class SshSession:
    """`with SshSession(endpoint) as ssh: ssh.run(["zfs", "list"])` — one pinned known_hosts file per session."""

    def __init__(self, endpoint: SshEndpoint) -> None:
        self.endpoint = endpoint
        self._dir = tempfile.TemporaryDirectory(prefix="reconciler-ssh-")
        self.known_hosts = Path(self._dir.name) / "known_hosts"
        self.known_hosts.write_text(known_hosts_line(endpoint.host, endpoint.port, endpoint.host_key))

    def __enter__(self) -> SshSession:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.control.exists():  # stop the shared connection before its socket's directory goes
            subprocess.run([*self.argv([])[:-3], "-O", "exit", f"{self.endpoint.user}@{self.endpoint.host}"],
                           capture_output=True, stdin=subprocess.DEVNULL, timeout=10, check=False)
        self._dir.cleanup()

    @property
    def control(self) -> Path:
        return Path(self._dir.name) / "cm"

    def argv(self, remote: Sequence[str]) -> list[str]:
        return self.endpoint.argv(self.known_hosts, remote, self.control)

    def run(self, remote: Sequence[str], timeout: float = 600) -> str:
        try:
            result = subprocess.run(self.argv(remote), capture_output=True, text=True, timeout=timeout,
                                    stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired as exc:
            raise SshError(SshFailure.UNREACHABLE, f"ssh to {self.endpoint.host} timed out") from exc
        if result.returncode != 0:
            failure = classify(result.returncode, result.stderr)
            raise SshError(failure, f"ssh {self.endpoint.user}@{self.endpoint.host}:{self.endpoint.port} "
                                    f"{' '.join(remote[:2])}: {failure.value}", result.stderr)
        return result.stdout
