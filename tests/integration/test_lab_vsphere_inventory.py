"""The lab inventory files: the defaults describe the cases the product must meet; bad files say what is wrong."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.lab import inventory as inv


def test_default_inventories_cover_the_planner_cases(tmp_path: Path) -> None:
    vcenter = inv.default("vcenter", image_dir=tmp_path)
    assert vcenter.mode is inv.Mode.VCENTER and len(vcenter.hosts) == 3
    assert any(vm.hardware_version < 7 for vm in vcenter.vms)
    assert any(vm.encrypted for vm in vcenter.vms)
    assert any(vm.tools is inv.Tools.NOT_INSTALLED for vm in vcenter.vms)
    assert all(vm.folder and vm.tags for vm in vcenter.vms)
    esxi = inv.default("esxi", image_dir=tmp_path)
    assert esxi.mode is inv.Mode.ESXI and len(esxi.hosts) == 1 and len(esxi.vms) == 2
    assert esxi.license_edition == "esxi-free"


def test_a_vm_of_the_esxi_inventory_reappears_in_vcenter_with_its_instance_uuid(tmp_path: Path) -> None:
    vcenter = {vm.instance_uuid for vm in inv.default("vcenter", image_dir=tmp_path).vms}
    esxi = {vm.instance_uuid for vm in inv.default("esxi", image_dir=tmp_path).vms}
    assert len(vcenter & esxi) == 1


def test_relative_images_resolve_against_the_image_directory(tmp_path: Path) -> None:
    web = inv.default("vcenter", image_dir=tmp_path).vm("web-01")
    assert web.disks[0].image == tmp_path / "web-01-disk0.raw"
    with pytest.raises(inv.InventoryError, match="needs an image directory"):
        inv.default("vcenter")


def test_placeholder_images_are_sparse_and_signed(tmp_path: Path) -> None:
    inventory = inv.default("esxi", image_dir=tmp_path)
    (image,) = inv.write_placeholder_images(inventory)
    assert image.stat().st_size == 1 << 30
    assert image.stat().st_blocks * 512 < 1 << 20  # sparse: almost nothing allocated
    with image.open("rb") as f:
        f.seek(1 << 20)
        assert f.read(40).startswith(inv.placeholder_signature("app-01", 2000))
    assert inv.write_placeholder_images(inventory) == ()  # existing images are kept


def test_json_uses_the_names_vcsim_lab_reads(tmp_path: Path) -> None:
    data = inv.default("vcenter", image_dir=tmp_path).to_json()
    assert set(data) == {"mode", "version", "licenseEdition", "hosts", "vms"}
    assert set(data["vms"][0]) >= {"instanceUuid", "hardwareVersion", "powerState", "tools", "disks"}
    assert data["vms"][0]["disks"][0]["image"] == os.fspath(tmp_path / "web-01-disk0.raw")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mode: cloud\nhosts: [{name: h}]", "mode must be 'vcenter' or 'esxi'"),
        ("mode: esxi\nhosts: [{name: a}, {name: b}]", "exactly one host"),
        ("mode: vcenter\nhosts: []", "at least one host"),
        ("mode: vcenter\nhosts: [{name: h}]\nvms: [{name: a}, {name: a}]", "duplicate VM name 'a'"),
        ("mode: vcenter\nhosts: [{name: h}]\nvms: [{name: a, host: x}]", "unknown host 'x'"),
        ("mode: vcenter\nhosts: [{name: h}]\nvms: [{name: a, disks: [{capacity: 1000}]}]", "multiple of 1024"),
        ("mode: vcenter\nhosts: [{name: h}]\nvms: [{name: a, instanceUuid: nope}]", "not a UUID"),
        ("mode: vcenter\nhosts: [{name: h}]\nvms: [{name: a, tools: broken}]", "broken"),
        ("mode: [", "not valid YAML"),
    ],
)
def test_bad_inventories_say_where_and_why(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    with pytest.raises(inv.InventoryError, match=message) as caught:
        inv.load(path)
    assert str(path) in str(caught.value)
