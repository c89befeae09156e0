"""`reconciler fmt`: canonical layout in place, --check for pre-commit, --diff, templates left alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from reconciler.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
MESSY = """\
# yaml-language-server: $schema=../schemas/reconciler-v1.schema.json
apiVersion: reconciler/v1
kind: Schedule
metadata:
    name: office   # the name others refer to
spec:
    timezone: "Europe/Berlin"
    rules:
    -   days: [mon-fri]
        window: 08:00-18:00
        every: 1h
    # otherwise
    -   every: 4h
"""
CANONICAL = """\
# yaml-language-server: $schema=../schemas/reconciler-v1.schema.json
apiVersion: reconciler/v1
kind: Schedule
metadata:
  name: office     # the name others refer to
spec:
  timezone: "Europe/Berlin"
  rules:
    - days: [mon-fri]
      window: 08:00-18:00
      every: 1h
    # otherwise
    - every: 4h
"""


def run(*args: str):
    return CliRunner().invoke(cli, ["fmt", *args], catch_exceptions=False)


def test_fmt_rewrites_a_file_in_canonical_form_keeping_comments(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(MESSY)
    result = run(str(tmp_path))
    assert result.exit_code == 0
    assert result.stdout == f"reformatted {path}\n"
    assert path.read_text() == CANONICAL


def test_fmt_of_a_canonical_file_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(CANONICAL)
    before = path.stat().st_mtime_ns
    result = run(str(path))
    assert (result.exit_code, result.stdout) == (0, "")
    assert path.stat().st_mtime_ns == before


def test_check_lists_files_that_would_change_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(CANONICAL)
    (tmp_path / "b.yaml").write_text(MESSY)
    result = run("--check", str(tmp_path))
    assert result.exit_code == 1
    assert result.stdout == f"would reformat {tmp_path / 'b.yaml'}\n"
    assert (tmp_path / "b.yaml").read_text() == MESSY


def test_diff_shows_the_change_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(MESSY)
    result = run("--diff", str(path))
    assert result.exit_code == 0
    assert f"--- {path}\n+++ {path}\n" in result.stdout
    assert "-    name: office   # the name others refer to\n+  name: office     # the name others refer to\n" in (
        result.stdout
    )  # ruamel keeps a comment's column
    assert path.read_text() == MESSY


def test_templates_are_not_reformatted(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml.j2"
    path.write_text("a:    {{ x }}\n")
    result = run("--check", str(tmp_path))
    assert result.exit_code == 0
    assert result.stderr == f"{path}: template, not reformatted\n"
    assert path.read_text() == "a:    {{ x }}\n"


def test_broken_yaml_is_reported_at_its_place_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("a: 1\nb:\n\t- x\n")
    result = run(str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{path}:3:1: error: tab character in indentation")
    assert path.read_text() == "a: 1\nb:\n\t- x\n"


def test_fmt_refuses_unsafe_yaml(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("a: !!python/name:os.system x\n")
    result = run(str(path))
    assert result.exit_code == 1
    assert "tag !!python/name:os.system is not allowed" in result.stderr


def test_fmt_keeps_file_permissions(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(MESSY)
    path.chmod(0o640)
    run(str(path))
    assert path.stat().st_mode & 0o777 == 0o640


def test_the_shipped_policy_files_are_canonical() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "fmt", "--check", "policies", "examples"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_fmt_through_a_symlink_rewrites_the_target_and_keeps_the_link(tmp_path: Path) -> None:
    target = tmp_path / "real.yml"
    target.write_text(MESSY)
    (tmp_path / "link.yaml").symlink_to("real.yml")
    assert run(str(tmp_path / "link.yaml")).exit_code == 0
    assert (tmp_path / "link.yaml").is_symlink()
    assert target.read_text() == CANONICAL
