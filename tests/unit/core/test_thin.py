"""`thin_work`: a thin backup chain keeps the image equal to the guest's view (used blocks = source, free
blocks = zeros), whatever the guest writes, frees and allocates between backups, and reads no free block."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.extents import Range, normalise
from reconciler.core.thin import ThinVolume, free_ranges, thin_work

BLOCKS = 24


def ranges(blocks: set[int]) -> list[Range]:
    return normalise(Range(b, 1) for b in blocks)


def blocks_of(rs: tuple[Range, ...] | list[Range]) -> set[int]:
    return {b for r in rs for b in range(r.offset, r.end)}


@dataclass
class Guest:
    """A disk of BLOCKS one-byte blocks: contents, which are allocated, and CBT's record since the last backup."""

    data: list[int] = field(default_factory=lambda: [0] * BLOCKS)
    used: set[int] = field(default_factory=set)
    changed: set[int] = field(default_factory=set)
    version: int = 0

    def write(self, block: int) -> None:
        self.version += 1
        self.data[block] = self.version
        self.changed.add(block)

    def apply(self, step: tuple[str, int]) -> None:
        kind, block = step
        if kind == "write-file":  # allocate and write
            self.used.add(block)
            self.write(block)
        elif kind == "delete":  # free, contents stay (no discard, no write: CBT sees nothing)
            self.used.discard(block)
        elif kind == "write-free":  # scribble on a free block (a tool, a crash): data the guest cannot see
            if block not in self.used:
                self.write(block)
        elif kind == "allocate-without-write":  # undelete / journal replay: no CBT record, data becomes visible
            self.used.add(block)


@dataclass
class Image:
    data: list[int] = field(default_factory=lambda: [0] * BLOCKS)

    def stored(self) -> list[Range]:
        return ranges({b for b, v in enumerate(self.data) if v})


def backup(guest: Guest, image: Image, before: set[int] | None, *, full: bool) -> tuple[set[int], set[int]]:
    """One backup with thin_work; returns (blocks read, blocks punched)."""
    cbt = ranges(set(range(BLOCKS))) if full else ranges(guest.changed)
    if full:
        image.data = [0] * BLOCKS
    work = thin_work(BLOCKS, cbt, ranges(guest.used), None if before is None else ranges(before),
                     () if full else image.stored())
    read, punch = blocks_of(work.read), blocks_of(work.punch)
    for b in read:
        image.data[b] = guest.data[b]
    for b in punch:
        image.data[b] = 0
    guest.changed.clear()
    return read, punch


def guests_view(guest: Guest) -> list[int]:
    return [guest.data[b] if b in guest.used else 0 for b in range(BLOCKS)]


steps = st.lists(st.tuples(st.sampled_from(["write-file", "delete", "write-free", "allocate-without-write"]),
                           st.integers(0, BLOCKS - 1)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(initial=steps, rounds=st.lists(steps, min_size=1, max_size=5))
def test_a_thin_chain_always_stores_the_guests_view_and_reads_only_used_blocks(initial, rounds) -> None:
    guest, image = Guest(), Image()
    for step in initial:
        guest.apply(step)
    read, _ = backup(guest, image, None, full=True)
    assert read == guest.used
    assert image.data == guests_view(guest)
    before = set(guest.used)
    for round_steps in rounds:
        for step in round_steps:
            guest.apply(step)
        read, _ = backup(guest, image, before, full=False)
        assert read <= guest.used  # never a free block
        assert image.data == guests_view(guest)
        before = set(guest.used)


@settings(max_examples=200, deadline=None)
@given(initial=steps, later=steps)
def test_first_thin_incremental_over_a_plain_image_punches_every_free_block_that_holds_data(initial, later) -> None:
    guest, image = Guest(), Image()
    for step in initial:
        guest.apply(step)
    image.data = list(guest.data)  # a plain (non-thin) backup copied everything, free blocks too
    guest.changed.clear()
    for step in later:
        guest.apply(step)
    _, punched = backup(guest, image, None, full=False)
    assert image.data == guests_view(guest)
    assert punched <= set(range(BLOCKS)) - guest.used


@given(cbt=steps)
def test_unknown_allocation_now_reads_exactly_what_cbt_lists(cbt) -> None:
    changed = ranges({b for _, b in cbt})
    work = thin_work(BLOCKS, changed, None, None, None)
    assert list(work.read) == changed and work.punch == ()


def test_a_block_freed_since_the_last_backup_is_punched_even_without_a_write() -> None:
    work = thin_work(100, [], allocated_now=[Range(0, 10)], allocated_before=[Range(0, 50)],
                     stored_data=[Range(0, 100)])
    assert work.read == () and work.punch == (Range(10, 40),)


def test_a_block_allocated_since_is_read_even_when_cbt_missed_it() -> None:
    work = thin_work(100, [Range(0, 5)], allocated_now=[Range(0, 20)], allocated_before=[Range(0, 10)],
                     stored_data=[Range(0, 10)])
    assert work.read == (Range(0, 5), Range(10, 10)) and work.punch == ()


def test_punching_skips_what_the_image_does_not_store() -> None:
    work = thin_work(100, [], allocated_now=[], allocated_before=None, stored_data=[Range(30, 10)])
    assert work.punch == (Range(30, 10),)


def test_free_ranges_complement_the_allocation_and_are_empty_when_unknown() -> None:
    assert free_ranges(100, [Range(10, 20), Range(50, 10)]) == (Range(0, 10), Range(30, 20), Range(60, 40))
    assert free_ranges(100, None) == ()


def test_a_volume_finding_says_allocated_of_total_and_skipped() -> None:
    GiB = 1 << 30
    found = ThinVolume("partition 2", 20 * GiB, allocated=int(3.1 * GiB))
    assert found.describe() == "partition 2: 3.1 GiB of 20.0 GiB allocated, 16.9 GiB skipped"
    assert ThinVolume("partition 1", 300 << 20, allocated=12 << 20).describe() == \
        "partition 1: 12.0 MiB of 300.0 MiB allocated, 288.0 MiB skipped"
    assert ThinVolume("partition 3", GiB, declined="the journal needs recovery").describe() == \
        "partition 3: read whole (the journal needs recovery)"
