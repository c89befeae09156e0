"""nbdkit process management: the NBD server in front of a VM disk.

Production reads disks through nbdkit's `vddk` plugin; the lab uses `curl` (vSphere's datastore HTTP file
access) or `file`. The three share one command-line builder and one process wrapper so the lab exercises
the very code a real appliance runs. Secrets never appear on the command line (visible in `ps`): they are
passed as `+FILE` references, which nbdkit reads itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

from reconciler.adapters import processes

NBDKIT = "nbdkit"


class NbdkitError(RuntimeError):
    """nbdkit is missing, refused its arguments, or did not become ready."""


@dataclass(frozen=True)
class FileSource:
    """A local raw image (the lab's datastore files, or a ZFS-hosted image)."""

    path: Path

    def plugin_args(self) -> list[str]:
        return ["file", f"file={self.path}"]


@dataclass(frozen=True)
class CurlSource:
    """A disk served over HTTP(S) with Range requests, e.g. vSphere's `/folder/<path>?dcPath=…&dsName=…`.

    `password_file` / `cookie_file` hold secrets (nbdkit reads them via `+FILE`); `sslverify=False` is for
    the lab's self-signed certificate only.
    """

    url: str
    sslverify: bool = True
    user: str | None = None
    password_file: Path | None = None
    cookie_file: Path | None = None
    timeout_seconds: int | None = None

    @classmethod
    def for_datastore_disk(
        cls, base_url: str, datacenter: str, datastore_path: str, **options: Any
    ) -> CurlSource:
        """The flat extent of a disk named by its datastore path (`[ds1] web-01/web-01.vmdk`), over
        vSphere's datastore file access: `https://host/folder/web-01/web-01-flat.vmdk?dcPath=…&dsName=…`.
        """
        match = re.fullmatch(r"\[([^\]]+)\] (.+)\.vmdk", datastore_path)
        if match is None:
            raise ValueError(f"not a datastore path of a disk: {datastore_path!r}")
        datastore, path = match.groups()
        flat = quote(f"{path}-flat.vmdk")
        query = urlencode({"dcPath": datacenter, "dsName": datastore})
        return cls(f"{base_url.rstrip('/')}/folder/{flat}?{query}", **options)

    def plugin_args(self) -> list[str]:
        args = ["curl", f"url={self.url}"]
        if not self.sslverify:
            args.append("sslverify=false")
        if self.user is not None:
            args.append(f"user={self.user}")
        if self.password_file is not None:
            args.append(f"password=+{self.password_file}")
        if self.cookie_file is not None:
            args.append(f"cookie=+{self.cookie_file}")
        if self.timeout_seconds is not None:
            args.append(f"timeout={self.timeout_seconds}")
        return args


@dataclass(frozen=True)
class VddkSource:
    """A disk of a VMware snapshot read through VMware's VDDK (real appliances only).

    `disk_file` is the datastore path of the snapshot's disk backing, e.g. `[ds1] web-01/web-01.vmdk`.
    """

    libdir: Path
    server: str
    user: str
    password_file: Path
    thumbprint: str
    vm_moref: str
    disk_file: str
    snapshot_moref: str | None = None
    transports: tuple[str, ...] = ("nbd", "nbdssl")

    def plugin_args(self) -> list[str]:
        args = [
            "vddk",
            f"libdir={self.libdir}",
            f"server={self.server}",
            f"user={self.user}",
            f"password=+{self.password_file}",
            f"thumbprint={self.thumbprint}",
            f"vm=moref={self.vm_moref}",
        ]
        if self.snapshot_moref is not None:
            args.append(f"snapshot={self.snapshot_moref}")
        if self.transports:
            args.append(f"transports={':'.join(self.transports)}")
        args.append(f"file={self.disk_file}")
        return args


Source = FileSource | CurlSource | VddkSource


@dataclass(frozen=True)
class Listen:
    """Where the server listens: a Unix socket (preferred: no port to allocate, file permissions) or a
    TCP port on 127.0.0.1."""

    socket: Path | None = None
    port: int | None = None

    def __post_init__(self) -> None:
        if (self.socket is None) == (self.port is None):
            raise ValueError("listen on exactly one of a Unix socket or a TCP port")

    def args(self) -> list[str]:
        if self.socket is not None:
            return ["--unix", str(self.socket)]
        return ["--ipaddr", "127.0.0.1", "--port", str(self.port)]

    @property
    def uri(self) -> str:
        if self.socket is not None:
            return f"nbd+unix:///?socket={quote(str(self.socket), safe='/')}"
        return f"nbd://127.0.0.1:{self.port}/"


def nbdkit_argv(
    source: Source,
    listen: Listen,
    *,
    readonly: bool = True,
    exit_with_parent: bool = False,
    pidfile: Path | None = None,
    threads: int | None = None,
    filters: tuple[str, ...] = (),
    foreground: bool = True,
    nbdkit: str = NBDKIT,
) -> list[str]:
    """The full nbdkit command line. Foreground by default: the caller owns the process and its
    lifetime; a background nbdkit logs to stderr too, so its errors reach the caller's log file."""
    argv = [nbdkit, "--foreground" if foreground else "--log=stderr", *listen.args()]
    if readonly:
        argv.append("--readonly")
    if exit_with_parent:
        argv.append("--exit-with-parent")
    if pidfile is not None:
        argv += ["--pidfile", str(pidfile)]
    if threads is not None:
        argv += ["--threads", str(threads)]
    argv += [f"--filter={f}" for f in filters]
    return argv + source.plugin_args()


class NbdkitServer:
    """One nbdkit process serving one disk. `start()` returns once the server accepts connections.

    By default nbdkit runs in the foreground as our child. `detach=True` lets nbdkit daemonise itself so
    it outlives this process (the lab CLI's `up`): measured with nbdkit 1.32, a foreground nbdkit gets
    SIGTERM when the process that started it exits, even without `--exit-with-parent`, while the
    daemon it forks does not. `stop_pid(server.pid)` then ends it from any process.
    """

    def __init__(
        self,
        source: Source,
        listen: Listen,
        *,
        log_path: Path | None = None,
        pidfile: Path | None = None,
        readonly: bool = True,
        exit_with_parent: bool = False,
        detach: bool = False,
        nbdkit: str = NBDKIT,
    ) -> None:
        if detach and exit_with_parent:
            raise ValueError("a detached nbdkit cannot exit with its parent")
        self.source = source
        self.listen = listen
        self.log_path = log_path
        self.detach = detach
        self.pidfile = pidfile or _default_pidfile(listen)
        self.argv = nbdkit_argv(
            source,
            listen,
            readonly=readonly,
            exit_with_parent=exit_with_parent,
            pidfile=self.pidfile,
            foreground=not detach,
            nbdkit=nbdkit,
        )
        self._process: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None

    @property
    def uri(self) -> str:
        return self.listen.uri

    @property
    def pid(self) -> int | None:
        """The serving nbdkit's pid (the daemon's own when detached)."""
        return self._pid

    def start(self, timeout: float = 15.0) -> NbdkitServer:
        if shutil.which(self.argv[0]) is None:
            raise NbdkitError(f"{self.argv[0]} not found: install the Debian package `nbdkit`")
        if self.listen.socket is not None:
            self.listen.socket.unlink(missing_ok=True)
        self.pidfile.unlink(missing_ok=True)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # the child holds its own descriptor
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        # nbdkit writes its pidfile only once it listens, so the pidfile is the readiness signal (a probe
        # connection would work too, but leaves a "handshake: Broken pipe" error in nbdkit's log).
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self._process.poll()
            # a detaching nbdkit's first process exits 0 once it has forked the daemon
            if code is not None and (code != 0 or not self.detach):
                raise NbdkitError(f"nbdkit exited with status {code}: {self._log_tail()}")
            pid = _read_pid(self.pidfile)
            if pid is not None:
                self._pid = pid
                return
            time.sleep(0.02)
        self.stop()
        raise NbdkitError(f"nbdkit not ready after {timeout:.0f} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-2000:].strip() or "(empty log)"

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.detach and self._pid is not None:
            stop_pid(self._pid, timeout)
        self._pid = None
        self.pidfile.unlink(missing_ok=True)
        if self.listen.socket is not None:
            self.listen.socket.unlink(missing_ok=True)

    def __enter__(self) -> NbdkitServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _default_pidfile(listen: Listen) -> Path:
    if listen.socket is not None:
        return listen.socket.with_name(listen.socket.name + ".pid")
    return Path(tempfile.gettempdir()) / f"reconciler-nbdkit-{listen.port}.pid"


def is_nbdkit_pid(pid: int) -> bool:
    """True when `pid` is a live nbdkit process (guards against signalling a recycled pid)."""
    return processes.program_name(pid) == NBDKIT


def stop_pid(pid: int, timeout: float = 10.0) -> bool:
    """Stop an nbdkit started by another process (from a state file). Returns whether one was running."""
    return processes.terminate(pid, is_nbdkit_pid, timeout)
