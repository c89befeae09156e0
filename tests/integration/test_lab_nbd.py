"""A VM disk served by nbdkit and read with libnbd is the disk: same size, same bytes, same holes.

This is the production read path (reconciler.adapters.nbd) with the lab's plugins standing in for vddk:
`file` on the datastore file, `curl` on vSphere's `/folder` HTTP file access served by vcsim.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from reconciler.adapters.nbd.client import NbdClient, NbdClientError
from reconciler.lab.lab import Lab
from reconciler.lab.nbd import NbdExport, Via

MiB = 1024 * 1024


def data_extents(path: Path) -> list[tuple[int, int]]:
    """(offset, length) of the allocated ranges of a sparse file, as the file system reports them."""
    extents = []
    with path.open("rb") as handle:
        fd, size, position = handle.fileno(), os.fstat(handle.fileno()).st_size, 0
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after position
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            extents.append((start, end - start))
            position = end
    return extents


def read_range(client: NbdClient, offset: int, length: int) -> bytes:
    chunks = []
    for start in range(offset, offset + length, 4 * MiB):
        chunks.append(client.pread(start, min(4 * MiB, offset + length - start)))
    return b"".join(chunks)


def assert_export_equals_file(uri: str, path: Path) -> None:
    content = path.read_bytes() if path.stat().st_size <= 64 * MiB else None
    with NbdClient.open(uri) as client, path.open("rb") as disk:
        assert client.size == path.stat().st_size
        assert client.read_only
        extents = data_extents(path)
        assert extents, f"{path} holds no data: the test would prove nothing"
        for offset, length in extents:
            disk.seek(offset)
            assert read_range(client, offset, length) == disk.read(length), f"bytes differ at {offset}"
        # and a hole reads as zeros
        last_end = extents[-1][0] + extents[-1][1]
        if last_end < client.size:
            assert client.pread(last_end, 4096) == bytes(4096)
        if content is not None:
            assert read_range(client, 0, client.size) == content


def sparse_file(path: Path) -> Path:
    with path.open("wb") as handle:
        handle.truncate(16 * MiB)
        handle.seek(MiB)
        handle.write(os.urandom(256 * 1024))
        handle.seek(9 * MiB)
        handle.write(b"end of data" * 100)
    return path


def test_file_export_serves_exactly_the_file_bytes(tmp_path: Path) -> None:
    disk = sparse_file(tmp_path / "disk.raw")
    with NbdExport.of_file("vm", 2000, disk, tmp_path / "run") as export:
        assert_export_equals_file(export.uri, disk)


def test_block_status_reports_the_holes_of_a_sparse_disk(tmp_path: Path) -> None:
    disk = sparse_file(tmp_path / "disk.raw")
    with NbdExport.of_file("vm", 2000, disk, tmp_path / "run") as export, NbdClient.open(export.uri) as client:
        extents = list(client.extents())
    assert extents[0].offset == 0 and extents[-1].end == 16 * MiB
    assert all(a.end == b.offset for a, b in itertools.pairwise(extents)), "extents tile the disk"
    data = [(e.offset, e.length) for e in extents if not e.hole]
    # the file system allocates whole blocks: every written range lies inside a data extent
    for written_at, written_length in ((MiB, 256 * 1024), (9 * MiB, 1100)):
        assert any(o <= written_at and written_at + written_length <= o + n for o, n in data)
    holes = sum(e.length for e in extents if e.hole)
    assert holes >= 15 * MiB, "most of the disk is a hole"
    assert all(e.zero for e in extents if e.hole)


def test_extents_of_a_range_are_clipped_to_it(tmp_path: Path) -> None:
    disk = sparse_file(tmp_path / "disk.raw")
    with NbdExport.of_file("vm", 2000, disk, tmp_path / "run") as export, NbdClient.open(export.uri) as client:
        extents = list(client.extents(MiB // 2, MiB))
    assert extents[0].offset == MiB // 2
    assert extents[-1].end == MiB // 2 + MiB


def test_one_read_may_be_as_large_as_the_server_allows_and_no_larger(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    with disk.open("wb") as handle:
        handle.truncate(64 * MiB)
    with NbdExport.of_file("vm", 2000, disk, tmp_path / "run") as export, NbdClient.open(export.uri) as client:
        assert 0 < client.max_request <= 32 * MiB
        assert client.pread(0, client.max_request) == bytes(client.max_request)
        with pytest.raises(ValueError, match="exceeds"):
            client.pread(0, 32 * MiB + 1)


def test_stopping_an_export_removes_its_socket(tmp_path: Path) -> None:
    export = NbdExport.of_file("vm", 2000, sparse_file(tmp_path / "disk.raw"), tmp_path / "run")
    record = export.start()
    assert Path(record.socket).exists()
    export.stop()
    assert not Path(record.socket).exists()


@pytest.mark.lab
@pytest.mark.xdist_group("lab")
def test_lab_vm_disk_over_the_file_plugin_equals_the_datastore_file(lab: Lab) -> None:
    state = lab.export("web-01", 2000, via=Via.FILE)
    record = next(e for e in state.exports if e.name == "web-01-2000")
    disk = state.sites["vcenter"].disk("web-01", 2000)
    assert record.via is Via.FILE
    assert_export_equals_file(record.uri, Path(disk["file"]))


@pytest.mark.lab
@pytest.mark.xdist_group("lab")
def test_lab_vm_disk_over_vsphere_datastore_http_equals_the_datastore_file(lab: Lab) -> None:
    state = lab.export("db-01", 2000, via=Via.CURL)
    record = next(e for e in state.exports if e.name == "db-01-2000")
    disk = state.sites["vcenter"].disk("db-01", 2000)
    assert record.source.startswith(state.sites["vcenter"].sdk.removesuffix("/sdk") + "/folder/")
    assert_export_equals_file(record.uri, Path(disk["file"]))


@pytest.mark.lab
@pytest.mark.xdist_group("lab")
def test_a_guest_write_is_what_the_next_read_over_nbd_returns(lab: Lab) -> None:
    state = lab.export("db-01", 2001, via=Via.CURL)
    record = next(e for e in state.exports if e.name == "db-01-2001")
    payload = os.urandom(70_000)
    lab.control().write("db-01", 2001, 3 * MiB + 17, data=payload)
    with NbdClient.open(record.uri) as client:
        assert client.pread(3 * MiB + 17, len(payload)) == payload


@pytest.mark.lab
@pytest.mark.xdist_group("lab")
def test_the_standalone_host_exports_its_own_copy_of_a_vm_that_also_lives_in_vcenter(lab: Lab) -> None:
    state = lab.export("app-01", 2000, via=Via.CURL, site="esxi")
    record = next(e for e in state.exports if e.name == "esxi-app-01-2000")
    esxi_disk = Path(state.sites["esxi"].disk("app-01", 2000)["file"])
    vcenter_disk = Path(state.sites["vcenter"].disk("app-01", 2000)["file"])
    assert esxi_disk != vcenter_disk
    assert_export_equals_file(record.uri, esxi_disk)
    with NbdClient.open(record.uri) as client, vcenter_disk.open("rb") as same_image:
        assert client.pread(0, MiB) == same_image.read(MiB), "both sites start from the same disk image"


@pytest.mark.lab
@pytest.mark.xdist_group("lab")
def test_a_datastore_read_error_reaches_the_nbd_client_as_a_clear_error(lab: Lab) -> None:
    state = lab.export("legacy-01", 2000, via=Via.CURL)
    record = next(e for e in state.exports if e.name == "legacy-01-2000")
    control = lab.control()
    control.set_fault("disk-read-error", vm="legacy-01")
    try:
        with pytest.raises(NbdClientError, match="legacy-01-2000"), NbdClient.open(record.uri) as client:
            client.pread(0, 65536)
    finally:
        control.clear_fault("disk-read-error")
    with NbdClient.open(record.uri) as client:
        assert len(client.pread(0, 65536)) == 65536, "the export recovers once the fault is off"
