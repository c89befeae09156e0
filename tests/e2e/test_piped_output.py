"""Output piped to a file or `grep` is never wrapped: a pipe has no width, so no 80-column guess may cut a
path, URL or GUID into pieces that a script then cannot find."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from reconciler.lab.images import build_lab_disk

RECONCILER = str(Path(sys.executable).with_name("reconciler"))


def test_inspect_piped_keeps_long_paths_and_guids_on_one_line(tmp_path: Path) -> None:
    deep = tmp_path / ("a-directory-name-long-enough-that-the-title-passes-eighty-columns" * 2)
    deep.mkdir()
    image = deep / "system.img"
    build_lab_disk(image, "windows-ntfs")
    guids = [p["guid"] for p in json.loads(subprocess.run(
        [RECONCILER, "inspect", "--json", str(image)], capture_output=True, text=True, check=True,
    ).stdout)["disks"][0]["partitions"]]
    env = {"PATH": "/usr/bin:/bin", "TERM": "xterm"}  # no COLUMNS: rich would otherwise take that width
    done = subprocess.run([RECONCILER, "inspect", str(image)], stdout=subprocess.PIPE, text=True, env=env,
                          check=True)
    lines = done.stdout.splitlines()
    assert any(str(image) in line for line in lines), done.stdout
    # the MSR partition has no file system serial: its GPT GUID is shown, whole
    assert any(guid in line for line in lines for guid in guids), done.stdout
    assert max(len(line) for line in lines) > 80
