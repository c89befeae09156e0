"""Byte ranges of a disk: which to read, in what pieces. Pure.

The backup data path is: areas to read (from CBT, or the whole disk) → minus what must stay a hole
(excluded volumes) → clipped to the disk → neighbours merged → split into requests no larger than the
NBD server accepts. Keeping this a pure function makes it testable without a disk (virtnbdbackup's lesson).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Range:
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


def normalise(ranges: Iterable[tuple[int, int] | Range], *, size: int | None = None) -> list[Range]:
    """Sorted, clipped to [0, size), empty ones dropped, overlapping or touching ones merged."""
    items = sorted(r if isinstance(r, Range) else Range(*r) for r in ranges)
    merged: list[Range] = []
    for r in items:
        start, end = max(r.offset, 0), r.end if size is None else min(r.end, size)
        if end <= start:
            continue
        if merged and start <= merged[-1].end:
            last = merged[-1]
            merged[-1] = Range(last.offset, max(last.end, end) - last.offset)
        else:
            merged.append(Range(start, end - start))
    return merged


def subtract(ranges: Sequence[Range], holes: Sequence[Range]) -> list[Range]:
    """`ranges` minus `holes`; both normalised (sorted, disjoint)."""
    out: list[Range] = []
    h = 0
    for r in ranges:
        start = r.offset
        while h < len(holes) and holes[h].end <= start:
            h += 1
        i = h
        while i < len(holes) and holes[i].offset < r.end:
            if holes[i].offset > start:
                out.append(Range(start, holes[i].offset - start))
            start = max(start, holes[i].end)
            i += 1
        if start < r.end:
            out.append(Range(start, r.end - start))
    return out


def intersect(ranges: Sequence[Range], others: Sequence[Range]) -> list[Range]:
    """Bytes in both; both normalised."""
    out: list[Range] = []
    i = j = 0
    while i < len(ranges) and j < len(others):
        start = max(ranges[i].offset, others[j].offset)
        end = min(ranges[i].end, others[j].end)
        if start < end:
            out.append(Range(start, end - start))
        if ranges[i].end < others[j].end:
            i += 1
        else:
            j += 1
    return out


def split(ranges: Iterable[Range], max_request: int, *, align: int = 1) -> Iterator[Range]:
    """Requests of at most `max_request` bytes; pieces after the first start on `align` boundaries."""
    if max_request <= 0 or max_request % align:
        raise ValueError("max_request must be a positive multiple of align")
    for r in ranges:
        position = r.offset
        while position < r.end:
            # end the piece on an aligned boundary so the following reads are aligned too
            limit = (position + max_request) // align * align if align > 1 else position + max_request
            end = min(r.end, max(limit, position + 1))
            yield Range(position, end - position)
            position = end


def read_requests(
    areas: Iterable[tuple[int, int] | Range],
    *,
    size: int,
    holes: Iterable[tuple[int, int] | Range] = (),
    max_request: int,
    align: int = 1,
) -> list[Range]:
    """What to read for one disk: `areas` minus `holes`, clipped to `size`, in requests ≤ `max_request`."""
    wanted = subtract(normalise(areas, size=size), normalise(holes, size=size))
    return list(split(wanted, max_request, align=align))


def total(ranges: Iterable[Range]) -> int:
    return sum(r.length for r in ranges)
