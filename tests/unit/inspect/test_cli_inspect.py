"""`reconciler inspect`: the JSON contract, the human table, and clear errors for bad input."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from click.testing import CliRunner

from reconciler.cli.main import cli
from reconciler.lab.images import MiB, build_lab_disk


@pytest.fixture(scope="module")
def vm_disks(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli")
    disks = [directory / "system.img", directory / "data.img"]
    build_lab_disk(disks[0], "windows-ntfs")
    build_lab_disk(disks[1], "windows-ntfs-refs")
    return disks


def _file(path, content: bytes):
    path.write_bytes(content)
    return path


def run(*args: str):
    return CliRunner().invoke(cli, ["inspect", *args])


def test_json_output_has_exactly_the_documented_shape(vm_disks):
    result = run("--json", *map(str, vm_disks))
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert list(document) == ["disks"]
    disk = document["disks"][1]
    assert list(disk) == ["path", "size", "partitionTable", "partitions", "warnings"]
    assert (disk["path"], disk["size"], disk["partitionTable"], disk["warnings"]) == (
        str(vm_disks[1]),
        4096 * MiB,
        "gpt",
        [],
    )
    refs = disk["partitions"][3]
    assert list(refs) == ["index", "start", "length", "type", "filesystem", "guid", "verdict", "reason"]
    assert refs["index"] == 4
    assert (refs["type"], refs["filesystem"], refs["verdict"], refs["reason"]) == (
        "basic-data",
        "refs",
        "backup",
        None,
    )
    assert refs["start"] % MiB == 0 and refs["length"] > 0


def test_exclude_shows_verdicts_under_a_policys_exclusions(vm_disks):
    result = run("--json", "--exclude", "refs,D:", str(vm_disks[1]))
    refs = json.loads(result.output)["disks"][0]["partitions"][3]
    assert (refs["verdict"], refs["reason"]) == ("exclude", "refs")


def test_several_images_are_one_vm_so_a_cloned_disk_is_reported(vm_disks, tmp_path):
    clone = tmp_path / "clone.img"
    subprocess.run(["cp", "--sparse=always", str(vm_disks[0]), str(clone)], check=True)
    document = json.loads(run("--json", str(vm_disks[0]), str(clone)).output)
    assert {p["reason"] for p in document["disks"][1]["partitions"]} == {"duplicate-guid"}
    assert document["disks"][1]["warnings"]


def test_human_output_is_a_table_per_disk(vm_disks):
    result = CliRunner().invoke(cli, ["inspect", str(vm_disks[1]), "--exclude", "refs"], terminal_width=160)
    assert result.exit_code == 0, result.output
    assert "disk 0:" in result.output and "refs" in result.output and "exclude" in result.output


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.img", "No such file"),
        (lambda d: d, "is a directory"),
        (lambda d: _file(d / "zero.img", b""), "empty (zero-length) image"),
        (lambda d: _file(d / "short.img", b"x" * 100), "truncated"),
    ],
)
def test_bad_images_are_one_line_errors_not_tracebacks(tmp_path, make, message):
    result = run(str(make(tmp_path)))
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_an_unknown_exclusion_is_a_usage_error(vm_disks):
    result = run("--exclude", "refs,zfs", str(vm_disks[0]))
    assert result.exit_code == 2
    assert "unknown exclusion 'zfs'" in result.output


def test_images_are_required():
    assert run().exit_code == 2


def test_allocation_shows_what_a_thin_backup_skips_per_volume(tmp_path):
    disk = tmp_path / "linux.img"
    build_lab_disk(disk, "linux-ext4", 1024 * MiB)
    result = run("--allocation", str(disk))
    assert result.exit_code == 0, result.output
    assert re.search(r"thin: partition 2: [\d.]+ MiB of [\d.]+ MiB allocated, [\d.]+ MiB skipped", result.output)
    document = json.loads(run("--allocation", "--json", str(disk)).output)
    root = document["disks"][0]["partitions"][1]
    assert root["filesystem"] == "ext4"
    assert root["allocation"]["skipped"] > 800 * MiB and root["allocation"]["declined"] is None
    assert root["allocation"]["allocated"] + root["allocation"]["skipped"] == root["length"]
    assert "allocation" not in json.loads(run("--json", str(disk)).output)["disks"][0]["partitions"][1]
