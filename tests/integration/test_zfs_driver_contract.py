"""The ZfsDriver contract: every driver behaves the same on a real pool.

Backends: the CLI on zfs-fuse (the lab's pool), the CLI and pyzfs on kernel OpenZFS in the lab VM (driven
over ssh, as an appliance is; pyzfs runs in the VM, where /dev/zfs is), and pyzfs on this machine wherever
/dev/zfs exists. Files inside datasets are reached through the backend too: on OpenZFS they are in the VM.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.adapters.zfs import pyzfs_unavailable_reason, select_driver
from reconciler.adapters.zfs.base import ZfsDriver, ZfsError
from reconciler.adapters.zfs.cli import CliZfsDriver
from reconciler.adapters.zfs.runner import run
from reconciler.lab.openzfs_vm import OpenZfsVm, OpenZfsVmError
from reconciler.lab.remote_driver import RemoteDriver
from tests.fixtures.openzfs import OPENZFS, OPENZFS_POOL

pytestmark = pytest.mark.lab

DISKS_JSON = json.dumps(
    [{"key": 2000, "changeId": "52 3c 7e/17", "capacity": 4294967296,
      "backing": "[ds1] web-01/web \"01\".vmdk", "sha256": None}],
    separators=(",", ":"),
)
_dataset_numbers = itertools.count()


@dataclass
class Backend:
    """A driver, the pool it works on, and how to reach files inside its datasets."""

    driver: ZfsDriver
    pool: str
    admin: CliZfsDriver  # makes and removes the per-test dataset, whatever the driver under test
    write_bytes: Callable[[str, bytes], None]
    read_bytes: Callable[[str], bytes]
    is_dir: Callable[[str], bool]
    openzfs: bool  # lz4/zstd, native encryption; zfs-fuse (pool version 23) has neither

    def zfs(self, *args: str) -> None:
        """Run `zfs ARGS` as the administrator would, outside the driver under test."""
        run([self.admin.zfs, *args], via=self.admin.via)


def _local(driver: ZfsDriver, pool: str) -> Backend:
    return Backend(driver, pool, CliZfsDriver(), lambda p, b: Path(p).write_bytes(b),
                   lambda p: Path(p).read_bytes(), lambda p: Path(p).is_dir(), openzfs=False)


def _in_vm(driver: ZfsDriver, vm: OpenZfsVm) -> Backend:
    def is_dir(path: str) -> bool:
        return vm.run(["test", "-d", path], check=False).returncode == 0

    return Backend(driver, OPENZFS_POOL, CliZfsDriver(via=vm.ssh), vm.write_bytes, vm.read_bytes, is_dir,
                   openzfs=True)


@pytest.fixture(scope="module")
def vm_pyzfs(openzfs_vm: OpenZfsVm) -> Iterator[RemoteDriver]:
    driver = RemoteDriver(openzfs_vm.ssh, "pyzfs")
    yield driver
    driver.close()


@pytest.fixture(params=[
    "cli-zfs-fuse",
    "pyzfs-local",
    pytest.param("cli-openzfs", marks=OPENZFS),
    pytest.param("pyzfs-openzfs", marks=OPENZFS),
])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "cli-zfs-fuse":
        return _local(CliZfsDriver(), request.getfixturevalue("zpool").name)
    if request.param == "pyzfs-local":
        reason = pyzfs_unavailable_reason()
        if reason:
            pytest.skip(f"pyzfs driver cannot run on this machine: {reason} (it runs in the OpenZFS VM)")
        from reconciler.adapters.zfs.pyzfs import PyZfsDriver

        return _local(PyZfsDriver(), request.getfixturevalue("zpool").name)
    vm: OpenZfsVm = request.getfixturevalue("openzfs_vm")
    if request.param == "cli-openzfs":
        return _in_vm(CliZfsDriver(via=vm.ssh), vm)
    return _in_vm(request.getfixturevalue("vm_pyzfs"), vm)


@pytest.fixture
def driver(backend: Backend) -> ZfsDriver:
    return backend.driver


@pytest.fixture
def zfs_dataset(backend: Backend) -> Iterator[str]:
    """A fresh, empty child dataset of the backend's pool, destroyed with its snapshots afterwards."""
    name = f"{backend.pool}/c{next(_dataset_numbers)}"
    backend.admin.create_dataset(name)
    yield name
    with contextlib.suppress(ZfsError, OpenZfsVmError):
        backend.admin.destroy_dataset(name, recursive=True)


def mountpoint_of(driver: ZfsDriver, dataset: str) -> str:
    (info,) = [d for d in driver.list_datasets(dataset) if d.name == dataset]
    assert info.mountpoint is not None
    return info.mountpoint


def test_driver_satisfies_the_protocol(driver):
    assert isinstance(driver, ZfsDriver)


def test_create_dataset_with_user_properties_is_listed_with_them(driver, backend, zfs_dataset):
    child = f"{zfs_dataset}/vm1"
    driver.create_dataset(child, {"reconciler:managed": "true", "reconciler:vm-name": "web 01"})
    wanted = ["reconciler:managed", "reconciler:vm-name"]
    listed = {d.name: d for d in driver.list_datasets(zfs_dataset, wanted)}
    assert set(listed) == {zfs_dataset, child}
    assert listed[child].properties == {"reconciler:managed": "true", "reconciler:vm-name": "web 01"}
    assert listed[zfs_dataset].properties == {}
    assert listed[child].used > 0 and listed[child].referenced > 0
    assert listed[child].mountpoint and backend.is_dir(listed[child].mountpoint)


def test_inherited_user_properties_are_not_reported_as_the_childs_own(driver, zfs_dataset):
    driver.set_properties(zfs_dataset, {"reconciler:policy": "gold"})
    driver.create_dataset(f"{zfs_dataset}/child")
    listed = {d.name: d.properties for d in driver.list_datasets(zfs_dataset, ["reconciler:policy"])}
    assert listed == {zfs_dataset: {"reconciler:policy": "gold"}, f"{zfs_dataset}/child": {}}


def test_property_values_round_trip_exactly_including_json_with_spaces_and_quotes(driver, zfs_dataset):
    values = {
        "reconciler:disks": DISKS_JSON,
        "reconciler:vm-name": "Ünïcode name  with  double spaces",
        "reconciler:policy": "it's \"quoted\" = yes",
    }
    driver.set_properties(zfs_dataset, values)
    (info,) = driver.list_datasets(zfs_dataset, list(values))
    assert info.properties == values
    assert json.loads(info.properties["reconciler:disks"])[0]["changeId"] == "52 3c 7e/17"


def test_values_that_would_break_listings_are_refused_before_zfs_sees_them(driver, zfs_dataset):
    with pytest.raises(ZfsError, match="tab or newline"):
        driver.set_properties(zfs_dataset, {"reconciler:vm-name": "a\tb"})
    with pytest.raises(ZfsError, match="8191"):
        driver.set_properties(zfs_dataset, {"reconciler:disks": "x" * 9000})


def test_inherit_property_removes_a_local_user_property(driver, zfs_dataset):
    driver.set_properties(zfs_dataset, {"reconciler:dirty": "20260101T000000Z-abcdef"})
    driver.inherit_property(zfs_dataset, "reconciler:dirty")
    (info,) = driver.list_datasets(zfs_dataset, ["reconciler:dirty"])
    assert info.properties == {}


def test_snapshot_carries_its_own_properties_and_not_its_datasets(driver, zfs_dataset):
    driver.set_properties(zfs_dataset, {"reconciler:managed": "true", "reconciler:dirty": "run-1"})
    driver.snapshot(f"{zfs_dataset}@reconciler-1", {"reconciler:status": "complete",
                                                    "reconciler:disks": DISKS_JSON})
    (snap,) = driver.list_snapshots(zfs_dataset, ["reconciler:managed", "reconciler:dirty",
                                                 "reconciler:status", "reconciler:disks"])
    assert snap.name == f"{zfs_dataset}@reconciler-1"
    assert snap.dataset == zfs_dataset and snap.short_name == "reconciler-1"
    assert snap.properties == {"reconciler:status": "complete", "reconciler:disks": DISKS_JSON}
    assert snap.userrefs == 0
    assert snap.created > 1_600_000_000


def test_list_snapshots_covers_every_dataset_below_in_creation_order(driver, zfs_dataset):
    for vm in ("a", "b"):
        driver.create_dataset(f"{zfs_dataset}/{vm}")
        for n in range(3):
            driver.snapshot(f"{zfs_dataset}/{vm}@s{n}")
    snaps = driver.list_snapshots(zfs_dataset)
    assert [s.name for s in snaps if s.dataset.endswith("/a")] == [f"{zfs_dataset}/a@s{n}" for n in range(3)]
    assert [s.name for s in snaps if s.dataset.endswith("/b")] == [f"{zfs_dataset}/b@s{n}" for n in range(3)]
    assert all("@" not in d.name for d in driver.list_datasets(zfs_dataset))


def test_snapshot_whose_properties_cannot_be_set_is_not_left_behind(driver, zfs_dataset):
    with pytest.raises(ZfsError):
        # `used` is read-only: the property step fails after (zfs-fuse) or with (libzfs_core) creation.
        driver.snapshot(f"{zfs_dataset}@half", {"reconciler:status": "complete", "used": "1"})
    assert not driver.exists(f"{zfs_dataset}@half")
    assert driver.list_snapshots(zfs_dataset) == []


def test_a_hold_is_counted_in_userrefs_and_blocks_destroy_until_released(driver, zfs_dataset):
    snap = f"{zfs_dataset}@held"
    driver.snapshot(snap)
    driver.hold(snap, "reconciler-test")
    (info,) = driver.list_snapshots(zfs_dataset)
    assert info.userrefs == 1
    with pytest.raises(ZfsError, match=r"held|busy"):
        driver.destroy_snapshot(snap)
    assert driver.exists(snap)
    driver.release(snap, "reconciler-test")
    driver.destroy_snapshot(snap)
    assert not driver.exists(snap)


def test_release_of_an_unknown_tag_is_an_error(driver, zfs_dataset):
    driver.snapshot(f"{zfs_dataset}@s")
    with pytest.raises(ZfsError):
        driver.release(f"{zfs_dataset}@s", "never-held")


def test_destroy_snapshots_removes_a_batch_and_keeps_the_rest(driver, zfs_dataset):
    names = [f"{zfs_dataset}@s{n}" for n in range(5)]
    for name in names:
        driver.snapshot(name)
    driver.destroy_snapshots(names[:3])
    assert [s.name for s in driver.list_snapshots(zfs_dataset)] == names[3:]


def test_destroy_snapshot_refuses_a_dataset_name(driver, zfs_dataset):
    with pytest.raises(ZfsError, match="not a snapshot name"):
        driver.destroy_snapshot(zfs_dataset)
    assert driver.exists(zfs_dataset)


def test_rollback_restores_the_live_image_to_the_latest_snapshot(driver, backend, zfs_dataset):
    image = f"{mountpoint_of(driver, zfs_dataset)}/disk-2000.raw"
    backend.write_bytes(image, b"good")
    driver.snapshot(f"{zfs_dataset}@good")
    backend.write_bytes(image, b"half-written backup")
    driver.rollback(f"{zfs_dataset}@good")
    assert backend.read_bytes(image) == b"good"


def test_rollback_to_an_older_snapshot_is_refused(driver, zfs_dataset):
    driver.snapshot(f"{zfs_dataset}@old")
    driver.snapshot(f"{zfs_dataset}@new")
    with pytest.raises(ZfsError):
        driver.rollback(f"{zfs_dataset}@old")
    assert driver.exists(f"{zfs_dataset}@new")


def test_clone_shows_the_snapshot_contents_and_is_destroyable_at_once(driver, backend, zfs_dataset):
    backend.write_bytes(f"{mountpoint_of(driver, zfs_dataset)}/disk-2000.raw", b"frozen")
    driver.snapshot(f"{zfs_dataset}@s")
    driver.clone(f"{zfs_dataset}@s", f"{zfs_dataset}-restore")
    try:
        assert backend.read_bytes(f"{mountpoint_of(driver, f'{zfs_dataset}-restore')}/disk-2000.raw") == b"frozen"
    finally:
        driver.destroy_dataset(f"{zfs_dataset}-restore")  # right after creation: "busy" is retried
    assert not driver.exists(f"{zfs_dataset}-restore")


def test_destroy_dataset_right_after_creating_it_succeeds(driver, backend, zfs_dataset):
    for n in range(3):
        name = f"{zfs_dataset}/short-lived{n}"
        driver.create_dataset(name)
        backend.write_bytes(f"{mountpoint_of(driver, name)}/f", b"x")
        driver.destroy_dataset(name)
        assert not driver.exists(name)


def test_destroy_dataset_recursive_takes_children_and_snapshots(driver, zfs_dataset):
    parent = f"{zfs_dataset}/repo"
    driver.create_dataset(parent)
    driver.create_dataset(f"{parent}/vm")
    driver.snapshot(f"{parent}/vm@s")
    with pytest.raises(ZfsError):
        driver.destroy_dataset(parent)
    driver.destroy_dataset(parent, recursive=True)
    assert not driver.exists(parent)


def test_exists_tells_datasets_and_snapshots_apart_from_missing_ones(driver, zfs_dataset):
    driver.snapshot(f"{zfs_dataset}@s")
    assert driver.exists(zfs_dataset)
    assert driver.exists(f"{zfs_dataset}@s")
    assert not driver.exists(f"{zfs_dataset}/nope")
    assert not driver.exists(f"{zfs_dataset}@nope")


def test_pool_free_is_a_byte_count(driver, backend):
    assert driver.pool_free(backend.pool) > 1 << 30


def test_errors_name_the_command_and_what_zfs_said(driver, zfs_dataset):
    with pytest.raises(ZfsError) as caught:
        driver.list_snapshots(f"{zfs_dataset}/missing")
    assert "does not exist" in str(caught.value)
    assert caught.value.command


def test_new_vm_dataset_gets_the_repositorys_compression_and_recordsize(driver, backend, zfs_dataset):
    compression = "zstd" if backend.openzfs else "lzjb"  # zfs-fuse knows lzjb and gzip only
    child = f"{zfs_dataset}/vm1"
    driver.create_dataset(child, {"compression": compression, "recordsize": "64K", "reconciler:managed": "true"})
    (info,) = [d for d in driver.list_datasets(child, ["compression", "recordsize"]) if d.name == child]
    assert info.properties["compression"] == compression
    assert info.properties["recordsize"] in ("65536", "64K")
    assert info.mounted


def test_an_unsupported_compression_is_refused_with_what_zfs_accepts(driver, backend, zfs_dataset):
    if backend.openzfs:
        pytest.skip("kernel OpenZFS 2.1 knows every compression the policy schema allows")
    with pytest.raises(ZfsError, match=r"compression.*must be one of"):
        driver.create_dataset(f"{zfs_dataset}/vm1", {"compression": "zstd"})


def test_encrypted_dataset_reads_its_key_file_itself_and_is_its_own_encryption_root(driver, backend, zfs_dataset):
    if not backend.openzfs:
        pytest.skip("zfs-fuse has no native encryption")
    key = f"/tmp/{zfs_dataset.replace('/', '-')}.key"
    backend.write_bytes(key, b"correct horse battery staple\n")
    child = f"{zfs_dataset}/vm1"
    driver.create_dataset(child, {"encryption": "aes-256-gcm", "keyformat": "passphrase",
                                  "keylocation": f"file://{key}", "reconciler:managed": "true"})
    wanted = ["encryption", "encryptionroot", "keystatus", "keylocation"]
    (info,) = [d for d in driver.list_datasets(child, [*wanted, "reconciler:managed"]) if d.name == child]
    assert info.properties == {"encryption": "aes-256-gcm", "encryptionroot": child, "keystatus": "available",
                               "keylocation": f"file://{key}", "reconciler:managed": "true"}
    backend.write_bytes(f"{mountpoint_of(driver, child)}/disk-2000.raw", b"secret guest data")


def test_mount_loads_an_unloaded_key_from_its_keylocation_then_mounts(driver, backend, zfs_dataset):
    if not backend.openzfs:
        pytest.skip("zfs-fuse has no native encryption")
    key = f"/tmp/{zfs_dataset.replace('/', '-')}.key"
    backend.write_bytes(key, b"0123456789abcdef" * 4)
    child = f"{zfs_dataset}/vm1"
    driver.create_dataset(child, {"encryption": "aes-128-gcm", "keyformat": "hex", "keylocation": f"file://{key}"})
    image = f"{mountpoint_of(driver, child)}/disk-2000.raw"
    backend.write_bytes(image, b"after the reboot")
    backend.zfs("unmount", child)
    backend.zfs("unload-key", child)  # as after an import or a reboot
    (info,) = [d for d in driver.list_datasets(child) if d.name == child]
    assert not info.mounted
    driver.mount(child)
    (info,) = [d for d in driver.list_datasets(child) if d.name == child]
    assert info.mounted and backend.read_bytes(image) == b"after the reboot"


def test_mount_of_a_mounted_dataset_is_a_no_op(driver, backend, zfs_dataset):
    driver.mount(zfs_dataset)
    (info,) = [d for d in driver.list_datasets(zfs_dataset) if d.name == zfs_dataset]
    assert info.mounted


def test_auto_selects_the_cli_without_dev_zfs_and_explicit_pyzfs_explains_why_not():
    if pyzfs_unavailable_reason() is None:
        pytest.skip("this machine can run pyzfs")
    assert select_driver("auto").name == "cli"
    with pytest.raises(ZfsError, match=r"/dev/zfs|libzfs_core"):
        select_driver("pyzfs")
    with pytest.raises(ZfsError, match="unknown ZFS driver"):
        select_driver("fast")
