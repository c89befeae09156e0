"""A `ZfsDriver` that runs on another machine: the pyzfs driver needs libzfs_core *in process* on the host
that has /dev/zfs, so the lab runs it inside the OpenZFS VM and forwards each call over ssh.

`python -m reconciler.lab.remote_driver DRIVER` (in the VM) serves one JSON request per line on stdin and
answers on stdout; `RemoteDriver` (on the host) is the proxy. Every call is a real libzfs_core call in the
VM; only the transport is new. Lab-only: the product runs its driver on the appliance itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from reconciler.adapters.zfs.base import DatasetInfo, SnapshotInfo, ZfsDriver, ZfsError

METHODS = ("list_datasets", "list_snapshots", "create_dataset", "set_properties", "inherit_property",
           "snapshot", "destroy_snapshot", "destroy_snapshots", "rollback", "hold", "release", "clone",
           "destroy_dataset", "exists", "mount", "pool_free")


def _encode(value: Any) -> Any:
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, DatasetInfo):
        return {"__dataset__": asdict(value)}
    if isinstance(value, SnapshotInfo):
        return {"__snapshot__": asdict(value)}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict) and "__dataset__" in value:
        return DatasetInfo(**value["__dataset__"])
    if isinstance(value, dict) and "__snapshot__" in value:
        return SnapshotInfo(**value["__snapshot__"])
    return value


def serve(driver: ZfsDriver) -> None:
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["method"] not in METHODS:
                raise ZfsError(f"not a ZfsDriver method: {request['method']!r}")
            result = getattr(driver, request["method"])(*request["args"])
            answer: dict[str, Any] = {"ok": _encode(result)}
        except ZfsError as error:
            answer = {"error": {"message": error.message, "command": list(error.command), "stderr": error.stderr}}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


class RemoteDriver:
    """`RemoteDriver([*vm.ssh], "pyzfs")`: the named driver, running where `via` leads."""

    def __init__(self, via: Sequence[str], driver: str = "pyzfs", python: str = sys.executable) -> None:
        self.name = driver
        # The VM sees the host's root, so the host's interpreter (and this package) runs there unchanged.
        command = f"{python} -m reconciler.lab.remote_driver {driver}"
        self._process = subprocess.Popen([*via, command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, bufsize=1)
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def _call(self, method: str, *args: Any) -> Any:
        assert self._process.stdin is not None and self._process.stdout is not None
        with self._lock:
            try:
                self._process.stdin.write(json.dumps({"method": method, "args": list(args)}) + "\n")
                self._process.stdin.flush()
                line = self._process.stdout.readline()
            except BrokenPipeError:
                line = ""
            if not line:
                stderr = self._process.stderr.read() if self._process.stderr else ""
                raise ZfsError(f"the remote {self.name} driver went away", (method,), stderr)
        answer = json.loads(line)
        if "error" in answer:
            error = answer["error"]
            raise ZfsError(error["message"], error["command"], error["stderr"])
        return _decode(answer["ok"])

    def list_datasets(self, parent: str, props: Sequence[str] = ()) -> list[DatasetInfo]:
        return self._call("list_datasets", parent, list(props))

    def list_snapshots(self, dataset: str, props: Sequence[str] = ()) -> list[SnapshotInfo]:
        return self._call("list_snapshots", dataset, list(props))

    def create_dataset(self, name: str, props: Mapping[str, str] | None = None) -> None:
        self._call("create_dataset", name, dict(props or {}))

    def set_properties(self, name: str, props: Mapping[str, str]) -> None:
        self._call("set_properties", name, dict(props))

    def inherit_property(self, name: str, prop: str) -> None:
        self._call("inherit_property", name, prop)

    def snapshot(self, name: str, props: Mapping[str, str] | None = None) -> None:
        self._call("snapshot", name, dict(props or {}))

    def destroy_snapshot(self, name: str) -> None:
        self._call("destroy_snapshot", name)

    def destroy_snapshots(self, names: Sequence[str]) -> None:
        self._call("destroy_snapshots", list(names))

    def rollback(self, snapshot: str) -> None:
        self._call("rollback", snapshot)

    def hold(self, snapshot: str, tag: str) -> None:
        self._call("hold", snapshot, tag)

    def release(self, snapshot: str, tag: str) -> None:
        self._call("release", snapshot, tag)

    def clone(self, snapshot: str, name: str) -> None:
        self._call("clone", snapshot, name)

    def destroy_dataset(self, name: str, recursive: bool = False) -> None:
        self._call("destroy_dataset", name, recursive)

    def exists(self, name: str) -> bool:
        return bool(self._call("exists", name))

    def mount(self, name: str) -> None:
        self._call("mount", name)

    def pool_free(self, pool: str) -> int:
        return int(self._call("pool_free", pool))


def main() -> None:
    from reconciler.adapters.zfs import select_driver

    serve(select_driver(sys.argv[1] if len(sys.argv) > 1 else "pyzfs"))


if __name__ == "__main__":
    main()
