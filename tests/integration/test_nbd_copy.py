"""The backup data path: NBD export (nbdkit) → libnbd, many reads in flight → sparse image."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from reconciler.adapters.nbd.client import NbdClient
from reconciler.adapters.nbd.copy import copy_ranges
from reconciler.adapters.nbd.server import FileSource, Listen, NbdkitServer
from reconciler.core.extents import Range, read_requests

MiB = 1024 * 1024
SIZE = 256 * MiB


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def write_at(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.raw"
    with path.open("wb") as f:
        f.truncate(SIZE)
    for offset in (0, 7 * MiB + 4096, 100 * MiB, SIZE - MiB):
        write_at(path, offset, os.urandom(MiB))
    return path


@pytest.fixture
def export(source: Path, tmp_path: Path):
    with NbdkitServer(FileSource(source), Listen(socket=tmp_path / "nbd.sock")) as server:
        server.start()
        yield server


def new_image(path: Path, size: int) -> int:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.ftruncate(fd, size)
    return fd


def allocated_ranges(uri: str) -> list[Range]:
    with NbdClient.open(uri) as client:
        return [Range(e.offset, e.length) for e in client.extents() if not (e.hole or e.zero)]


@pytest.mark.parametrize("connections", [1, 4])
def test_full_copy_is_byte_identical_and_reads_only_allocated_areas(export, source, tmp_path, connections):
    target = tmp_path / "disk-2000.raw"
    areas = allocated_ranges(export.uri)
    fd = new_image(target, SIZE)
    try:
        stats = copy_ranges(
            lambda: NbdClient.open(export.uri),
            read_requests(areas, size=SIZE, max_request=4 * MiB),
            fd,
            fresh_target=True,
            connections=connections,
        )
    finally:
        os.close(fd)
    assert sha256(target) == sha256(source)
    assert stats.bytes_read == sum(a.length for a in areas) < SIZE // 8
    assert target.stat().st_blocks * 512 < 8 * MiB  # holes stayed holes


def test_incremental_copy_replaces_old_data_with_holes_where_the_source_became_zero(export, source, tmp_path):
    target = tmp_path / "disk-2000.raw"
    target.write_bytes(source.read_bytes())  # the previous backup
    write_at(source, 100 * MiB, bytes(MiB))  # the guest zeroed this area
    write_at(source, 50 * MiB, b"x" * 65536)  # and wrote here
    changed = [Range(100 * MiB, MiB), Range(50 * MiB, 65536)]
    fd = os.open(target, os.O_RDWR)
    try:
        stats = copy_ranges(
            lambda: NbdClient.open(export.uri),
            read_requests(changed, size=SIZE, max_request=4 * MiB),
            fd,
            fresh_target=False,
        )
    finally:
        os.close(fd)
    assert sha256(target) == sha256(source)
    assert stats.bytes_read == MiB + 65536
    assert stats.bytes_zero == MiB


def test_excluded_range_is_never_read_and_stays_a_hole(export, source, tmp_path):
    target = tmp_path / "disk-2000.raw"
    fd = new_image(target, SIZE)
    try:
        copy_ranges(
            lambda: NbdClient.open(export.uri),
            read_requests(allocated_ranges(export.uri), size=SIZE, holes=[(100 * MiB, MiB)], max_request=4 * MiB),
            fd,
            fresh_target=True,
        )
    finally:
        os.close(fd)
    with target.open("rb") as f:
        f.seek(100 * MiB)
        assert f.read(MiB) == bytes(MiB)
        f.seek(0)
        assert f.read(MiB) == source.read_bytes()[:MiB]
