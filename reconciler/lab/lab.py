"""The whole lab: a vCenter and a standalone ESXi (vcsim), a zfs-fuse pool, and nbdkit exports of VM disks.

`up()` starts everything detached from the calling process and records it in `STATE_DIR/lab.json`, so
`status()` and `down()` work from any later process (the CLI runs each as its own command). Ports are
fixed by default so the policy set in `policies/` can name them; tests pass `LabPorts.auto()`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import shlex
import shutil
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from reconciler.adapters import processes
from reconciler.adapters.nbd.server import CurlSource
from reconciler.lab.nbd import ExportRecord, NbdExport, Via, export_name, stop_export

STATE_FILE = "lab.json"
ENV_FILE = "env"
CONNECTIONS_FILE = "connections.yaml"
DEFAULT_POOL = "reconciler-lab"
PARENT_DATASET = "agentless"
LAB_PASSWORD_ENV = "RECONCILER_LAB_PASSWORD"
SITES = ("vcenter", "esxi")


class LabError(RuntimeError):
    """Something the person running the lab can act on; the CLI prints it without a traceback."""


@dataclass(frozen=True)
class LabPorts:
    """Ports of the two simulated sites; 0 lets the OS choose (tests, parallel workers)."""

    vcenter_sdk: int = 18443
    esxi_sdk: int = 18444
    vcenter_control: int = 18480
    esxi_control: int = 18481

    @classmethod
    def auto(cls) -> LabPorts:
        return cls(0, 0, 0, 0)

    def of(self, site: str) -> tuple[int, int]:
        return getattr(self, f"{site}_sdk"), getattr(self, f"{site}_control")


@dataclass(frozen=True)
class SiteState:
    """One running vcsim (a vCenter or a standalone ESXi host) as recorded in the state file."""

    site: str
    pid: int
    sdk: str
    control: str
    thumbprint_sha1: str
    thumbprint_sha256: str
    username: str
    password: str
    mode: str
    vms: tuple[dict[str, Any], ...]
    datacenter: str = ""

    def disk(self, vm: str, disk_key: int) -> dict[str, Any]:
        for candidate in self.vms:
            if candidate["name"] == vm:
                for disk in candidate["disks"]:
                    if int(disk["key"]) == disk_key:
                        return disk
                keys = ", ".join(str(d["key"]) for d in candidate["disks"])
                raise LabError(f"VM {vm} on {self.site} has no disk {disk_key} (disks: {keys})")
        names = ", ".join(sorted(v["name"] for v in self.vms))
        raise LabError(f"no VM named {vm} on {self.site} (VMs: {names})")


@dataclass(frozen=True)
class PoolState:
    name: str
    parent_dataset: str
    mountpoint: str


@dataclass(frozen=True)
class LabState:
    state_dir: str
    started_at: str
    sites: dict[str, SiteState]
    pool: PoolState | None
    exports: tuple[ExportRecord, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "stateDir": self.state_dir,
            "startedAt": self.started_at,
            "sites": {name: asdict(site) for name, site in self.sites.items()},
            "pool": asdict(self.pool) if self.pool else None,
            "exports": [record.to_json() for record in self.exports],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabState:
        sites = {name: SiteState(**(site | {"vms": tuple(site["vms"])})) for name, site in data["sites"].items()}
        pool = PoolState(**data["pool"]) if data.get("pool") else None
        exports = tuple(ExportRecord.from_json(e) for e in data.get("exports", ()))
        return cls(data["stateDir"], data["startedAt"], sites, pool, exports)

    def with_exports(self, exports: tuple[ExportRecord, ...]) -> LabState:
        return LabState(self.state_dir, self.started_at, self.sites, self.pool, exports)


@dataclass(frozen=True)
class ProcessStatus:
    what: str
    pid: int
    running: bool


@dataclass(frozen=True)
class LabStatus:
    state: LabState | None
    processes: tuple[ProcessStatus, ...] = field(default=())

    @property
    def up(self) -> bool:
        return self.state is not None

    @property
    def healthy(self) -> bool:
        return self.up and all(p.running for p in self.processes)


class Lab:
    """The lab under one state directory. Only one lab per state directory; several labs may run side by
    side with different state directories, pool names and ports."""

    def __init__(
        self,
        state_dir: Path | str,
        *,
        ports: LabPorts | None = None,
        pool_name: str = DEFAULT_POOL,
        pool_size: str = "4G",
        detach: bool = True,
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.ports = ports or LabPorts()
        self.pool_name = pool_name
        self.pool_size = pool_size
        # detach: processes outlive this one (the CLI); otherwise they die with it (tests)
        self.detach = detach

    # -- state file -------------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.state_dir / STATE_FILE

    def load_state(self) -> LabState | None:
        try:
            return LabState.from_json(json.loads(self.state_path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as err:
            raise LabError(f"{self.state_path} is unreadable ({err}); check pgrep, then remove it") from err

    def require_state(self) -> LabState:
        state = self.load_state()
        if state is None:
            raise LabError(f"the lab is not up (no {self.state_path}); start it with `reconciler lab up`")
        return state

    def _save(self, state: LabState) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(state.to_json(), indent=2) + "\n")
        temporary.replace(self.state_path)  # atomic: a concurrent `status` never reads half a file

    # -- up / down / status -----------------------------------------------------------------------------

    def up(
        self,
        *,
        exports: tuple[tuple[str, int], ...] = (),
        export_all: bool = False,
        via: Via = Via.CURL,
    ) -> LabState:
        """Start the lab. Refuses when it is already up; clears the leftovers of a lab that died.

        `exports` names vCenter VM disks to serve over NBD; `export_all` serves every vCenter VM disk.
        """
        from reconciler.lab import inventory as inventories

        existing = self.status()
        if existing.up:
            if existing.healthy:
                raise LabError(f"the lab is already up (state in {self.state_dir}): `reconciler lab status`")
            self.down()  # a half-dead lab: clear it so this start is clean
        _check_prerequisites()
        _check_ports_free(self.ports)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        image_dir = self.state_dir / "images"
        try:
            site_inventories = {site: inventories.default(site, image_dir) for site in SITES}
            _build_images(image_dir, list(site_inventories.values()))
        except (inventories.InventoryError, OSError) as err:
            raise LabError(f"cannot prepare the lab's VMs: {err}") from err
        except Exception as err:  # images.ImageBuildError and friends: say what failed, not where
            raise LabError(f"cannot build the lab's disk images: {err}") from err
        started: list[SiteState | PoolState] = []
        try:
            sites: dict[str, SiteState] = {}
            for site in SITES:
                sdk_port, control_port = self.ports.of(site)
                sites[site] = _start_site(
                    site, self.state_dir / site, site_inventories[site], sdk_port, control_port, self.detach
                )
                started.append(sites[site])
            pool = _start_pool(self.pool_name, self.state_dir, self.pool_size)
            started.append(pool)
            now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            state = LabState(str(self.state_dir), now, sites, pool)
            self._save(state)
            wanted = list(exports)
            if export_all:
                wanted += [(vm["name"], int(d["key"])) for vm in sites["vcenter"].vms for d in vm["disks"]]
            for vm, disk_key in wanted:
                state = self.export(vm, disk_key, via=via)
            self._write_env(state)
        except BaseException:
            if self.state_path.exists():
                self.down()
            else:
                for component in reversed(started):
                    _stop_component(component, self.state_dir)
                self._remove_files()
            raise
        return state

    def down(self) -> tuple[str, ...]:
        """Stop everything the state file names; returns what was stopped. Safe to repeat.

        Every part is attempted even when one fails; then the failure is reported and the state file
        kept, so a second `down` can finish the job."""
        state = self.load_state()
        if state is None:
            return ()
        stopped: list[str] = []
        failed: list[str] = []
        # exports first (they read from vcsim), vcsim last
        parts: list[tuple[str, Callable[[], object]]] = [
            (f"nbdkit {record.name}", functools.partial(stop_export, record)) for record in state.exports
        ]
        components: list[SiteState | PoolState] = [state.pool] if state.pool else []
        for component in (*components, *state.sites.values()):
            what = f"zfs pool {component.name}" if isinstance(component, PoolState) else f"vcsim {component.site}"
            parts.append((what, functools.partial(_stop_component, component, self.state_dir)))
        for what, stop in parts:
            try:
                stop()
                stopped.append(what)
            except (LabError, OSError) as err:
                failed.append(f"{what}: {err}")
        if failed:
            raise LabError("could not stop " + "; ".join(failed))
        self._remove_files()
        return tuple(stopped)

    def _remove_files(self) -> None:
        """Everything but the state directory itself (it may be the user's `.lab/`)."""
        for leftover in (STATE_FILE, ENV_FILE, CONNECTIONS_FILE):
            (self.state_dir / leftover).unlink(missing_ok=True)
        for directory in ("exports", "images", *SITES):
            shutil.rmtree(self.state_dir / directory, ignore_errors=True)
        for maybe_empty in ("zfs", "mnt"):
            with contextlib.suppress(OSError):
                (self.state_dir / maybe_empty).rmdir()

    def status(self) -> LabStatus:
        state = self.load_state()
        if state is None:
            return LabStatus(None)
        processes = [
            ProcessStatus(f"vcsim {site.site}", site.pid, _vcsim_running(site.pid)) for site in state.sites.values()
        ]
        processes += [
            ProcessStatus(f"nbdkit {record.name}", record.pid, _nbdkit_running(record.pid)) for record in state.exports
        ]
        if state.pool is not None:
            name = state.pool.name
            processes.append(ProcessStatus(f"zfs pool {name}", 0, _pool_imported(name)))
        return LabStatus(state, tuple(processes))

    # -- exports and control ----------------------------------------------------------------------------

    def export(self, vm: str, disk_key: int, *, via: Via = Via.CURL, site: str = "vcenter") -> LabState:
        """Serve a VM disk over NBD (read-only); the export outlives this process until `down`."""
        state = self.require_state()
        if site not in state.sites:
            raise LabError(f"unknown site {site!r}: choose one of {', '.join(state.sites)}")
        name = export_name(vm, disk_key, site)
        if any(record.name == name for record in state.exports):
            raise LabError(f"{name} is already exported")
        site_state = state.sites[site]
        disk = site_state.disk(vm, disk_key)
        run_dir = self.state_dir / "exports"
        if via is Via.FILE:
            export = NbdExport.of_file(vm, disk_key, Path(disk["file"]), run_dir, site=site, detach=self.detach)
        else:
            url = _datastore_url(site_state, disk)
            export = NbdExport.of_url(
                vm, disk_key, url, run_dir, site=site, sslverify=False, detach=self.detach
            )
        state = state.with_exports((*state.exports, export.start()))
        self._save(state)
        return state

    def control(self, site: str = "vcenter") -> Any:
        from reconciler.lab.vcsim import LabControl

        state = self.require_state()
        if site not in state.sites:
            raise LabError(f"unknown site {site!r}: choose one of {', '.join(state.sites)}")
        return LabControl(state.sites[site].control)

    # -- files for people and policies ------------------------------------------------------------------

    def _write_env(self, state: LabState) -> None:
        """`STATE_DIR/env` for `source`, and a Connection override the lab policy set can load."""
        lines = [f"export {LAB_PASSWORD_ENV}={shlex.quote(state.sites['vcenter'].password)}"]
        for site in state.sites.values():
            prefix = f"RECONCILER_LAB_{site.site.upper()}"
            lines += [
                f"export {prefix}={shlex.quote(site.sdk)}",
                f"export {prefix}_ADDRESS={shlex.quote(_host_port(site.sdk))}",
                f"export {prefix}_THUMBPRINT={shlex.quote(site.thumbprint_sha256)}",
                f"export {prefix}_CONTROL={shlex.quote(site.control)}",
            ]
        if state.pool is not None:
            lines.append(f"export RECONCILER_LAB_DATASET={shlex.quote(state.pool.parent_dataset)}")
        (self.state_dir / ENV_FILE).write_text("\n".join(lines) + "\n")
        (self.state_dir / CONNECTIONS_FILE).write_text(connections_yaml(state))


def _host_port(url: str) -> str:
    return urlsplit(url).netloc


def connections_yaml(state: LabState) -> str:
    """Connection documents pinned to this lab's certificates (generated: each `lab up` makes new ones)."""
    documents = []
    for site in state.sites.values():
        documents.append(
            "\n".join(
                [
                    "apiVersion: reconciler/v1",
                    "kind: Connection",
                    "metadata:",
                    f"  name: lab-{site.site}",
                    "spec:",
                    f"  address: https://{_host_port(site.sdk)}/sdk",
                    f"  user: {site.username}",
                    "  passwordFrom:",
                    f"    env: {LAB_PASSWORD_ENV}",
                    f'  thumbprint: "{site.thumbprint_sha256}"',
                ]
            )
        )
    header = "# Generated by `reconciler lab up`: the lab's connections, pinned to this run's certificates.\n"
    return header + "\n---\n".join(documents) + "\n"


# -- components: each starts detached and is found again from the state file -----------------------------

# Which real disk layout each default-inventory image gets (other images: plain Linux).
IMAGE_LAYOUTS = {
    "web-01-disk0.raw": "linux-ext4",
    "db-01-disk0.raw": "windows-ntfs",
    "app-01-disk0.raw": "linux-ext4",
}


def _check_prerequisites() -> None:
    from reconciler.lab.vcsim import DEFAULT_BINARY, SOURCE_DIR, NoSourceCheckout, VcsimError, ensure_binary

    if not DEFAULT_BINARY.exists() and not SOURCE_DIR.is_dir():
        ensure_binary()  # raises NoSourceCheckout: say that before listing tools a wheel install may lack
    missing = [
        f"{tool} (Debian package {package})"
        for tool, package in (("zfs-fuse", "zfs-fuse"), ("nbdkit", "nbdkit"))
        if shutil.which(tool) is None
    ]
    if not Path("/dev/fuse").exists():
        missing.append("/dev/fuse (zfs-fuse needs FUSE: use a machine or container that has it)")
    if not DEFAULT_BINARY.exists() and shutil.which("go") is None:
        missing.append("go to build vcsim (Debian packages golang-go and golang-github-vmware-govmomi-dev)")
    if missing:
        raise LabError("the lab needs " + "; ".join(missing) + " — `make setup` installs them")
    try:
        ensure_binary()
    except NoSourceCheckout:
        raise  # not a broken lab but the wrong kind of install: the CLI says so with its own exit status
    except VcsimError as err:
        raise LabError(str(err)) from err


def _check_ports_free(ports: LabPorts) -> None:
    """Fixed ports taken by another lab (or anything else): say so before vcsim panics on it."""
    for name, port in asdict(ports).items():
        if not port:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as err:
                raise LabError(
                    f"port {port} ({name.replace('_', ' ')}) is in use ({err.strerror}): is another lab up "
                    "with another --state-dir? Stop it, or start this one with --auto-ports"
                ) from err


def _build_images(image_dir: Path, inventories: list[Any]) -> None:
    """Real partition tables and file systems for every disk that names an image; built once per lab."""
    from reconciler.lab.images import build_lab_disk

    image_dir.mkdir(parents=True, exist_ok=True)
    for inventory in inventories:
        for vm in inventory.vms:
            for disk in vm.disks:
                if disk.image is not None and not disk.image.exists():
                    layout = IMAGE_LAYOUTS.get(disk.image.name, "linux-ext4")
                    build_lab_disk(disk.image, layout, disk.capacity)


def _start_site(site: str, site_dir: Path, inventory: Any, sdk_port: int, control_port: int, detach: bool) -> SiteState:
    from reconciler.lab.vcsim import VcsimError, VcsimProcess

    site_dir.mkdir(parents=True, exist_ok=True)
    process = VcsimProcess(
        None,
        inventory.write_json(site_dir / "inventory.json"),
        site_dir,
        listen=f"127.0.0.1:{sdk_port}",
        control=f"127.0.0.1:{control_port}",
        detach=detach,
    )
    try:
        endpoints = process.start()
    except VcsimError as err:
        hint = " (is another lab using these ports? stop it, or use --auto-ports)" if "in use" in str(err) else ""
        raise LabError(f"vcsim ({site}): {err}{hint}") from err
    assert endpoints.raw is not None and process.pid is not None
    return _site_state(site, process.pid, endpoints.raw)


def _site_state(site: str, pid: int, ready: dict[str, Any]) -> SiteState:
    return SiteState(
        site=site,
        pid=pid,
        sdk=ready["sdk"],
        control=ready["control"],
        thumbprint_sha1=ready.get("thumbprintSha1", ""),
        thumbprint_sha256=ready.get("thumbprintSha256", ""),
        username=ready["username"],
        password=ready["password"],
        mode=ready["mode"],
        vms=tuple(ready["vms"]),
        datacenter=ready.get("datacenter", ""),
    )


def _start_pool(name: str, state_dir: Path, size: str) -> PoolState:
    from reconciler.adapters.zfs.base import ZfsError
    from reconciler.adapters.zfs.runner import run
    from reconciler.lab.zfs import ZfsFusePool

    try:
        pool = ZfsFusePool(name, state_dir, size).start()
        parent = f"{name}/{PARENT_DATASET}"
        if run(["zfs", "list", "-H", "-o", "name", parent], check=False).returncode != 0:
            run(["zfs", "create", parent])
    except ZfsError as err:
        raise LabError(f"zfs pool {name}: {err}") from err
    return PoolState(name, parent, str(pool.mountpoint))


def _stop_pool(pool: PoolState, state_dir: Path) -> None:
    from reconciler.adapters.zfs.base import ZfsError
    from reconciler.lab.zfs import ZfsFusePool

    try:
        ZfsFusePool(pool.name, state_dir).stop()
    except ZfsError as err:
        raise LabError(f"could not destroy zfs pool {pool.name}: {err}") from err


def _pool_imported(name: str) -> bool:
    from reconciler.adapters.zfs.base import ZfsError
    from reconciler.lab.zfs import daemon_running, imported_pools

    try:
        return daemon_running() and name in imported_pools()
    except (ZfsError, OSError):  # zfs-fuse gone or uninstalled: the pool is not there either
        return False


def _stop_component(component: SiteState | PoolState, state_dir: Path) -> None:
    if isinstance(component, PoolState):
        _stop_pool(component, state_dir)
    else:
        processes.terminate(component.pid, _vcsim_running)


def _vcsim_running(pid: int) -> bool:
    from reconciler.lab.vcsim import DEFAULT_BINARY

    return processes.program_name(pid) == DEFAULT_BINARY.name


def _nbdkit_running(pid: int) -> bool:
    return processes.program_name(pid) == "nbdkit"


def _datastore_url(site: SiteState, disk: dict[str, Any]) -> str:
    """The disk's flat file over vSphere's datastore HTTP access, built the way production builds it."""
    parts = urlsplit(site.sdk)
    base_url = f"{parts.scheme}://{parts.netloc}"
    return CurlSource.for_datastore_disk(base_url, site.datacenter, disk["datastorePath"]).url


