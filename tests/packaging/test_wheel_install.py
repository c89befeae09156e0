"""The product as a user installs it: the built wheel in a fresh venv, run from outside the source tree
so nothing of the checkout is importable. Catches files the package reads but the wheel does not ship."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.cli.main import COMMANDS
from tests.integration.backup_world import World, make_world

SOURCE = Path(__file__).resolve().parents[2]
# subcommand groups whose subcommands get their own --help check
LAB_COMMANDS = ("up", "down", "status", "write", "fault", "export")

pytestmark = [pytest.mark.xdist_group("test_wheel_install")]


class Installed:
    def __init__(self, venv: Path, cwd: Path) -> None:
        self.venv = venv
        self.cwd = cwd  # outside the checkout: `import reconciler` must find the wheel's copy

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.venv / "bin" / "reconciler"), *args], cwd=self.cwd, capture_output=True,
                              text=True, env=env or _clean_env(), timeout=300)


def _clean_env() -> dict[str, str]:
    # PYTHONPATH from the test run would make the checkout importable and hide a missing file
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("wheel")
    # build isolation on purpose: the venv's setuptools may predate the >=77 that pyproject.toml needs; pip
    # takes the build backend from its configured (local, offline here) wheel sources, never the project's deps
    # from a copy: setuptools builds in ./build, which two test processes building at once would share
    source = root / "source"
    shutil.copytree(SOURCE, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", ".lab", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "vcsim-lab"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(root / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = (root / "dist").glob("reconciler-*.whl")
    venv = root / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    # the dependencies (click, rich, pyvmomi…) come from the project venv, appended after the wheel's own
    # site-packages; a plain path line in a .pth does not run that venv's editable-install hook
    python = str(venv / "bin" / "python")
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "zz-project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    cwd = root / "elsewhere"
    cwd.mkdir()
    yield Installed(venv, cwd)


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Installed) -> None:
    python = str(installed.venv / "bin" / "python")
    done = subprocess.run([python, "-c", "import reconciler; print(reconciler.__file__)"],
                          cwd=installed.cwd, capture_output=True, text=True, env=_clean_env(), check=True)
    assert done.stdout.startswith(str(installed.venv)), done.stdout


def test_validate_of_the_examples_works_from_a_wheel_install(installed: Installed) -> None:
    done = installed.run("validate", str(SOURCE / "examples"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "internal error" not in done.stdout + done.stderr


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help_from_a_wheel_install(installed: Installed, command: str) -> None:
    done = installed.run(command, "--help")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Usage:" in done.stdout


@pytest.mark.parametrize("command", LAB_COMMANDS)
def test_every_lab_command_has_help_from_a_wheel_install(installed: Installed, command: str) -> None:
    done = installed.run("lab", command, "--help")
    assert done.returncode == 0, done.stdout + done.stderr


def test_lab_up_from_a_wheel_install_says_it_needs_a_source_checkout(installed: Installed) -> None:
    done = installed.run("lab", "up", "--state-dir", str(installed.cwd / "lab"), "--auto-ports")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "source checkout" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.lab
def test_plan_against_the_lab_works_from_a_wheel_install(installed: Installed, lab, tmp_path: Path) -> None:
    world: World = make_world(lab, tmp_path, "wheel-plan", ("web-01",))
    done = installed.run("plan", str(world.policy_dir), "--state-dir", str(world.state_dir), env={
        key: value for key, value in world.env().items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "web-01" in done.stdout
