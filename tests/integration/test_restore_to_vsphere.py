"""`reconciler restore --to-vsphere`: a backup becomes a new VM in the (simulated) vCenter, with one disk
of the right capacity per backed-up disk and the backup's bytes in each disk's flat file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pyVim.connect import Disconnect
from pyVmomi import vim

from tests.fixtures.vsphere import VsphereSite
from tests.integration.restore_world import (
    EXT4_KEY,
    NTFS_KEY,
    RUN1,
    VM_NAME,
    World,
    reconciler,
    same_bytes,
    world_fixture,  # noqa: F401  (the session fixture `world`)
)

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("restore")]  # one shared backup world
PASSWORD_ENV = "RECONCILER_RESTORE_TEST_PASSWORD"


def connection_policy(site: VsphereSite, directory: Path) -> Path:
    directory.mkdir()
    (directory / "connections.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Connection\nmetadata:\n  name: target-vc\nspec:\n"
        f"  address: {site.endpoints.sdk}\n  user: {site.endpoints.username}\n"
        f"  passwordFrom:\n    env: {PASSWORD_ENV}\n  thumbprint: \"{site.endpoints.thumbprint_sha256}\"\n"
    )
    return directory


def test_a_backup_becomes_a_new_vm_with_its_disks_and_bytes(world: World, vcenter: VsphereSite,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, vcenter.endpoints.password)
    policies = connection_policy(vcenter, tmp_path / "policies")
    result = reconciler("restore", VM_NAME, "--backup", RUN1, "--to-vsphere", "target-vc", "--name", "restored-fs",
                        "--policies", str(policies), "--repository", world.repository)
    moref = re.search(r"created VM restored-fs: (vm-\d+)", result.stdout)
    assert moref, result.stdout
    si = vcenter.connect()
    try:
        vm = vim.VirtualMachine(moref.group(1), si._stub)
        assert vm.name == "restored-fs" and vm.runtime.powerState == "poweredOff"
        disks = sorted((d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)),
                       key=lambda d: d.unitNumber)
        sources = [world.then / f"disk-{key}.raw" for key in (NTFS_KEY, EXT4_KEY)]
        assert [d.capacityInBytes for d in disks] == [s.stat().st_size for s in sources]
        datastore_dir = Path(vcenter.endpoints.datastore_dir)
        for disk, source in zip(disks, sources, strict=True):
            relative = disk.backing.fileName.split("] ", 1)[1].removesuffix(".vmdk") + "-flat.vmdk"
            assert same_bytes(datastore_dir / relative, source)
        vm.Destroy_Task()
    finally:
        Disconnect(si)


def test_an_existing_name_is_refused_before_anything_is_created(
    world: World, vcenter: VsphereSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, vcenter.endpoints.password)
    policies = connection_policy(vcenter, tmp_path / "policies")
    taken = vcenter.endpoints.vms[0].name
    result = reconciler("restore", VM_NAME, "--to-vsphere", "target-vc", "--name", taken,
                        "--policies", str(policies), "--repository", world.repository, check=False)
    assert result.returncode == 1 and "already exists" in result.stderr


def test_an_unknown_connection_is_a_usage_error(world: World, vcenter: VsphereSite, tmp_path: Path) -> None:
    policies = connection_policy(vcenter, tmp_path / "policies")
    result = reconciler("restore", VM_NAME, "--to-vsphere", "nope", "--policies", str(policies),
                        "--repository", world.repository, check=False)
    assert result.returncode == 2 and "unknown connection 'nope'" in result.stderr
