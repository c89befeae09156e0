"""`reconciler lab up|status|write|fault|down` as a newcomer runs them: separate processes sharing only
the state directory. After `down`, nothing the lab started is left running or on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.lab.zfs import TEST_POOL_PREFIX, daemon_running, imported_pools

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("lab-cli")]


def reconciler(*args: str, check: bool = True, path: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=os.environ | {"COLUMNS": "250", "PATH": path or os.environ["PATH"]},
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"reconciler {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line mentions `text` (the state dir: every lab process has it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and alive(int(entry.name)):
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(cmdline)
    return found


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A lab started by `reconciler lab up` (OS-chosen ports, a test pool name), taken down at the end."""
    state_dir = tmp_path_factory.mktemp("cli-lab")
    pool = f"{TEST_POOL_PREFIX}{os.getpid()}-cli"
    reconciler("lab", "up", "--state-dir", str(state_dir), "--auto-ports", "--pool", pool)
    try:
        yield state_dir, pool
    finally:
        reconciler("lab", "down", "--state-dir", str(state_dir), check=False)


def status_json(state_dir: Path) -> dict[str, Any]:
    return json.loads(reconciler("lab", "status", "--state-dir", str(state_dir), "--json").stdout)


def test_status_shows_urls_thumbprints_pool_and_exports(lab_dir: tuple[Path, str]) -> None:
    state_dir, pool = lab_dir
    status = status_json(state_dir)
    assert status["up"] and status["healthy"]
    sites = status["state"]["sites"]
    assert set(sites) == {"vcenter", "esxi"}
    for site in sites.values():
        assert site["sdk"].startswith("https://127.0.0.1:") and site["sdk"].endswith("/sdk")
        assert len(site["thumbprint_sha256"].split(":")) == 32
    assert status["state"]["pool"]["parent_dataset"] == f"{pool}/agentless"
    exports = status["state"]["exports"]
    assert {e["name"] for e in exports} >= {"web-01-2000", "db-01-2000", "db-01-2001"}
    assert all(e["uri"].startswith("nbd+unix:///?socket=") for e in exports)

    datasets = subprocess.run(["zfs", "list", "-H", "-o", "name", "-r", pool], capture_output=True, text=True)
    assert f"{pool}/agentless" in datasets.stdout.split()

    human = reconciler("lab", "status", "--state-dir", str(state_dir)).stdout
    assert sites["vcenter"]["sdk"] in human
    assert f"{pool}/agentless" in human
    assert "web-01-2000" in human


def test_status_piped_without_columns_keeps_every_url_and_thumbprint_whole(lab_dir: tuple[Path, str]) -> None:
    state_dir, _ = lab_dir
    status = status_json(state_dir)
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}  # a pipe has no width
    human = subprocess.run([sys.executable, "-m", "reconciler", "lab", "status", "--state-dir", str(state_dir)],
                           stdout=subprocess.PIPE, text=True, env=env, timeout=180, check=True).stdout
    lines = human.splitlines()
    wanted = [s[key] for s in status["state"]["sites"].values() for key in ("sdk", "thumbprint_sha256")]
    wanted += [e["uri"] for e in status["state"]["exports"]]
    for text in wanted:
        assert any(text in line for line in lines), f"{text} is cut in:\n{human}"


def test_env_file_and_pinned_connections_are_written_for_tools_and_policies(lab_dir: tuple[Path, str]) -> None:
    state_dir, _ = lab_dir
    env = (state_dir / "env").read_text()
    assert "export RECONCILER_LAB_PASSWORD=pass" in env
    assert "export RECONCILER_LAB_VCENTER=https://127.0.0.1:" in env
    connections = (state_dir / "connections.yaml").read_text()
    assert "name: lab-vcenter" in connections and "name: lab-esxi" in connections
    assert "thumbprint:" in connections


def test_up_refuses_when_the_lab_is_already_up(lab_dir: tuple[Path, str]) -> None:
    state_dir, pool = lab_dir
    result = reconciler("lab", "up", "--state-dir", str(state_dir), "--auto-ports", "--pool", pool, check=False)
    assert result.returncode == 1
    assert "already up" in result.stderr
    assert_no_traceback(result)


def test_write_changes_the_vm_disk(lab_dir: tuple[Path, str]) -> None:
    state_dir, _ = lab_dir
    payload = state_dir / "payload.bin"
    payload.write_bytes(b"written by the lab CLI")
    result = reconciler("lab", "write", "--state-dir", str(state_dir), "web-01", "2000",
                        "--offset", "1048576", "--file", str(payload))
    assert "wrote 22 bytes" in result.stdout
    disk = status_json(state_dir)["state"]["sites"]["vcenter"]["vms"]
    disk_file = next(d["file"] for vm in disk if vm["name"] == "web-01" for d in vm["disks"])
    with open(disk_file, "rb") as handle:
        handle.seek(1048576)
        assert handle.read(22) == b"written by the lab CLI"
    reconciler("lab", "write", "--state-dir", str(state_dir), "web-01", "2000",
               "--offset", "0", "--length", "4096", "--random", "--seed", "7")


def test_write_refuses_unclear_requests_without_a_traceback(lab_dir: tuple[Path, str]) -> None:
    state_dir, _ = lab_dir
    for args in (["--offset", "0"], ["--offset", "0", "--random"], ["--offset", "0", "--length", "1"]):
        result = reconciler("lab", "write", "--state-dir", str(state_dir), "web-01", "2000", *args, check=False)
        assert result.returncode == 2, result.stderr
        assert_no_traceback(result)
    result = reconciler("lab", "write", "--state-dir", str(state_dir), "no-such-vm", "2000",
                        "--offset", "0", "--length", "1", "--zero", check=False)
    assert result.returncode == 1
    assert_no_traceback(result)


def test_fault_switches_on_lists_and_off(lab_dir: tuple[Path, str]) -> None:
    state_dir, _ = lab_dir
    where = ["--state-dir", str(state_dir)]
    reconciler("lab", "fault", *where, "snapshot-create-fails", "--vm", "web-01", "--count", "1")
    listed = json.loads(reconciler("lab", "fault", *where, "--list").stdout)
    assert any(f["name"] == "snapshot-create-fails" and f.get("vm") == "web-01" for f in listed)
    reconciler("lab", "fault", *where, "snapshot-create-fails", "--off")
    assert json.loads(reconciler("lab", "fault", *where, "--list").stdout) in ([], None)
    unknown = reconciler("lab", "fault", *where, "power-outage", check=False)
    assert unknown.returncode == 2 and "unknown fault" in unknown.stderr
    assert_no_traceback(unknown)


def test_export_serves_one_more_disk_and_refuses_a_duplicate(lab_dir: tuple[Path, str]) -> None:
    state_dir, _ = lab_dir
    where = ["--state-dir", str(state_dir)]
    uri = reconciler("lab", "export", *where, "--site", "esxi", "file-01", "2000", "--via", "file").stdout.strip()
    assert uri.startswith("nbd+unix:///?socket=") and "esxi-file-01-2000" in uri
    exports = {e["name"]: e for e in status_json(state_dir)["state"]["exports"]}
    assert exports["esxi-file-01-2000"]["via"] == "file"
    again = reconciler("lab", "export", *where, "web-01", "2000", check=False)
    assert again.returncode == 1 and "already exported" in again.stderr
    assert_no_traceback(again)


def test_down_leaves_no_process_no_pool_and_no_datastore_behind(lab_dir: tuple[Path, str]) -> None:
    state_dir, pool = lab_dir
    pids = [p["pid"] for p in status_json(state_dir)["processes"] if p["pid"]]
    assert len(pids) >= 4  # two vcsims and the exports

    result = reconciler("lab", "down", "--state-dir", str(state_dir))

    assert "stopped" in result.stdout
    assert not [pid for pid in pids if alive(pid)]
    assert not processes_mentioning(str(state_dir))
    assert not daemon_running() or pool not in imported_pools()
    assert not (state_dir / "vcenter").exists() and not (state_dir / "esxi").exists()
    assert not list(state_dir.rglob("*.vmdk"))
    assert not (state_dir / "lab.json").exists()
    again = reconciler("lab", "status", "--state-dir", str(state_dir), check=False)
    assert again.returncode == 1 and "not up" in again.stdout


def test_commands_on_a_lab_that_is_not_up_say_so(tmp_path: Path) -> None:
    where = ["--state-dir", str(tmp_path)]
    for args in (["write", "web-01", "2000", "--offset", "0", "--length", "1", "--zero"], ["fault", "--list"]):
        result = reconciler("lab", args[0], *where, *args[1:], check=False)
        assert result.returncode == 1
        assert "not up" in result.stderr and "reconciler lab up" in result.stderr
        assert_no_traceback(result)
    assert "not up" in reconciler("lab", "down", *where).stdout


def test_up_without_zfs_fuse_names_the_debian_package_to_install(tmp_path: Path) -> None:
    # zfs-fuse lives in /usr/sbin: a PATH without it is a machine without the package
    result = reconciler("lab", "up", "--state-dir", str(tmp_path), "--auto-ports", check=False,
                        path="/usr/local/bin:/usr/bin:/bin")
    assert result.returncode == 1
    assert "zfs-fuse (Debian package zfs-fuse)" in result.stderr and "make setup" in result.stderr
    assert_no_traceback(result)
    assert not (tmp_path / "lab.json").exists()
