"""Which bytes a backup reads: CBT areas minus excluded volumes, clipped, merged and split."""

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.extents import Range, intersect, normalise, read_requests, split, subtract, total

ranges = st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 1024)), max_size=20)


def as_set(rs):
    return {b for r in rs for b in range(r.offset, r.end)}


def test_normalise_merges_touching_and_overlapping_areas():
    assert normalise([(10, 5), (0, 10), (30, 5), (12, 10)]) == [Range(0, 22), Range(30, 5)]


def test_normalise_clips_to_the_disk():
    assert normalise([(90, 20), (200, 5)], size=100) == [Range(90, 10)]


def test_excluded_volume_in_the_middle_of_a_changed_area_is_not_read():
    assert read_requests([(0, 100)], size=100, holes=[(40, 20)], max_request=1000) == [Range(0, 40), Range(60, 40)]


def test_requests_never_exceed_the_server_maximum():
    reqs = read_requests([(0, 10_000)], size=10_000, max_request=4096)
    assert [r.length for r in reqs] == [4096, 4096, 1808]


def test_split_keeps_later_pieces_aligned():
    pieces = list(split([Range(100, 10_000)], 4096, align=4096))
    assert pieces[0] == Range(100, 3996)
    assert all(p.offset % 4096 == 0 for p in pieces[1:])


@given(ranges, ranges)
def test_subtract_is_set_difference(a, b):
    na, nb = normalise(a), normalise(b)
    assert as_set(subtract(na, nb)) == as_set(na) - as_set(nb)


@given(ranges, ranges)
def test_intersect_is_set_intersection(a, b):
    na, nb = normalise(a), normalise(b)
    assert as_set(intersect(na, nb)) == as_set(na) & as_set(nb)


@given(ranges, ranges, st.integers(1, 5000), st.integers(1, 300))
def test_read_requests_cover_exactly_the_wanted_bytes_once(areas, holes, size, max_request):
    reqs = read_requests(areas, size=size, holes=holes, max_request=max_request)
    wanted = as_set(normalise(areas, size=size)) - as_set(normalise(holes))
    assert as_set(reqs) == wanted
    assert total(reqs) == len(wanted)  # no byte read twice
    assert all(0 < r.length <= max_request for r in reqs)
