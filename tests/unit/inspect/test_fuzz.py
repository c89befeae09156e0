"""Whatever the bytes, the reader returns a layout (maybe with warnings) and never raises: mutated
real headers and random garbage, in memory."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.adapters.inspect import inspect_disk
from reconciler.lab.images import MiB, PartSpec, build_image

HEAD = 64 * 1024  # every structure the reader looks at in these images lies in the first 64 KiB or the tail


class MemoryDisk:
    """A disk whose first and last 64 KiB are given, zeros in between."""

    def __init__(self, head: bytes, tail: bytes, size: int) -> None:
        self.head, self.tail, self.size = head, tail, size

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        out = bytearray(length)
        for base, data in ((0, self.head), (self.size - len(self.tail), self.tail)):
            lo, hi = max(offset, base), min(offset + length, base + len(data))
            if lo < hi:
                out[lo - offset : hi - offset] = data[lo - base : hi - base]
        return bytes(out)


@pytest.fixture(scope="module")
def real_headers(tmp_path_factory) -> dict[str, tuple[bytes, bytes, int]]:
    headers = {}
    specs = [PartSpec(8 * MiB, "fat12"), PartSpec(8 * MiB, "ext4"), PartSpec(8 * MiB, "lvm")] * 2
    for table in ("gpt", "mbr"):
        path = tmp_path_factory.mktemp("fuzz") / f"{table}.img"
        size = 64 * MiB
        build_image(path, size, table, specs)
        data = path.read_bytes()
        headers[table] = (data[:HEAD], data[-HEAD:], size)
    return headers


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    table=st.sampled_from(["gpt", "mbr"]),
    flips=st.lists(st.tuples(st.integers(0, 34 * 512 - 1), st.integers(0, 255)), min_size=1, max_size=24),
)
def test_mutated_real_tables_never_raise(real_headers, table, flips):
    head, tail, size = real_headers[table]
    mutated = bytearray(head)
    for offset, value in flips:
        mutated[offset] = value
    layout = inspect_disk(MemoryDisk(bytes(mutated), tail, size))
    assert all(p.length == 0 or (p.start >= 0 and p.end <= size) for p in layout.partitions)


@settings(max_examples=100, deadline=None)
@given(head=st.binary(min_size=512, max_size=8192), size=st.integers(512, 1 << 44))
def test_random_bytes_never_raise(head, size):
    inspect_disk(MemoryDisk(head[:size], b"", size))
