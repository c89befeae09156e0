"""The same inspection over NBD (how a backup sees a VMware snapshot): a real nbdkit, a real libnbd."""

from __future__ import annotations

import shutil

import pytest

from reconciler.adapters.inspect import CountingReader, NbdReader, analyse, inspect_disk, inspect_image
from reconciler.lab.images import build_lab_disk
from reconciler.policy.model import Exclusions

nbd = pytest.importorskip("nbd", reason="python3-libnbd is not installed")
pytestmark = pytest.mark.skipif(shutil.which("nbdkit") is None, reason="nbdkit is not installed")


def test_inspecting_over_nbd_gives_the_same_layout_as_the_file(tmp_path):
    path = tmp_path / "disk.img"
    build_lab_disk(path, "windows-ntfs-refs")
    handle = nbd.NBD()
    # nbdkit on a socket pair, started and reaped by libnbd: no port, nothing left behind
    handle.connect_command(["nbdkit", "--exit-with-parent", "-s", "--readonly", "file", str(path)])
    try:
        reader = CountingReader(NbdReader(handle))
        over_nbd = inspect_disk(reader, str(path))
    finally:
        handle.shutdown()
    assert over_nbd == inspect_image(path)
    assert reader.bytes_read < 128 * 1024
    [report] = analyse([over_nbd], Exclusions(refs=True))
    assert [str(r.verdict.verdict) for r in report.partitions] == ["backup"] * 3 + ["exclude"]


def test_the_nbd_reader_clamps_reads_at_the_end_of_the_export(tmp_path):
    path = tmp_path / "small.img"
    path.write_bytes(b"x" * 4096)
    handle = nbd.NBD()
    handle.connect_command(["nbdkit", "--exit-with-parent", "-s", "--readonly", "file", str(path)])
    try:
        reader = NbdReader(handle)
        assert reader.size == 4096
        assert reader.read(4000, 512) == b"x" * 96
        assert reader.read(4096, 512) == b""
    finally:
        handle.shutdown()
