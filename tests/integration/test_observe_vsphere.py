"""Observing vSphere: one pinned session, one PropertyCollector retrieval, the planner's types out."""

from __future__ import annotations

import dataclasses
import ssl

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from reconciler.adapters.vsphere import collect
from reconciler.adapters.vsphere.collect import collect_inventory
from reconciler.adapters.vsphere.parse import to_observed
from reconciler.adapters.vsphere.session import (
    ConnectionFailed,
    Endpoint,
    ThumbprintMismatch,
    VsphereSession,
    peer_certificate,
    pinned_context,
)
from reconciler.core.observed import ApiType, PowerState, ToolsStatus

pytestmark = pytest.mark.lab


def session_for(site, **kwargs) -> VsphereSession:
    e = site.endpoints
    kwargs.setdefault("thumbprint", e.thumbprint_sha256)
    return VsphereSession(e.sdk, e.username, e.password, **kwargs)


@pytest.fixture(scope="module")
def vcenter_world(vcenter):
    with session_for(vcenter) as session:
        state, vms = to_observed("lab-vcenter", collect_inventory(session))
    return state, {vm.name: vm for vm in vms}


def test_vcenter_is_observed_as_a_vcenter_with_its_hosts(vcenter_world):
    state, _ = vcenter_world
    assert state.reachable and state.api_type is ApiType.VCENTER
    assert state.version.startswith("7.0")
    speeds = {h.name: h.mgmt_nic_speed_mbps for h in state.hosts}
    assert speeds["esx-03.lab"] == 1000 and speeds["esx-01.lab"] == 10000


def test_vm_identity_address_and_placement(vcenter_world):
    _, vms = vcenter_world
    web = vms["web-01"]
    assert web.instance_uuid == "50030000-0000-4000-8000-000000000101"
    assert web.id.startswith("vm-")
    assert web.folder == "prod/web"
    assert web.host == "esx-01.lab"
    assert web.power_state is PowerState.ON
    assert web.tags == ("env:prod", "tier:web")


def test_vm_facts_the_planner_diagnoses(vcenter_world):
    _, vms = vcenter_world
    assert vms["web-01"].cbt_enabled
    assert vms["legacy-01"].hw_version == 4
    assert vms["vault-01"].encrypted and not vms["web-01"].encrypted
    assert vms["appliance-01"].tools_status is ToolsStatus.NOT_INSTALLED


def test_disks_carry_key_capacity_and_datastore_backing(vcenter_world):
    _, vms = vcenter_world
    disks = vms["db-01"].disks
    assert [(d.key, d.capacity) for d in disks] == [(2000, 2 * 1024**3), (2001, 1024**3)]
    assert all(d.backing.startswith(f"[{d.datastore}] ") for d in disks)


def test_standalone_esxi_is_observed_as_esxi(esxi):
    with session_for(esxi) as session:
        state, vms = to_observed("lab-esxi", collect_inventory(session))
    assert state.api_type is ApiType.ESXI
    assert len(vms) == len(esxi.inventory.vms)


def test_same_vm_on_esxi_and_vcenter_has_one_identity_and_two_addresses(vcenter_world, esxi):
    _, on_vcenter = vcenter_world
    with session_for(esxi) as session:
        _, on_esxi = to_observed("lab-esxi", collect_inventory(session))
    by_uuid = {vm.instance_uuid: vm for vm in on_esxi}
    moved = on_vcenter["app-01"]
    assert moved.instance_uuid in by_uuid
    assert (by_uuid[moved.instance_uuid].connection, moved.connection) == ("lab-esxi", "lab-vcenter")


def test_sha1_pin_is_accepted_too(vcenter):
    with session_for(vcenter, thumbprint=vcenter.endpoints.thumbprint_sha1) as session:
        assert session.is_vcenter


def test_a_pinned_self_signed_server_at_a_non_loopback_address_is_reached(vcenter):
    """pyVmomi skips verification by itself for `127.0.0.1` only; a real vCenter has another address, and
    its API version discovery (no thumbprint fallback there) must accept the pinned certificate too.
    `::ffff:127.0.0.1` reaches the lab over the IPv4 loopback without pyVmomi recognising it as loopback."""
    e = vcenter.endpoints
    port = e.sdk.rsplit(":", 1)[1].split("/")[0]
    with VsphereSession(f"https://[::ffff:127.0.0.1]:{port}/sdk", e.username, e.password,
                        thumbprint=e.thumbprint_sha256) as session:
        assert session.is_vcenter


def test_a_pinned_connection_trusts_the_pinned_certificate_and_no_other(vcenter):
    e = vcenter.endpoints
    port = int(e.sdk.rsplit(":", 1)[1].split("/")[0])
    context = pinned_context(peer_certificate(Endpoint("https", "127.0.0.1", port, "/sdk")) or b"")
    assert context.verify_mode == ssl.CERT_REQUIRED and not context.check_hostname
    assert len(context.get_ca_certs()) == 1  # no system CA: a CA-signed impostor is refused too


def test_wrong_thumbprint_is_refused_before_any_credential_is_sent(vcenter):
    wrong = ":".join(["AB"] * 32)
    with pytest.raises(ThumbprintMismatch) as err:
        session_for(vcenter, thumbprint=wrong).connect()
    assert err.value.actual_sha256.replace(":", "").lower() == vcenter.endpoints.thumbprint_sha256.replace(
        ":", ""
    ).lower()


def test_no_pin_without_explicit_insecure_is_refused(vcenter):
    with pytest.raises(ConnectionFailed, match="insecure"):
        session_for(vcenter, thumbprint=None)


def test_wrong_password_is_a_clear_connection_failure(vcenter):
    e = vcenter.endpoints
    with pytest.raises(ConnectionFailed, match="login refused"):
        VsphereSession(e.sdk, e.username, "not-the-password", thumbprint=e.thumbprint_sha256).connect()


def test_expired_session_is_renewed_transparently(vcenter):
    with session_for(vcenter) as session:
        session.connect()
        vcenter.control.set_fault("session-expires", count=1)
        try:
            inventory = collect_inventory(session)
        finally:
            vcenter.control.clear_fault("session-expires")
    assert any(o.kind == "VirtualMachine" for o in inventory.objects)


def observe_both_ways(session: VsphereSession, name: str):
    """The wire-level retrieval and pyVmomi's own deserialisation of the same request."""
    fast = collect_inventory(session)
    reference = dataclasses.replace(
        fast,
        objects=tuple(
            session.call(
                lambda si: collect.retrieve_pyvmomi(
                    si, {getattr(vim, kind): paths for kind, paths in collect.KINDS.items()}
                )
            )
        ),
    )
    return to_observed(name, fast), to_observed(name, reference)


@pytest.mark.parametrize("site_name", ["vcenter", "esxi"])
def test_wire_retrieval_observes_exactly_what_pyvmomi_observes(request, site_name):
    site = request.getfixturevalue(site_name)
    si = site.connect()
    vm = si.content.searchIndex.FindByUuid(None, site.inventory.vms[0].instance_uuid, True, True)
    task = vm.CreateSnapshot_Task(name="reconciler-parity", description="", memory=False, quiesce=False)
    WaitForTask(task)
    try:
        with session_for(site) as session:
            fast, reference = observe_both_ways(session, site_name)
    finally:
        WaitForTask(task.info.result.RemoveSnapshot_Task(removeChildren=False))
    assert fast == reference
    assert any(s.name == "reconciler-parity" for vm in fast[1] for s in vm.snapshots)
