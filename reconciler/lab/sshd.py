"""A real OpenSSH server on 127.0.0.1 for the replication lab: own config, host key, client key and port.

It runs as the current user (root in the lab), so `ssh root@127.0.0.1 zfs receive …` reaches the one
zfs-fuse daemon: the target pool is simply another pool. That is a real ssh and a real send/receive.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


class SshdError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True,
                   capture_output=True)


class Sshd:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir).absolute()
        self.host_key = self.dir / "host_ed25519"
        self.client_key = self.dir / "client_ed25519"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host_public_key(self) -> str:
        """`ssh-ed25519 AAAA…` without the comment: what a policy's hostKey holds."""
        return " ".join(self.host_key.with_suffix(".pub").read_text().split()[:2])

    @property
    def user(self) -> str:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name

    def start(self) -> Sshd:
        if not Path(SSHD).exists() or shutil.which("ssh") is None:
            raise SshdError("the replication lab needs Debian openssh-server and openssh-client (make setup)")
        self.dir.mkdir(parents=True, exist_ok=True)
        for key in (self.host_key, self.client_key):
            if not key.exists():
                _keygen(key)
        (self.dir / "authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        for _attempt in range(5):  # the free port may be taken between probe and bind: try another
            self.port = _free_port()
            config = self.dir / "sshd_config"
            config.write_text("\n".join([
                f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
                f"AuthorizedKeysFile {self.dir / 'authorized_keys'}", f"PidFile {self.dir / 'sshd.pid'}",
                "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no", "PrintMotd no", ""]))
            self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
            if self._wait_listening():
                # keep reading its log so a chatty sshd never blocks on a full pipe
                threading.Thread(target=self._drain, daemon=True).start()
                return self
            self.stop()
        raise SshdError("sshd did not start listening on 127.0.0.1")

    def _wait_listening(self, timeout: float = 10.0) -> bool:
        assert self.process is not None and self.process.stderr is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stderr], [], [], 0.2)
            if ready:
                line = self.process.stderr.readline()
                if b"Server listening" in line:
                    return True
                if not line:
                    return False
        return False

    def _drain(self) -> None:
        process = self.process
        if process is not None and process.stderr is not None:
            for _line in process.stderr:
                pass

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        self.process = None
