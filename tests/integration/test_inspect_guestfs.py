"""Deep inspection with a real libguestfs appliance: deduplication, User Profile Disks, mount points and
the guest OS, on NTFS and ext4 volumes written by real tools. One appliance serves every test (a launch
costs ~16 s under TCG)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from reconciler.adapters.inspect import analyse, inspect_image
from reconciler.adapters.inspect.deep import Appliance
from reconciler.cli.main import cli
from reconciler.lab.images import GiB, MiB, PartSpec, build_image, build_lab_disk
from reconciler.policy.model import Exclusions

pytest.importorskip("guestfs", reason="python3-guestfs is not installed")
pytestmark = [pytest.mark.guestfs, pytest.mark.xdist_group("guestfs")]

WINDOWS_DATA = [
    PartSpec(128 * MiB, "ntfs", label="Dedup", files=(("System Volume Information/Dedup/", b""),)),
    PartSpec(128 * MiB, "ntfs", label="Profiles", files=(("Shares/UPD/UVHD-S-1-5-21-7-1001.vhdx", b"vhdxfile"),)),
    PartSpec(128 * MiB, "ntfs", label="Plain", files=(("notes.txt", b"UVHD-not-a-profile"),)),
]


@pytest.fixture(scope="session")
def vm_disks(tmp_path_factory):
    directory = tmp_path_factory.mktemp("deep")
    disks = [directory / "data.img", directory / "linux.img", directory / "rds.img"]
    build_image(disks[0], GiB, "gpt", WINDOWS_DATA)
    build_lab_disk(disks[1], "linux-ext4")
    build_lab_disk(disks[2], "rds-upd")
    return disks


@pytest.fixture(scope="session")
def deep_report(vm_disks):
    with Appliance(vm_disks) as appliance:
        yield appliance.inspect()


def test_dedup_is_found_from_its_chunk_store_directory(deep_report):
    assert deep_report.volumes[(0, 1)].dedup is True
    assert not deep_report.volumes.get((0, 2)) or deep_report.volumes[(0, 2)].dedup is False


def test_user_profile_disk_stores_are_found_in_a_share_folder_and_at_the_root(deep_report):
    assert deep_report.volumes[(0, 2)].upd is True
    assert deep_report.volumes[(2, 1)].upd is True
    assert (0, 3) not in deep_report.volumes  # a plain NTFS volume has no deep facts


def test_the_linux_guest_and_its_mount_points_are_found(deep_report):
    [guest] = deep_report.operating_systems
    assert (guest.type, guest.root) == ("linux", "/dev/sdb2")
    assert deep_report.volumes[(1, 2)].mount_points == ("/",)
    assert deep_report.volumes[(1, 1)].mount_points == ("/boot/efi",)


def test_deep_facts_become_verdicts_under_the_policy(vm_disks, deep_report):
    layouts = [inspect_image(path) for path in vm_disks]
    exclusions = Exclusions(upd=True, dedup=True, mount_points=("/boot/efi",))
    data, linux, rds = analyse(layouts, exclusions, deep_report.volumes)
    assert [(str(r.verdict.verdict), str(r.verdict.reason)) for r in data.partitions] == [
        ("exclude", "dedup"),
        ("exclude", "upd"),
        ("backup", "None"),
    ]
    assert str(linux.partitions[0].verdict.reason) == "mount-point"
    assert str(rds.partitions[0].verdict.reason) == "upd"


def test_inspect_deep_on_the_command_line(tmp_path):
    path = tmp_path / "rds.img"
    build_image(path, 256 * MiB, "gpt", [PartSpec(128 * MiB, "ntfs", files=(("UVHD-template.vhdx", b"x"),))])
    result = CliRunner().invoke(cli, ["inspect", "--deep", "--json", "--exclude", "upd", str(path)])
    assert result.exit_code == 0, result.output
    [partition] = json.loads(result.output)["disks"][0]["partitions"]
    assert (partition["verdict"], partition["reason"]) == ("exclude", "upd")
