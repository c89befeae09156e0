"""The wire-level PropertyCollector parser and the host facts read from it, on captured SOAP.

`data/vsphere/vcsim-retrieve-host.xml`: the RetrievePropertiesEx answer of the lab's vcsim-lab (govmomi
0.24 VPX model) for one host with `HOST_PROPERTIES`, inventory `nicSpeedsMb: {vmnic0: 1000, vmnic1: 25000}`,
captured through `fastpc._Wire.call` and pretty-printed.
"""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from reconciler.adapters.vsphere import fastpc
from reconciler.adapters.vsphere.parse import _management_vnic, _mgmt_speed

DATA = Path(__file__).parent / "data" / "vsphere"


def host_props() -> dict:
    root = etree.fromstring((DATA / "vcsim-retrieve-host.xml").read_bytes())
    body = root.find("{http://schemas.xmlsoap.org/soap/envelope/}Body")
    ((kind, _moref, props),) = list(fastpc._objects(body[0]))
    assert kind == "HostSystem"
    return props


def test_captured_host_names_vmk0_as_its_management_vmknic():
    assert _management_vnic(host_props()) == "vmk0"


def test_management_speed_is_the_uplink_of_the_management_vswitch_not_the_fastest_nic():
    props = host_props()
    assert {p.device: p.linkSpeed.speedMb for p in fastpc.as_list(props["config.network.pnic"])} == {
        "vmnic0": 1000, "vmnic1": 25000}
    assert _mgmt_speed(props) == 1000


def test_without_a_path_to_the_uplink_the_slowest_linked_nic_counts():
    props = host_props()
    del props["config.network.vswitch"]
    assert _mgmt_speed(props) == 1000
