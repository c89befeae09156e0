"""Starting and stopping vcsim-lab: endpoints, plain HTTP, cleanup, and clear errors for bad input."""

from __future__ import annotations

import hashlib
import socket
import ssl
from pathlib import Path

import pytest
from pyVim.connect import Disconnect, SmartConnect

from reconciler.lab import inventory as inv
from reconciler.lab.vcsim import LabControl, VcsimError, VcsimProcess

pytestmark = pytest.mark.lab


def tiny(mode: inv.Mode = inv.Mode.VCENTER) -> inv.Inventory:
    return inv.Inventory(
        mode=mode,
        hosts=(inv.Host("esx-tiny.lab"),),
        vms=(inv.VM("tiny-01", "50030000-0000-4000-8000-00000000aa01", "42030000-0000-4000-8000-00000000aa01",
                    (inv.Disk(2000, 1 << 20),)),),
    )  # fmt: skip


def test_plain_http_mode_serves_pyvmomi_and_stop_removes_the_datastores(tmp_path: Path) -> None:
    process = VcsimProcess(None, tiny().write_json(tmp_path / "inv.json"), tmp_path / "state", tls=False)
    with process:
        endpoints = process.endpoints
        assert endpoints is not None and endpoints.sdk.startswith("http://127.0.0.1:")
        assert endpoints.thumbprint_sha1 == ""
        si = SmartConnect(protocol="http", host=endpoints.host, port=endpoints.port, user="user", pwd="pass")
        assert si.RetrieveContent().about.apiType == "VirtualCenter"
        Disconnect(si)
        datastore = Path(endpoints.datastore_dir)
        assert datastore.is_relative_to(tmp_path / "state")
        assert Path(endpoints.vm("tiny-01").disk(2000).file).stat().st_size == 1 << 20
    assert not datastore.exists()


def test_ready_line_thumbprint_is_the_served_certificate(tmp_path: Path) -> None:
    with VcsimProcess(None, tiny(inv.Mode.ESXI).write_json(tmp_path / "inv.json"), tmp_path / "state") as process:
        endpoints = process.endpoints
        assert endpoints is not None and endpoints.mode == "esxi"
        context = ssl._create_unverified_context()
        with (
            socket.create_connection((endpoints.host, endpoints.port)) as raw,
            context.wrap_socket(raw) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        expected = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
        assert endpoints.thumbprint_sha256 == expected


def test_an_unusable_inventory_is_reported_not_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"mode": "cloud", "hosts": [{"name": "h"}], "vms": []}')
    with pytest.raises(VcsimError, match="mode must be vcenter or esxi"):
        VcsimProcess(None, bad, tmp_path / "state").start()
    with pytest.raises(VcsimError, match="does not exist"):
        VcsimProcess(None, tmp_path / "missing.json", tmp_path / "state").start()


def test_control_endpoint_errors_are_clear(tmp_path: Path) -> None:
    with VcsimProcess(None, tiny().write_json(tmp_path / "inv.json"), tmp_path / "state") as process:
        assert process.endpoints is not None
        control = LabControl(process.endpoints.control)
        with pytest.raises(VcsimError, match='no VM named "ghost"'):
            control.write("ghost", 2000, 0, data=b"x")
        with pytest.raises(VcsimError, match="has no disk with key 2999"):
            control.write("tiny-01", 2999, 0, data=b"x")
        with pytest.raises(VcsimError, match="outside the disk"):
            control.write("tiny-01", 2000, (1 << 20) - 1, data=b"xy")
        with pytest.raises(ValueError, match="unknown fault"):
            control.set_fault("meteor-strike")
        control.set_fault("snapshot-remove-fails", vm="tiny-01", count=2)
        assert [(f["name"], f["count"]) for f in control.faults()] == [("snapshot-remove-fails", 2)]
        control.clear_fault("snapshot-remove-fails")
        assert control.faults() == []
        assert control.vms()[0]["name"] == "tiny-01"
    with pytest.raises(VcsimError, match="cannot reach"):
        control.vms()
