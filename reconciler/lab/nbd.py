"""The lab's NBD exports: one nbdkit per exported VM disk, on a Unix socket under the lab's state dir.

Thin on purpose: the process handling is the production code in `reconciler.adapters.nbd.server`; this
module only names exports and records them so `reconciler lab status/down` can find them later.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from reconciler.adapters.nbd.server import CurlSource, FileSource, Listen, NbdkitServer, Source, stop_pid


class Via(StrEnum):
    """How nbdkit reaches the disk: the datastore file itself, or vSphere's `/folder` HTTP access."""

    FILE = "file"
    CURL = "curl"


@dataclass(frozen=True)
class ExportRecord:
    """What the lab's state file keeps about a running export."""

    name: str
    site: str
    vm: str
    disk_key: int
    via: Via
    source: str
    uri: str
    socket: str
    pid: int
    log: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"via": self.via.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportRecord:
        return cls(**({"site": "vcenter"} | data | {"via": Via(data["via"]), "disk_key": int(data["disk_key"])}))


def export_name(vm: str, disk_key: int, site: str = "vcenter") -> str:
    """`web-01-2000`; disks of the standalone host get a prefix (the same VM may be on both sites)."""
    return f"{vm}-{disk_key}" if site == "vcenter" else f"{site}-{vm}-{disk_key}"


class NbdExport:
    """A read-only nbdkit export of one VM disk, reachable at `.uri` once started.

    `detach=True` lets the export outlive the process that started it (the CLI's `lab up`);
    otherwise it dies with its parent (tests), so a crashed test run leaves no nbdkit behind.
    """

    def __init__(
        self,
        vm: str,
        disk_key: int,
        via: Via,
        source: Source,
        run_dir: Path,
        *,
        site: str = "vcenter",
        detach: bool = False,
    ) -> None:
        self.vm = vm
        self.disk_key = disk_key
        self.via = via
        self.site = site
        self.name = export_name(vm, disk_key, site)
        run_dir.mkdir(parents=True, exist_ok=True)
        # Unix socket paths are limited to 108 bytes: keep the name short and the directory the caller's.
        self._server = NbdkitServer(
            source,
            Listen(socket=run_dir / f"{self.name}.sock"),
            log_path=run_dir / f"{self.name}.log",
            exit_with_parent=not detach,
            detach=detach,
        )
        self._source_text = str(source.path) if isinstance(source, FileSource) else source.url

    @classmethod
    def of_file(
        cls, vm: str, disk_key: int, path: Path, run_dir: Path, *, site: str = "vcenter", detach: bool = False
    ) -> NbdExport:
        return cls(vm, disk_key, Via.FILE, FileSource(path), run_dir, site=site, detach=detach)

    @classmethod
    def of_url(
        cls,
        vm: str,
        disk_key: int,
        url: str,
        run_dir: Path,
        *,
        site: str = "vcenter",
        sslverify: bool = False,
        detach: bool = False,
    ) -> NbdExport:
        """`sslverify=False` by default: the lab's vcsim certificate is self-signed."""
        source = CurlSource(url, sslverify=sslverify)
        return cls(vm, disk_key, Via.CURL, source, run_dir, site=site, detach=detach)

    @property
    def uri(self) -> str:
        return self._server.uri

    def start(self) -> ExportRecord:
        self._server.start()
        assert self._server.pid is not None
        listen_socket = self._server.listen.socket
        return ExportRecord(
            name=self.name,
            site=self.site,
            vm=self.vm,
            disk_key=self.disk_key,
            via=self.via,
            source=self._source_text,
            uri=self.uri,
            socket=str(listen_socket),
            pid=self._server.pid,
            log=str(self._server.log_path),
        )

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> NbdExport:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def stop_export(record: ExportRecord) -> None:
    """Stop an export recorded in a state file, possibly started by another process."""
    stop_pid(record.pid)
    Path(record.socket).unlink(missing_ok=True)
    Path(record.socket + ".pid").unlink(missing_ok=True)
