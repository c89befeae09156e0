"""Run `vcsim-lab` (our vSphere simulator, tests/lab/vcsim) and drive its control endpoint.

`VcsimProcess` starts the Go program on an inventory and returns its endpoints once it printed its ready
line; `LabControl` writes disk bytes, resets CBT and arms fault switches over plain HTTP (urllib only).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIR = REPO_ROOT / "tests" / "lab" / "vcsim"
DEFAULT_BINARY = SOURCE_DIR / "vcsim-lab"
GOPATH = "/usr/share/gocode"
READY_TIMEOUT = 120.0  # a 1,000-VM inventory takes a while on a busy 2-core machine

FAULTS = (
    "quiesce-fails",
    "snapshot-create-fails",
    "snapshot-remove-fails",
    "session-expires",
    "task-hangs",
    "disk-read-error",
    "host-disconnected",
    "consolidate-fails",
)


class VcsimError(RuntimeError):
    """vcsim-lab could not be built, started or asked something; the message says why."""


class NoSourceCheckout(VcsimError):
    """The lab's vSphere simulator is Go source under tests/lab, which only a source checkout has."""


@dataclass(frozen=True)
class DiskEndpoint:
    key: int
    datastore_path: str
    file: str  # absolute path of the live flat file
    url: str  # path + query under the SDK's host serving the flat file (/folder/...)
    capacity: int
    change_id: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DiskEndpoint:
        return cls(
            int(data["key"]),
            data["datastorePath"],
            data["file"],
            data.get("url", ""),
            int(data["capacity"]),
            data.get("changeId", ""),
        )


@dataclass(frozen=True)
class VmEndpoint:
    name: str
    moref: str
    instance_uuid: str
    disks: tuple[DiskEndpoint, ...]
    host: str = ""
    tags: tuple[str, ...] = ()
    cbt_enabled: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VmEndpoint:
        return cls(
            data["name"],
            data["moref"],
            data["instanceUuid"],
            tuple(DiskEndpoint.from_json(d) for d in data["disks"]),
            data.get("host", ""),
            tuple(data.get("tags", ())),
            bool(data.get("cbtEnabled", False)),
        )

    def disk(self, key: int) -> DiskEndpoint:
        for disk in self.disks:
            if disk.key == key:
                return disk
        raise KeyError(f"VM {self.name} has no disk {key}")


@dataclass(frozen=True)
class VcsimEndpoints:
    """What `vcsim-lab` printed when it became ready."""

    sdk: str
    control: str
    thumbprint_sha1: str
    thumbprint_sha256: str
    mode: str
    username: str
    password: str
    vms: tuple[VmEndpoint, ...]
    datacenter: str = ""
    datastore: str = ""
    datastore_dir: str = ""
    raw: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VcsimEndpoints:
        return cls(
            sdk=data["sdk"],
            control=data["control"],
            thumbprint_sha1=data.get("thumbprintSha1", ""),
            thumbprint_sha256=data.get("thumbprintSha256", ""),
            mode=data["mode"],
            username=data["username"],
            password=data["password"],
            vms=tuple(VmEndpoint.from_json(v) for v in data["vms"]),
            datacenter=data.get("datacenter", ""),
            datastore=data.get("datastore", ""),
            datastore_dir=data.get("datastoreDir", ""),
            raw=data,
        )

    @property
    def host(self) -> str:
        return self.sdk.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.sdk.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])

    @property
    def protocol(self) -> str:
        return self.sdk.split("://", 1)[0]

    @property
    def base_url(self) -> str:
        """scheme://host:port, to which a disk's `url` is relative."""
        return self.sdk.rsplit("/sdk", 1)[0]

    def flat_url(self, datastore_path: str) -> str:
        """Absolute URL of the raw bytes of the disk whose backing is `datastore_path`.

        "[LocalDS_0] web-01/web-01.vmdk" -> https://…/folder/web-01/web-01-flat.vmdk?dcPath=…&dsName=…;
        works for the live disk and for a snapshot's frozen copy (its backing fileName) alike.
        """
        datastore, _, path = datastore_path.partition("] ")
        flat = path.removesuffix(".vmdk") + "-flat.vmdk"
        query = urllib.parse.urlencode({"dcPath": self.datacenter, "dsName": datastore.lstrip("[")})
        return f"{self.base_url}/folder/{urllib.parse.quote(flat)}?{query}"

    def vm(self, name: str) -> VmEndpoint:
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise KeyError(f"no VM named {name}")


def _newest_source_mtime() -> float:
    return max((p.stat().st_mtime for p in SOURCE_DIR.glob("*.go")), default=0.0)


def ensure_binary(binary: Path | None = None) -> Path:
    """Return the vcsim-lab binary, (re)building it with `go build` when missing or older than its sources."""
    binary = Path(binary) if binary else DEFAULT_BINARY
    if binary == DEFAULT_BINARY and not SOURCE_DIR.is_dir() and not binary.exists():
        # an installed package has no tests/lab: the lab is a development tool of the source checkout
        raise NoSourceCheckout(
            "the lab needs a source checkout of reconciler (tests/lab/vcsim); run it from there with `make lab-up`"
        )
    if binary.exists() and (binary != DEFAULT_BINARY or binary.stat().st_mtime >= _newest_source_mtime()):
        return binary
    if binary != DEFAULT_BINARY:
        raise VcsimError(f"{binary} does not exist")
    env = os.environ | {"GO111MODULE": "off", "GOPATH": GOPATH}
    env.setdefault("GOCACHE", str(Path.home() / ".cache" / "go-build"))
    # build to a temporary name: parallel workers may build at once, the rename is atomic
    temporary = binary.with_name(f".vcsim-lab.{os.getpid()}")
    try:
        result = subprocess.run(
            ["go", "build", "-o", str(temporary), "."],
            cwd=SOURCE_DIR,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError as err:
        raise VcsimError("`go` is not installed; run `make setup`") from err
    if result.returncode != 0:
        temporary.unlink(missing_ok=True)
        raise VcsimError(f"building vcsim-lab failed:\n{result.stderr.strip()}")
    temporary.replace(binary)
    return binary


class VcsimProcess:
    """One running vcsim-lab. Use as a context manager, or call `start()` / `stop()`.

    `detach=True` starts it in its own session so that it outlives the calling process (the lab CLI);
    stdout and stderr go to files under `state_dir` either way (`vcsim.out`, `vcsim.log`).
    """

    def __init__(
        self,
        binary: Path | str | None,
        inventory_json: Path | str,
        state_dir: Path | str,
        tls: bool = True,
        *,
        listen: str = "127.0.0.1:0",
        control: str = "127.0.0.1:0",
        keep_state: bool = False,
        detach: bool = False,
    ) -> None:
        self.binary = Path(binary) if binary else None
        self.inventory_json = Path(inventory_json)
        self.state_dir = Path(state_dir)
        self.tls = tls
        self.listen = listen
        self.control = control
        self.keep_state = keep_state
        self.detach = detach
        self.endpoints: VcsimEndpoints | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def log_path(self) -> Path:
        return self.state_dir / "vcsim.log"

    def start(self, timeout: float = READY_TIMEOUT) -> VcsimEndpoints:
        if self._process is not None:
            raise VcsimError("already started")
        binary = ensure_binary(self.binary)
        if not self.inventory_json.is_file():
            raise VcsimError(f"inventory {self.inventory_json} does not exist")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        out_path = self.state_dir / "vcsim.out"
        argv = [
            str(binary),
            "-inventory", str(self.inventory_json),
            "-state", str(self.state_dir),
            "-listen", self.listen,
            "-control", self.control,
            f"-tls={'true' if self.tls else 'false'}",
        ]  # fmt: skip
        if self.keep_state:
            argv.append("-keep-state")
        with out_path.open("wb") as out, self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                argv, stdout=out, stderr=log, stdin=subprocess.DEVNULL, start_new_session=self.detach
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = out_path.read_text()
            if text.endswith("\n"):
                self.endpoints = VcsimEndpoints.from_json(json.loads(text.splitlines()[0]))
                return self.endpoints
            if self._process.poll() is not None:
                self._process = None
                raise VcsimError(f"vcsim-lab exited before it was ready:\n{self._log_tail()}")
            time.sleep(0.05)
        self.stop()
        raise VcsimError(f"vcsim-lab was not ready after {timeout:.0f} s:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait for the clean shutdown (which removes its datastores), SIGKILL if it hangs."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


class LabControl:
    """Client of vcsim-lab's control endpoint (JSON over HTTP)."""

    def __init__(self, control_url: str, timeout: float = 30.0) -> None:
        self.url = control_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            try:
                message = json.loads(err.read()).get("error", err.reason)
            except ValueError:
                message = err.reason
            raise VcsimError(f"{method} {path}: {message}") from None
        except (urllib.error.URLError, OSError) as err:
            raise VcsimError(f"cannot reach the lab control endpoint {self.url}: {err}") from None

    def write(
        self,
        vm: str,
        disk_key: int,
        offset: int,
        data: bytes | None = None,
        length: int | None = None,
        pattern: str | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Write `data`, or `length` bytes of `pattern` ("random" with `seed`, or "zero"), at `offset`."""
        body: dict[str, Any] = {"offset": offset}
        if data is not None:
            if length is not None or pattern is not None:
                raise ValueError("give either data or length+pattern")
            body["data"] = base64.b64encode(data).decode()
        else:
            if length is None:
                raise ValueError("give data, or length (with pattern)")
            body |= {"length": length, "pattern": pattern or "random", "seed": seed or 0}
        return self._call("POST", f"/vms/{vm}/disks/{disk_key}/write", body)

    def reset_cbt(self, vm: str) -> dict[str, Any]:
        """Start a new CBT epoch on every disk of `vm`: earlier change IDs become invalid."""
        return self._call("POST", f"/vms/{vm}/cbt/reset")

    def set_consolidation_needed(self, vm: str, value: bool = True) -> dict[str, Any]:
        """Set `runtime.consolidationNeeded` on `vm`, as vSphere does when a snapshot removal left delta
        disks behind; `ConsolidateVMDisks_Task` clears it (unless `consolidate-fails` is armed)."""
        return self._call("PUT", f"/vms/{vm}/consolidation-needed", {"value": bool(value)})

    def set_fault(self, name: str, **params: Any) -> dict[str, Any]:
        """Arm a fault switch; params: vm, count, seconds, after_bytes (or afterBytes)."""
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        if "after_bytes" in params:
            params["afterBytes"] = params.pop("after_bytes")
        return self._call("PUT", f"/faults/{name}", params)

    def clear_fault(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", f"/faults/{name}")

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "/faults")

    def vms(self) -> list[dict[str, Any]]:
        return self._call("GET", "/vms")
