"""An appliance on kernel OpenZFS: reconciler runs inside the lab's OpenZFS VM as it runs on a real appliance
(`driver: auto` picks pyzfs there, /dev/zfs exists), reaches the lab's vCenter over the network, and backs a
VM up into an encrypted, zstd-compressed dataset. The backup is byte-for-byte the VM's disk; after the key is
unloaded (as after a reboot) the next apply loads it from its key file and backs up incrementally."""

from __future__ import annotations

import datetime as dt
import json
import shlex
from typing import Any

import pytest

from reconciler.lab.lab import Lab
from reconciler.lab.openzfs_vm import OpenZfsVm
from tests.fixtures.openzfs import OPENZFS, OPENZFS_POOL
from tests.integration.backup_world import POLICIES, RECONCILER, World, make_world

pytestmark = [pytest.mark.lab, OPENZFS]

VM = "app-01"
DATASET = f"{OPENZFS_POOL}/appliance"
HOME = "/run/appliance"  # the appliance's policies, state and key file, in the VM (never on the host)
KEY_FILE = f"{HOME}/tank.key"
REPOSITORY = f"""\
spec:
  dataset: {DATASET}
  driver: auto
  compression: zstd
  encryption:
    keyFrom: {{file: {KEY_FILE}}}
"""


def _install_appliance(vm: OpenZfsVm, lab: Lab) -> None:
    """Policies as an operator writes them on the appliance: the lab's vCenter is the VM's gateway."""
    vm.run(["mkdir", "-p", f"{HOME}/policies"])
    connections = (lab.state_dir / "connections.yaml").read_text().replace("127.0.0.1:", "10.0.2.2:")
    vm.write_bytes(f"{HOME}/policies/connections.yaml", connections.encode())
    rest = POLICIES.format(dataset=DATASET, names=VM, quiesce="preferred", keep_last=3)
    rest = rest.replace(f"spec: {{dataset: {DATASET}, driver: cli}}\n", REPOSITORY)
    assert "encryption" in rest
    vm.write_bytes(f"{HOME}/policies/rest.yaml", rest.encode())
    vm.write_bytes(KEY_FILE, b"correct horse battery staple\n")
    vm.run(["chmod", "600", KEY_FILE])


def _apply_in_vm(vm: OpenZfsVm, world: World, at: dt.datetime) -> list[dict[str, Any]]:
    env = {"RECONCILER_LAB_PASSWORD": world.state.sites["vcenter"].password, "RECONCILER_RETRY_BACKOFF": "0.2"}
    line = " ".join([
        "cd", HOME, "&&", "env", *(f"{k}={shlex.quote(v)}" for k, v in env.items()),
        RECONCILER, "apply", "policies", "--state-dir", "state", "--auto-approve", "--json",
        "--at", at.isoformat().replace("+00:00", "Z"),
    ])
    done = vm.run(line, check=False, timeout=900)  # Python under TCG: minutes, not seconds
    events = [json.loads(row) for row in done.stdout.splitlines() if row.startswith("{")]
    if done.returncode != 0:  # the plan's own words say why (a connection it could not observe, …)
        plan = vm.run(line.replace(" apply ", " plan ").replace(" --auto-approve --json", ""), check=False,
                      timeout=900)
        notes = "\n".join(json.dumps(e) for e in events if e["event"] == "note")
        pytest.fail(f"apply in the appliance exited {done.returncode}: {done.stderr}{notes}\n{plan.stdout}")
    return events


def _get(vm: OpenZfsVm, name: str, *props: str) -> list[str]:
    return vm.run(["zfs", "get", "-H", "-o", "value", ",".join(props), name]).stdout.split("\n")[: len(props)]


def _backups(vm: OpenZfsVm, dataset: str) -> list[str]:
    listed = vm.run(["zfs", "list", "-H", "-t", "snapshot", "-o", "name,reconciler:status", "-s", "creation",
                     "-r", dataset]).stdout
    return [row.split("\t")[0] for row in listed.splitlines() if row.endswith("\tcomplete")]


def _image_sha(vm: OpenZfsVm, snapshot: str, key: int) -> str:
    dataset, _, snap = snapshot.partition("@")
    (mountpoint,) = _get(vm, dataset, "mountpoint")
    path = f"{mountpoint}/.zfs/snapshot/{snap}/disk-{key}.raw"
    return vm.run(["sha256sum", path], timeout=900).stdout.split()[0]


def test_an_appliance_on_openzfs_backs_up_into_an_encrypted_pool_and_reloads_its_key(lab, openzfs_vm,
                                                                                   tmp_path) -> None:
    world = make_world(lab, tmp_path, "openzfs-appliance", (VM,))  # the source side: vCenter, the disk
    _install_appliance(openzfs_vm, lab)
    dataset = f"{DATASET}/{world.instance_uuid(VM)}"
    at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)

    events = _apply_in_vm(openzfs_vm, world, at)
    assert any(e["event"] == "action-done" and e.get("action") == "backup" and e.get("vm") == VM for e in events)
    assert _get(openzfs_vm, dataset, "encryption", "encryptionroot", "keystatus", "compression") == [
        "aes-256-gcm", dataset, "available", "zstd"]
    (first,) = _backups(openzfs_vm, dataset)
    assert _get(openzfs_vm, first, "reconciler:kind") == ["full"]
    assert _image_sha(openzfs_vm, first, 2000) == world.source_sha(VM, 2000)
    assert world.vmware_snapshots(VM) == []

    openzfs_vm.run(["zfs", "unmount", dataset])
    openzfs_vm.run(["zfs", "unload-key", dataset])  # as after a reboot: the data is unreadable without the key
    assert _get(openzfs_vm, dataset, "keystatus", "mounted") == ["unavailable", "no"]

    _apply_in_vm(openzfs_vm, world, at + dt.timedelta(hours=2))
    assert _get(openzfs_vm, dataset, "keystatus", "mounted") == ["available", "yes"]
    backups = _backups(openzfs_vm, dataset)
    assert len(backups) == 2 and backups[0] == first
    assert _get(openzfs_vm, backups[1], "reconciler:kind") == ["incremental"]
    assert _image_sha(openzfs_vm, backups[1], 2000) == world.source_sha(VM, 2000)
    assert world.vmware_snapshots(VM) == []
