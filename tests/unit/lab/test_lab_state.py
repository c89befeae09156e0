"""What `reconciler lab up` writes for later commands, tools and policies — checked without a lab."""

from __future__ import annotations

from pathlib import Path

from reconciler.lab.lab import LabState, PoolState, SiteState, connections_yaml
from reconciler.lab.nbd import ExportRecord, Via, export_name
from reconciler.policy import load_policies

THUMBPRINT = ":".join(["AB"] * 32)


def site(name: str, port: int) -> SiteState:
    return SiteState(
        site=name,
        pid=100 + port,
        sdk=f"https://127.0.0.1:{port}/sdk",
        control=f"http://127.0.0.1:{port + 1}",
        thumbprint_sha1=":".join(["CD"] * 20),
        thumbprint_sha256=THUMBPRINT,
        username="user",
        password="pass",
        mode=name,
        vms=({"name": "web-01", "disks": [{"key": 2000, "datastorePath": "[ds] web-01/web-01.vmdk"}]},),
        datacenter="DC0",
    )


STATE = LabState(
    state_dir="/tmp/lab",
    started_at="2026-11-30T01:00:00+00:00",
    sites={"vcenter": site("vcenter", 18443), "esxi": site("esxi", 18444)},
    pool=PoolState("reconciler-lab", "reconciler-lab/agentless", "/tmp/lab/mnt/reconciler-lab"),
    exports=(
        ExportRecord("web-01-2000", "vcenter", "web-01", 2000, Via.CURL, "https://x/folder/a", "nbd+unix:///?socket=/s",
                     "/s", 42, "/l"),
    ),
)


def test_lab_state_survives_the_state_file_round_trip():
    assert LabState.from_json(STATE.to_json()) == STATE


def test_generated_connections_are_valid_policy_documents_pinned_by_thumbprint(tmp_path: Path):
    path = tmp_path / "connections.yaml"
    path.write_text(connections_yaml(STATE))
    policies = load_policies([path])
    assert set(policies.connections) == {"lab-vcenter", "lab-esxi"}
    vcenter = policies.connections["lab-vcenter"]
    assert vcenter.address == "https://127.0.0.1:18443/sdk"
    assert vcenter.thumbprint == THUMBPRINT
    assert not vcenter.insecure
    assert vcenter.password_from.env == "RECONCILER_LAB_PASSWORD"


def test_connection_names_match_the_lab_policy_set():
    declared = load_policies([Path(__file__).parents[3] / "policies"]).connections
    assert {"lab-vcenter", "lab-esxi"} <= set(declared)


def test_exports_of_the_standalone_host_are_named_apart_from_vcenter_ones():
    assert export_name("app-01", 2000) == "app-01-2000"
    assert export_name("app-01", 2000, "esxi") == "esxi-app-01-2000"
