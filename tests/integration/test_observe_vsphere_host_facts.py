"""Per-host facts read from the simulated vCenter: the management link's speed and each host's own licence."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.adapters.vsphere.collect import collect_inventory
from reconciler.adapters.vsphere.parse import to_observed
from reconciler.adapters.vsphere.session import VsphereSession
from reconciler.lab import inventory as inv
from tests.fixtures.vsphere import start_site

pytestmark = pytest.mark.lab


def test_management_speed_is_the_management_uplinks_not_the_fastest_nic(tmp_path: Path) -> None:
    # vcsim's hosts: vmk0 (management) → "Management Network" → vSwitch0 → vmnic0; vmnic1 is unused
    inventory = inv.parse({"mode": "vcenter", "hosts": [
        {"name": "esx-a", "nicSpeedsMb": {"vmnic0": 1000, "vmnic1": 25000}},
    ]})
    site = start_site(inventory, tmp_path / "state")
    try:
        e = site.endpoints
        with VsphereSession(e.sdk, e.username, e.password, thumbprint=e.thumbprint_sha256) as session:
            state, _ = to_observed("vc", collect_inventory(session))
    finally:
        site.process.stop()
    assert [(h.name, h.mgmt_nic_speed_mbps) for h in state.hosts] == [("esx-a", 1000)]


def test_each_vcenter_host_has_its_own_licence_so_a_free_one_is_seen(tmp_path: Path) -> None:
    inventory = inv.parse({"mode": "vcenter", "hosts": [{"name": "esx-a"}, {"name": "esx-b", "license": "esxi-free"}]})
    site = start_site(inventory, tmp_path / "state")
    try:
        e = site.endpoints
        with VsphereSession(e.sdk, e.username, e.password, thumbprint=e.thumbprint_sha256) as session:
            state, _ = to_observed("vc", collect_inventory(session))
    finally:
        site.process.stop()
    assert state.license_edition == "vcenter-standard"
    assert {h.name: h.license_edition for h in state.hosts} == {"esx-a": "esx-enterprise-plus", "esx-b": "esxi-free"}
