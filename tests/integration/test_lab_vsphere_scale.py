"""A 1,000-VM vCenter loads quickly enough to test with, and one paged PropertyCollector retrieval reads it all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyVim.connect import Disconnect
from pyVmomi import vim, vmodl

from reconciler.lab import inventory as inv
from tests.fixtures.vsphere import VsphereSite, start_site

pytestmark = pytest.mark.lab

VM_COUNT = 1000
PROPERTIES = [
    "name",
    "config.instanceUuid",
    "config.hardware.device",
    "config.changeTrackingEnabled",
    "runtime.host",
    "runtime.powerState",
    "customValue",
]


@pytest.fixture(scope="module")
def big_vcenter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VsphereSite]:
    root: Path = tmp_path_factory.mktemp("vsphere-scale")
    site = start_site(inv.scaled(VM_COUNT), root / "state")
    try:
        yield site
    finally:
        site.process.stop()


def retrieve_all_vms(content: vim.ServiceInstanceContent, page: int) -> tuple[list, int]:
    """Every VM's PROPERTIES through a ContainerView, paging `page` objects at a time; returns (objects, pages)."""
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    collector = content.propertyCollector
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[
            vmodl.query.PropertyCollector.ObjectSpec(
                obj=view,
                skip=True,
                selectSet=[
                    vmodl.query.PropertyCollector.TraversalSpec(
                        name="view", path="view", skip=False, type=vim.view.ContainerView
                    )
                ],
            )
        ],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vim.VirtualMachine, pathSet=PROPERTIES)],
    )
    result = collector.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=page))
    objects, pages = list(result.objects), 1
    while result.token:
        result = collector.ContinueRetrievePropertiesEx(result.token)
        objects += result.objects
        pages += 1
    view.Destroy()
    return objects, pages


def test_a_thousand_vm_inventory_is_served_whole(big_vcenter: VsphereSite) -> None:
    assert len(big_vcenter.endpoints.vms) == VM_COUNT
    si = big_vcenter.connect()
    try:
        objects, pages = retrieve_all_vms(si.RetrieveContent(), page=250)
    finally:
        Disconnect(si)
    assert pages > 1  # the collector paged, and the client followed the token
    assert len(objects) == VM_COUNT
    by_uuid = {}
    for obj in objects:
        props = {p.name: p.val for p in obj.propSet}
        assert set(props) >= {"name", "config.instanceUuid", "config.hardware.device", "runtime.host"}
        by_uuid[props["config.instanceUuid"]] = props["name"]
    expected = {vm.instance_uuid: vm.name for vm in inv.scaled(VM_COUNT).vms}
    assert by_uuid == expected
