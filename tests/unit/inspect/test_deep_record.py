"""Deep inspection results travel as a compact JSON record (a ZFS property of the backup): pure parts of
`deep`, tested without an appliance."""

from __future__ import annotations

import pytest

from reconciler.adapters.inspect import DeepFacts, InspectError
from reconciler.adapters.inspect.deep import DeepReport, GuestOs, _location

REPORT = DeepReport(
    volumes={(0, 2): DeepFacts(dedup=True, mount_points=("C:",)), (1, 1): DeepFacts(upd=True)},
    operating_systems=(GuestOs("/dev/sda2", "windows", "windows", "Windows Server 2022 Standard"),),
    warnings=("disk 1 partition 3: cannot mount ntfs: dirty",),
)


def test_a_deep_report_round_trips_through_its_json_record():
    assert DeepReport.from_json(REPORT.to_json()) == REPORT


def test_the_record_is_compact_enough_for_a_zfs_property():
    assert len(REPORT.to_json()) < 1024


@pytest.mark.parametrize("text", ["", "[]", '{"volumes": [[1]]}', '{"volumes": [], "os": [[1, 2]]}'])
def test_a_damaged_record_is_a_clear_error(text):
    with pytest.raises(InspectError, match="not a deep inspection record"):
        DeepReport.from_json(text)


@pytest.mark.parametrize(
    ("device", "where"),
    [("/dev/sda", (0, 1)), ("/dev/sda2", (0, 2)), ("/dev/sdb10", (1, 10)), ("/dev/sdaa1", (26, 1))],
)
def test_guestfs_device_names_map_to_disk_and_partition(device, where):
    assert _location(device) == where


def test_devices_that_are_not_disks_map_to_nothing():
    assert _location("/dev/mapper/vg-root") is None
