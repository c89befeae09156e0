"""Thin backups: what to read and what to punch when the guest's free blocks are not copied. Pure.

The invariant a thin backup keeps is "the image is the guest's view": every block the guest's file systems
use equals the source, every free block is zeros (a hole). From it, for one disk:

* read  = (CBT-changed ∪ newly allocated) ∩ allocated now.
  A block allocated since the last backup is read even when CBT reports no write: it was free then, so the
  image holds zeros there, yet it may hold data written while it was free (an undelete, a journal replay).
* punch = (allocated before − allocated now) ∩ stored as data.
  A block freed since is zeroed in the image, whether or not CBT saw a write.

Unknown allocation (a reader declined, thin backups are off, an older backup recorded nothing) is "every
block allocated": unknown *now* reads everything CBT says, unknown *before* means the image may hold data
anywhere, so every block free now is punched where the image stores data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.core.extents import Range, intersect, normalise, subtract, total


@dataclass(frozen=True)
class ThinWork:
    read: tuple[Range, ...]
    punch: tuple[Range, ...]

    @property
    def read_bytes(self) -> int:
        return total(self.read)

    @property
    def punch_bytes(self) -> int:
        return total(self.punch)


def thin_work(
    size: int,
    cbt_changed: Sequence[Range],
    allocated_now: Sequence[Range] | None,
    allocated_before: Sequence[Range] | None,
    stored_data: Sequence[Range] | None,
) -> ThinWork:
    """For a disk of `size` bytes: `cbt_changed` (for a full: what CBT lists as ever written, or the whole
    disk), the used byte ranges now and at the base backup (None: unknown), and the image's data extents
    (None: unknown, as for a new image it is empty: pass `()`)."""
    disk = [Range(0, size)]
    now = disk if allocated_now is None else normalise(allocated_now, size=size)
    before = disk if allocated_before is None else normalise(allocated_before, size=size)
    stored = disk if stored_data is None else normalise(stored_data, size=size)
    newly_allocated = subtract(now, before)
    read = intersect(normalise([*normalise(cbt_changed, size=size), *newly_allocated]), now)
    punch = intersect(subtract(before, now), stored)
    return ThinWork(tuple(read), tuple(punch))


def free_ranges(size: int, allocated: Sequence[Range] | None) -> tuple[Range, ...]:
    """The complement of `allocated` on a disk of `size` bytes (nothing free when unknown)."""
    if allocated is None:
        return ()
    return tuple(subtract([Range(0, size)], normalise(allocated, size=size)))


def format_size(n: int) -> str:
    """1 decimal in the largest binary unit that keeps the number ≥ 1 (3.1 GiB, 512.0 MiB)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


@dataclass(frozen=True)
class ThinVolume:
    """What a thin backup learnt about one volume: its allocated bytes, or why its reader declined."""

    volume: str  # "partition 2"
    size: int
    allocated: int | None = None
    declined: str | None = None

    @property
    def skipped(self) -> int:
        return 0 if self.allocated is None else self.size - self.allocated

    def describe(self) -> str:
        if self.allocated is None:
            return f"{self.volume}: read whole ({self.declined})"
        return (f"{self.volume}: {format_size(self.allocated)} of {format_size(self.size)} allocated, "
                f"{format_size(self.skipped)} skipped")
