"""Serve a backup's disks read-only over NBD (one nbdkit `file` export per disk) until told to stop."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from reconciler.adapters.nbd.server import FileSource, Listen, NbdkitError, NbdkitServer
from reconciler.restore.clone import DiskImage
from reconciler.restore.locate import RestoreError


@dataclass(frozen=True)
class ServedDisk:
    key: int
    uri: str
    capacity: int


class DiskServers:
    """Context manager: one read-only nbdkit per disk, on Unix sockets in `socket_dir` or on TCP ports
    `port`, `port + 1`, … of 127.0.0.1. Every server is stopped on exit, also after a failure."""

    def __init__(self, images: Sequence[DiskImage], socket_dir: Path | None = None, port: int | None = None,
                 log_dir: Path | None = None) -> None:
        if (socket_dir is None) == (port is None):
            raise ValueError("serve on Unix sockets or on TCP ports, not both")
        self.images = tuple(images)
        self.socket_dir = socket_dir
        self.port = port
        self.log_dir = log_dir
        self.servers: list[tuple[DiskImage, NbdkitServer]] = []

    def _listen(self, index: int, image: DiskImage) -> Listen:
        if self.socket_dir is not None:
            return Listen(socket=self.socket_dir / f"disk-{image.key}.sock")
        assert self.port is not None
        return Listen(port=self.port + index)

    def __enter__(self) -> DiskServers:
        try:
            for index, image in enumerate(self.images):
                log = self.log_dir / f"nbdkit-disk-{image.key}.log" if self.log_dir else None
                server = NbdkitServer(FileSource(image.path), self._listen(index, image), log_path=log,
                                      readonly=True, exit_with_parent=True)
                server.start()
                self.servers.append((image, server))
        except NbdkitError as exc:
            self.stop()
            raise RestoreError(f"cannot serve disk {image.key}: {exc}") from None
        return self

    @property
    def disks(self) -> list[ServedDisk]:
        return [ServedDisk(image.key, server.uri, image.capacity) for image, server in self.servers]

    def stop(self) -> None:
        servers, self.servers = self.servers, []
        for _, server in servers:
            with contextlib.suppress(Exception):
                server.stop()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
